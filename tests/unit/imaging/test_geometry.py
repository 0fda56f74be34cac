"""Unit tests of labelloop.imaging.geometry: whether a label lies on its image's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labelloop.errors import GeometryMismatchError
from labelloop.imaging import Geometry, check_same_grid, read_geometry, write_volume
from tests.support.imaging import GRID_AFFINE, GRID_SHAPE
from tests.support.imaging import grid as _grid
from tests.support.imaging import random_array as _random_array
from tests.support.imaging import rotation as _rotation

# ------------------------------------------------------------------ check_same_grid


def _scaled(factors: tuple[float, float, float]) -> np.ndarray:
    affine = GRID_AFFINE.copy()
    affine[:3, :3] = affine[:3, :3] * np.asarray(factors)
    return affine


def _rotated(angle: float) -> np.ndarray:
    affine = GRID_AFFINE.copy()
    affine[:3, :3] = _rotation(0.0, 0.0, angle) @ affine[:3, :3]
    return affine


def _shifted(mm: float) -> np.ndarray:
    affine = GRID_AFFINE.copy()
    affine[:3, 3] += mm * np.array([0.6, 0.0, 0.8])  # a unit vector
    return affine


def test_same_grid_passes():
    check_same_grid(_grid(), _grid())
    check_same_grid(_grid(), _grid(GRID_AFFINE.copy()))


@pytest.mark.parametrize(
    "label",
    [
        _grid(_scaled((1.0005, 1.0, 0.9995))),  # spacing within rtol 1e-3
        _grid(_rotated(2e-4)),  # direction within atol 1e-3
        _grid(_shifted(0.3)),  # origin within half the smallest voxel (0.4 mm)
    ],
    ids=["spacing", "direction", "origin"],
)
def test_small_differences_pass(label: Geometry):
    check_same_grid(_grid(), label)


@pytest.mark.parametrize(
    ("label", "word"),
    [
        (_grid(shape=(10, 12, 9)), "shape"),
        (_grid(shape=(12, 10, 8)), "shape"),
        (_grid(_scaled((1.0, 1.003, 1.0))), "spacing"),
        (_grid(_rotated(0.01)), "orientation"),
        (_grid(GRID_AFFINE @ np.diag([1.0, -1.0, 1.0, 1.0])), "orientation"),  # j flipped
        (_grid(_shifted(0.5)), "origin"),
        (_grid(_shifted(25.0)), "origin"),
    ],
    ids=["shape-k", "shape-swapped", "spacing", "rotated", "flipped", "origin-half-voxel", "origin-far"],
)
def test_grid_differences_are_refused(label: Geometry, word: str):
    with pytest.raises(GeometryMismatchError, match=word):
        check_same_grid(_grid(), label)


def test_tolerances_can_be_set():
    label = _grid(_shifted(0.5))
    check_same_grid(_grid(), label, origin_tol_voxels=1.0)
    with pytest.raises(GeometryMismatchError, match="spacing"):
        check_same_grid(_grid(), _grid(_scaled((1.0005, 1.0, 1.0))), spacing_rtol=1e-4)


def test_label_in_nrrd_lies_on_its_nifti_image_grid(tmp_path: Path):
    """Across formats (NIfTI RAS, NRRD LPS) the same grid reads back as the same grid."""
    write_volume(tmp_path / "image.nii.gz", _random_array(np.int16, GRID_SHAPE), GRID_AFFINE)
    write_volume(tmp_path / "label.seg.nrrd", _random_array(np.uint8, GRID_SHAPE), GRID_AFFINE)
    image, _ = read_geometry(tmp_path / "image.nii.gz")
    label, fmt = read_geometry(tmp_path / "label.seg.nrrd")
    assert fmt == "nrrd"
    check_same_grid(image, label)
    write_volume(tmp_path / "moved.nrrd", _random_array(np.uint8, GRID_SHAPE), _shifted(2.0))
    with pytest.raises(GeometryMismatchError, match="origin"):
        check_same_grid(image, read_geometry(tmp_path / "moved.nrrd")[0])
