"""Per-label voxel counts along each axis of a label map, in one memory-bounded pass.

A label's *profile* along axis ``a`` counts its voxels in each plane ``a = n``. The three
profiles give, exactly and with integer arithmetic, a label's voxel count, its voxel centroid
and its bounding box, so no per-label boolean mask of the whole image is ever built: the map is
read in slabs of about ``_SLAB_VOXELS`` voxels (whole planes of the axis slowest in memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.errors import InvalidInputError

#: Voxels per slab: bounds the temporaries (a few intp arrays of this size, 32 MiB each).
_SLAB_VOXELS = 1 << 22
#: Elements per ``np.bincount`` call: each call makes an intp copy of its chunk (8 MiB).
_CHUNK = 1 << 20
#: Up to this many values, each is counted with its own slab-sized mask; above, by one bincount.
_MASK_MAX = 12
#: Up to this value, a lookup table maps values to compact bins; above it, a sorted search does.
_LUT_MAX = (1 << 20) - 1


@dataclass(frozen=True)
class Profiles:
    """Voxel counts of each label value present, per plane of each axis.

    Attributes:
        values: ``(L,)`` int64, the label values present (ascending), background included.
        along: three ``(n_a, L)`` int64 arrays: ``along[a][n, l]`` is the number of voxels of
            ``values[l]`` in the plane ``index_a == n``.
    """

    values: npt.NDArray[np.int64]
    along: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]

    def column(self, value: int) -> int | None:
        """The column of ``value`` in ``along``, or ``None`` when no voxel has it."""
        at = int(np.searchsorted(self.values, value))
        return at if at < self.values.size and int(self.values[at]) == value else None


def check_label_map(label: npt.NDArray[Any]) -> None:
    """Raise ``InvalidInputError`` unless ``label`` is a 3D array of whole, non-negative numbers."""
    if label.ndim != 3:
        raise InvalidInputError(f"A label map must be 3D (I, J, K), not of shape {tuple(label.shape)}")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        if not np.issubdtype(label.dtype, np.floating):
            raise InvalidInputError(f"A label map must hold whole numbers, not {label.dtype}")
        for slab in _slabs(label):
            if not np.all(np.isfinite(slab)) or not np.array_equal(slab, np.trunc(slab)):
                raise InvalidInputError("A label map must hold whole numbers; this one has fractions")
    if label.size and not (np.issubdtype(label.dtype, np.unsignedinteger) or label.dtype == np.bool_):
        if float(label.min()) < 0:
            raise InvalidInputError("A label map's values must be non-negative")


def _slab_axis(label: npt.NDArray[Any]) -> int:
    """The axis whose planes lie furthest apart in memory (0 for C order, 2 for Fortran order)."""
    return int(np.argmax([abs(s) for s in label.strides]))


def _slabs(label: npt.NDArray[Any]) -> Iterator[npt.NDArray[Any]]:
    for _, slab in _slabs_with_start(label, _slab_axis(label)):
        yield slab


def _slabs_with_start(label: npt.NDArray[Any], axis: int) -> Iterator[tuple[int, npt.NDArray[Any]]]:
    n = label.shape[axis]
    plane = max(1, label.size // max(n, 1))
    step = max(1, _SLAB_VOXELS // plane)
    for start in range(0, n, step):
        index: list[slice] = [slice(None)] * 3
        index[axis] = slice(start, min(n, start + step))
        yield start, label[tuple(index)]


def bincount(array: npt.NDArray[Any], minlength: int = 0) -> npt.NDArray[np.int64]:
    """``np.bincount(array.ravel())`` in flat chunks, so no full-size intp copy is ever made."""
    flat = np.ravel(array, order="K")
    counts = np.zeros(minlength, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):
        part = np.bincount(flat[start : start + _CHUNK], minlength=minlength)
        if part.size > counts.size:
            part[: counts.size] += counts
            counts = part.astype(np.int64, copy=False)
        else:
            counts[: part.size] += part
    return counts


def candidate_values(label: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """Values ``label`` may hold, ascending: ``0..max`` when that is at most ``_MASK_MAX + 1`` values
    (no counting pass; ``profiles`` drops the absent ones), else exactly those present."""
    if label.size == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(label.max())
    if top <= _MASK_MAX:
        return np.arange(top + 1, dtype=np.int64)
    return present_values(label)


def present_values(label: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """The values ``label`` holds, ascending (one counting pass; ``np.unique`` per slab above 2^20)."""
    if label.size == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(label.max())
    if top <= _LUT_MAX:
        counts = np.zeros(top + 1, dtype=np.int64)
        for slab in _slabs(label):
            counts += bincount(slab.astype(np.intp), minlength=top + 1)
        return np.flatnonzero(counts).astype(np.int64)
    found: set[int] = set()
    for slab in _slabs(label):
        found.update(int(v) for v in np.unique(slab))
    return np.asarray(sorted(found), dtype=np.int64)


def _by_masks(label: npt.NDArray[Any], values: npt.NDArray[np.int64]) -> list[npt.NDArray[np.int64]]:
    """Profiles from one slab-sized mask per value: fastest for a few values."""
    along = [np.zeros((n, values.size), dtype=np.int64) for n in label.shape]
    axis = _slab_axis(label)
    fast = int(np.argmin([abs(s) for s in label.strides]))
    others = tuple(a for a in range(3) if a != fast)
    for start, slab in _slabs_with_start(label, axis):
        for column, value in enumerate(values):
            mask = slab == value
            plane = np.count_nonzero(mask, axis=fast)  # over the two other axes, in their order
            per_axis = {fast: np.count_nonzero(mask, axis=others)}
            per_axis[others[0]] = plane.sum(axis=1)
            per_axis[others[1]] = plane.sum(axis=0)
            for a, counts in per_axis.items():
                offset = start if a == axis else 0
                along[a][offset : offset + counts.size, column] += counts
    return along


def _by_bincount(label: npt.NDArray[Any], values: npt.NDArray[np.int64]) -> list[npt.NDArray[np.int64]]:
    """Profiles from ``np.bincount`` of ``bin + width * plane``: one pass whatever the number of values.

    Each wanted value gets its own bin; every other value goes to one more, dropped at the end.
    """
    width = int(values.size) + 1
    top = int(values[-1])
    lut: npt.NDArray[np.intp] | None = None
    if top <= _LUT_MAX:
        lut = np.full(top + 2, width - 1, dtype=np.intp)
        lut[values] = np.arange(values.size, dtype=np.intp)
    along = [np.zeros((n, width), dtype=np.int64) for n in label.shape]
    axis = _slab_axis(label)
    for start, slab in _slabs_with_start(label, axis):
        if lut is not None:
            wide = slab.astype(np.intp)
            compact = lut[np.minimum(wide, top + 1, out=wide)]
        else:
            at = np.minimum(np.searchsorted(values, slab), values.size - 1)
            compact = np.where(values[at] == slab, at, width - 1).astype(np.intp)
        for a in range(3):
            planes = slab.shape[a]
            index = np.arange(planes, dtype=np.intp).reshape([-1 if d == a else 1 for d in range(3)])
            counts = bincount(compact + index * width, minlength=planes * width).reshape(planes, width)
            offset = start if a == axis else 0
            along[a][offset : offset + planes] += counts
    return [np.ascontiguousarray(p[:, :-1]) for p in along]


def profiles(label: npt.NDArray[Any], values: npt.ArrayLike) -> Profiles:
    """The three per-plane profiles of ``values`` in ``label``, an ``(I, J, K)`` map that passed
    ``check_label_map``; values not wanted are not counted, and wanted values no voxel has are dropped.

    Up to ``_MASK_MAX`` values are counted with one slab-sized mask each (a compare and two
    reductions per voxel and value), more with one ``np.bincount`` pass whatever their number. Peak
    extra memory is a few ``_SLAB_VOXELS``-sized arrays plus ``sum(n_a) * len(values)`` counts.
    """
    wanted = np.unique(np.asarray(values, dtype=np.int64))
    if label.size == 0 or wanted.size == 0:
        nothing = [np.zeros((n, 0), dtype=np.int64) for n in label.shape]
        return Profiles(np.zeros(0, dtype=np.int64), (nothing[0], nothing[1], nothing[2]))
    along = _by_masks(label, wanted) if wanted.size <= _MASK_MAX else _by_bincount(label, wanted)
    present = np.flatnonzero(along[0].sum(axis=0))
    kept = [np.ascontiguousarray(p[:, present]) for p in along]
    return Profiles(wanted[present], (kept[0], kept[1], kept[2]))
