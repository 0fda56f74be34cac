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
        return _resample_axis_aligned(source, linear, offset, order, target_shape, fill)
    from scipy import ndimage

    return np.asarray(
        ndimage.affine_transform(
            source, linear, offset=offset, output_shape=target_shape, order=0, mode="constant", cval=fill
        )
    )


def _resample_axis_aligned(
    source: npt.NDArray[Any],
    linear: npt.NDArray[np.float64],
    offset: npt.NDArray[np.float64],
    order: list[int],
    target_shape: tuple[int, int, int],
    fill: int | float,
) -> npt.NDArray[Any]:
    """Target axis ``t`` reads source axis ``order[t]``: one index vector per axis, no interpolation.

    The indices along an axis are monotonic, so the voxels inside the source form one box of the
    target: it is filled by gathers (``np.take``) and a slice assignment, not by boolean masks.
    The result is Fortran-ordered, which is what NIfTI and NRRD writers store.
    """
    index: dict[int, npt.NDArray[np.int64]] = {}
    box: list[slice] = [slice(0, 0)] * 3
    for t, src_axis in enumerate(order):
        steps = np.arange(target_shape[t], dtype=np.float64)
        exact = linear[src_axis, t] * steps + offset[src_axis]
        coords = np.floor(exact + 0.5).astype(np.int64)  # round half up, as scipy does
        inside = np.flatnonzero((coords >= 0) & (coords < source.shape[src_axis]))
        if inside.size == 0:
            return np.full(target_shape, fill, dtype=source.dtype, order="F")
        box[t] = slice(int(inside[0]), int(inside[-1]) + 1)
        index[src_axis] = coords[box[t]]
    # Gather on the axis-reversed view: the result's transpose is then Fortran-contiguous.
    picked = np.transpose(source, (2, 1, 0))
    for rev_axis, src_axis in enumerate((2, 1, 0)):
        picked = np.take(picked, index[src_axis], axis=rev_axis)
    picked = np.transpose(np.transpose(picked, (2, 1, 0)), order)  # target axis order
    if all(b.start == 0 and b.stop == n for b, n in zip(box, target_shape, strict=True)):
        return np.asfortranarray(picked)
    out = np.full(target_shape, fill, dtype=source.dtype, order="F")
    out[box[0], box[1], box[2]] = picked
    return out
