"""Small test volumes written with labelloop's own writer (so geometry conventions match)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labelloop.imaging import write_volume

DEFAULT_AFFINE = np.array(
    [[-0.8, 0.0, 0.0, 100.0], [0.0, -0.8, 0.0, 80.0], [0.0, 0.0, 2.5, -40.0], [0.0, 0.0, 0.0, 1.0]]
)


def make_image(
    path: Path, shape: tuple[int, int, int] = (24, 20, 12), seed: int = 0, affine: np.ndarray = DEFAULT_AFFINE
) -> np.ndarray:
    """Write a random int16 CT-like image; returns its ``(I, J, K)`` array."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1000, size=shape, dtype=np.int16)
    write_volume(path, array, affine)
    return array


def make_label(
    path: Path,
    shape: tuple[int, int, int] = (24, 20, 12),
    seed: int = 0,
    affine: np.ndarray = DEFAULT_AFFINE,
    labels: int = 2,
) -> np.ndarray:
    """Write a random uint8 label map with values ``0..labels``; returns its array."""
    rng = np.random.default_rng(seed + 1000)
    array = rng.integers(0, labels + 1, size=shape, dtype=np.uint8)
    write_volume(path, array, affine)
    return array


def make_phantom(
    path: Path, shape: tuple[int, int, int] = (64, 56, 24), seed: int = 0, affine: np.ndarray = DEFAULT_AFFINE
) -> np.ndarray:
    """Write an int16 CT-like phantom: an ellipsoid "organ" of about 200 HU (half the extent of each
    axis, centred) in tissue of about -100 HU, both with noise of 20 HU, so that no two neighbours
    are alike; returns its ``(I, J, K)`` array."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float64)
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    radii = np.asarray(shape, dtype=np.float64) / 4
    inside = sum(((grid[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0
    array = np.where(inside, 200, -100) + rng.normal(0, 20, size=shape)
    volume = np.round(array).astype(np.int16)
    write_volume(path, volume, affine)
    return volume
