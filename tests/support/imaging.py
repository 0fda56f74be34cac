"""Synthetic arrays, affines and grids shared by the unit tests of ``labelloop.imaging``.

Affines map voxel indices to RAS millimetres, as everywhere in ``labelloop.imaging``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from labelloop.imaging import Geometry


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(
    direction: np.ndarray, spacing: tuple[float, float, float], origin: tuple[float, float, float]
) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


AFFINES = {
    # Rotated about all three axes, anisotropic voxels, right-handed.
    "oblique": make_affine(rotation(0.3, -0.2, 0.5), (0.8, 1.1, 2.5), (-100.5, 42.25, 17.0)),
    # Axis-aligned but with i and k flipped (as radiological NIfTI and many DICOM-derived files).
    "flipped": make_affine(np.diag([-1.0, 1.0, -1.0]), (0.7, 0.9, 3.0), (120.0, -80.0, 60.5)),
    # Oblique and left-handed (negative determinant): exercises the NIfTI qfac and NRRD signs.
    "oblique-flipped": make_affine(
        rotation(-0.4, 0.1, 1.2) @ np.diag([1.0, -1.0, 1.0]), (1.2, 0.6, 2.0), (5, 6, 7)
    ),
}

SHAPE = (5, 6, 7)  # distinct sizes, so any transpose of the axes is noticed


def random_array(dtype: np.dtype[Any] | type, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    return (rng.standard_normal(size=shape) * 1000).astype(dtype)


def world(affine: np.ndarray, ijk: tuple[float, float, float]) -> np.ndarray:
    return (np.asarray(affine) @ np.array([*ijk, 1.0]))[:3]


# Error messages must not give away where an upload was stored, nor what it was called.
SECRET = "secret-upload-7f3a"


def assert_no_path(message: str, path: Path) -> None:
    assert str(path) not in message
    assert str(path.parent) not in message
    assert SECRET not in message


GRID_SHAPE = (10, 12, 8)
GRID_AFFINE = make_affine(rotation(0.2, 0.1, -0.3), (0.8, 0.9, 2.5), (10.0, -20.0, 5.0))


def grid(affine: np.ndarray = GRID_AFFINE, shape: tuple[int, int, int] = GRID_SHAPE) -> Geometry:
    return Geometry(shape=shape, affine=np.array(affine, dtype=np.float64))
