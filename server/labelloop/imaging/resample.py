"""Nearest-neighbour resampling of a label map from one voxel grid onto another."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["resample_nearest", "world_to_voxel"]


def world_to_voxel(
    affine: npt.NDArray[np.float64], points: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``(N, 3)`` RAS millimetre points to ``(N, 3)`` continuous voxel indices of ``affine``'s grid."""
    homogeneous = np.c_[points, np.ones(len(points))]
    return np.asarray((np.linalg.inv(affine) @ homogeneous.T).T[:, :3], dtype=np.float64)


def _axis_permutation(matrix: npt.NDArray[np.float64], tol: float = 1e-6) -> list[int] | None:
    """If ``matrix`` maps each output axis to exactly one input axis, the input axis of each output axis."""
    order = []
    for col in range(3):
        nonzero = np.flatnonzero(np.abs(matrix[:, col]) > tol)
        if len(nonzero) != 1:
            return None
        order.append(int(nonzero[0]))
    return order if sorted(order) == [0, 1, 2] else None


def resample_nearest(
    source: npt.NDArray[Any],
    source_affine: npt.NDArray[np.float64],
    target_shape: tuple[int, int, int],
    target_affine: npt.NDArray[np.float64],
    fill: int | float = 0,
) -> npt.NDArray[Any]:
    """Sample ``source`` (``(I, J, K)``, any dtype) at the voxel centres of the target grid.

    Both affines map voxel indices to RAS mm. Voxels falling outside ``source`` get ``fill``.
    When the grids are axis-aligned to each other (flips, permutations, scaling, shifts: what
    orientation and spacing normalisation produce) this is exact index arithmetic per axis,
    much faster than a general affine resampling; otherwise ``scipy.ndimage`` is used.
    """
    # target voxel -> source voxel
    mapping = np.linalg.inv(source_affine) @ target_affine
    linear, offset = mapping[:3, :3], mapping[:3, 3]
    order = _axis_permutation(linear)
    if order is not None:
        # target axis t reads source axis order[t]: one index vector per axis, no interpolation
        coords: dict[int, npt.NDArray[np.int64]] = {}
        for t, src_axis in enumerate(order):
            steps = np.arange(target_shape[t], dtype=np.float64)
            exact = linear[src_axis, t] * steps + offset[src_axis]
            coords[src_axis] = np.floor(exact + 0.5).astype(np.int64)  # round half up, as scipy does
        valid = [(coords[a] >= 0) & (coords[a] < source.shape[a]) for a in range(3)]
        clipped = [np.clip(coords[a], 0, source.shape[a] - 1) for a in range(3)]
        picked = np.transpose(source[np.ix_(*clipped)], order)
        inside = np.ix_(*[valid[a] for a in order])
        out = np.full(target_shape, fill, dtype=source.dtype)
        out[inside] = picked[inside]
        return out
    from scipy import ndimage

    return np.asarray(
        ndimage.affine_transform(
            source, linear, offset=offset, output_shape=target_shape, order=0, mode="constant", cval=fill
        )
    )
