"""Per-label measurements of a label map: volume, connected components, centroid, bounding box.

Conventions (those of ``labelloop.imaging``): the label map is ``(I, J, K)`` in file index
order; its affine is ``(4, 4)``, mapping voxel indices ``(i, j, k, 1)`` to RAS millimetres.
Volumes are in millilitres (1 mL = 1000 mm^3); a voxel's volume is ``|det(affine[:3, :3])|``
mm^3, which holds for oblique and sheared grids as well as for axis-aligned ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from labelloop.errors import InvalidInputError
from labelloop.measurements._profiles import bincount, candidate_values, check_label_map, profiles

__all__ = [
    "BoundingBox",
    "Connectivity",
    "LabelMeasurements",
    "LabelStats",
    "measure_labels",
    "unnamed_label",
    "voxel_volume_mm3",
]

#: Voxel neighbourhood of a connected component: 6 (faces), 18 (faces and edges) or 26 (faces,
#: edges and corners; the usual choice for 3D lesions, and the default).
Connectivity = Literal[6, 18, 26]

_RANK = {6: 1, 18: 2, 26: 3}
_CONNECTIVITIES: dict[int, Connectivity] = {6: 6, 18: 18, 26: 26}
_MM3_PER_ML = 1000.0

Triple = tuple[float, float, float]
IndexTriple = tuple[int, int, int]


def unnamed_label(value: int) -> str:
    """The name of a label value the app does not name: ``label_<value>``, MONAI Label's key."""
    return f"label_{value}"


def voxel_volume_mm3(affine: npt.ArrayLike) -> float:
    """One voxel's volume in mm^3: ``|det(affine[:3, :3])|`` of a ``(4, 4)`` voxel -> RAS mm affine.

    Raises:
        InvalidInputError: not a finite ``(4, 4)`` matrix, or a singular one.
    """
    matrix = _check_affine(affine)
    return float(abs(np.linalg.det(matrix[:3, :3])))


def _check_affine(affine: npt.ArrayLike) -> npt.NDArray[np.float64]:
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise InvalidInputError(f"An affine must be a finite 4x4 matrix, not of shape {matrix.shape}")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise InvalidInputError("The affine is singular: its voxels have no volume")
    return matrix


def _ras(affine: npt.NDArray[np.float64], ijk: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``(N, 3)`` voxel indices (fractional allowed) -> ``(N, 3)`` RAS mm."""
    points = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
    return np.asarray(points @ affine[:3, :3].T + affine[:3, 3], dtype=np.float64)


def _triple(values: Any) -> Triple:
    return (float(values[0]), float(values[1]), float(values[2]))


def _index_triple(values: Any) -> IndexTriple:
    return (int(values[0]), int(values[1]), int(values[2]))


@dataclass(frozen=True)
class BoundingBox:
    """The voxels a label occupies, as an index box and as its extent in RAS.

    Attributes:
        ijk_min: first voxel index along i, j, k (inclusive).
        ijk_max: last voxel index along i, j, k (inclusive), so a single voxel has
            ``ijk_min == ijk_max``.
        ras_min_mm: lowest R, A, S coordinates (mm) of the index box's outer faces (voxel centres
            +- half a voxel): the axis-aligned RAS box enclosing every voxel of the label, which
            on an oblique grid is larger than the voxels' own extent.
        ras_max_mm: highest R, A, S coordinates (mm) of the same box.
    """

    ijk_min: IndexTriple
    ijk_max: IndexTriple
    ras_min_mm: Triple
    ras_max_mm: Triple

    @property
    def shape(self) -> IndexTriple:
        """Voxels of the index box along i, j, k."""
        return _index_triple([hi - lo + 1 for lo, hi in zip(self.ijk_min, self.ijk_max, strict=True)])

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """The index box as slices of the ``(I, J, K)`` label map."""
        lo, hi = self.ijk_min, self.ijk_max
        return (slice(lo[0], hi[0] + 1), slice(lo[1], hi[1] + 1), slice(lo[2], hi[2] + 1))

    @property
    def size_ras_mm(self) -> Triple:
        """Extent of the RAS box along R, A, S in mm."""
        return _triple([hi - lo for lo, hi in zip(self.ras_min_mm, self.ras_max_mm, strict=True)])

    @classmethod
    def from_indices(cls, ijk_min: IndexTriple, ijk_max: IndexTriple, affine: npt.ArrayLike) -> BoundingBox:
        """The box of voxels ``ijk_min`` to ``ijk_max`` (inclusive) on the grid of ``affine``."""
        matrix = _check_affine(affine)
        faces = [(lo - 0.5, hi + 0.5) for lo, hi in zip(ijk_min, ijk_max, strict=True)]
        corners = _ras(matrix, list(itertools.product(*faces)))
        return cls(ijk_min, ijk_max, _triple(corners.min(axis=0)), _triple(corners.max(axis=0)))

    def to_json(self) -> dict[str, list[int] | list[float]]:
        return {
            "ijk_min": list(self.ijk_min),
            "ijk_max": list(self.ijk_max),
            "ras_min_mm": [round(v, 4) for v in self.ras_min_mm],
            "ras_max_mm": [round(v, 4) for v in self.ras_max_mm],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BoundingBox:
        return cls(
            _index_triple(data["ijk_min"]),
            _index_triple(data["ijk_max"]),
            _triple(data["ras_min_mm"]),
            _triple(data["ras_max_mm"]),
        )


@dataclass(frozen=True)
class LabelStats:
    """One label's measurements. An absent label has ``voxels == 0``, ``volume_ml == 0``,
    ``components == 0``, ``largest_component_ml == 0`` and no centroid or box.

    Attributes:
        name: the app's name for the label, or ``label_<value>`` for a value it does not name.
        value: the label's integer value in the map.
        voxels: number of voxels with that value.
        volume_ml: ``voxels`` times the voxel volume, in mL.
        components: connected components (a lesion count), at the measurement's connectivity.
        largest_component_ml: the largest component's volume in mL.
        centroid_ijk: mean voxel index ``(i, j, k)`` of the label's voxels (fractional).
        centroid_ras_mm: the affine applied to ``centroid_ijk``: the centre of mass in RAS mm.
        bbox: the voxels' bounding box.
    """

    name: str
    value: int
    voxels: int
    volume_ml: float
    components: int
    largest_component_ml: float
    centroid_ijk: Triple | None
    centroid_ras_mm: Triple | None
    bbox: BoundingBox | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; floats rounded to 1e-6 mL and 1e-4 mm or voxel."""
        return {
            "name": self.name,
            "value": self.value,
            "voxels": self.voxels,
            "volume_ml": round(self.volume_ml, 6),
            "components": self.components,
            "largest_component_ml": round(self.largest_component_ml, 6),
            "centroid_ijk": None if self.centroid_ijk is None else [round(v, 4) for v in self.centroid_ijk],
            "centroid_ras_mm": None
            if self.centroid_ras_mm is None
            else [round(v, 4) for v in self.centroid_ras_mm],
            "bbox": None if self.bbox is None else self.bbox.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabelStats:
        centroid_ijk, centroid_ras, bbox = (
            data.get("centroid_ijk"),
            data.get("centroid_ras_mm"),
            data.get("bbox"),
        )
        return cls(
            name=str(data["name"]),
            value=int(data["value"]),
            voxels=int(data["voxels"]),
            volume_ml=float(data["volume_ml"]),
            components=int(data["components"]),
            largest_component_ml=float(data["largest_component_ml"]),
            centroid_ijk=None if centroid_ijk is None else _triple(centroid_ijk),
            centroid_ras_mm=None if centroid_ras is None else _triple(centroid_ras),
            bbox=None if bbox is None else BoundingBox.from_json(bbox),
        )


@dataclass(frozen=True)
class LabelMeasurements:
    """The measurements of every label of one label map.

    Attributes:
        labels: one entry per measured label, by ascending value.
        voxel_volume_mm3: the grid's voxel volume, mm^3.
        connectivity: the neighbourhood the components were counted with.
    """

    labels: tuple[LabelStats, ...]
    voxel_volume_mm3: float
    connectivity: Connectivity

    def __getitem__(self, name: str) -> LabelStats:
        for stats in self.labels:
            if stats.name == name:
                return stats
        raise KeyError(name)

    def __iter__(self) -> Iterator[LabelStats]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> list[str]:
        """The measured labels' names, by ascending value."""
        return [stats.name for stats in self.labels]

    def volumes_ml(self) -> dict[str, float]:
        """Label name -> volume in mL (what ``labelloop.measurements.volume_changes`` compares)."""
        return {stats.name: stats.volume_ml for stats in self.labels}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"connectivity", "voxel_volume_mm3", "labels": {name: {...}}}``."""
        return {
            "connectivity": self.connectivity,
            "voxel_volume_mm3": round(self.voxel_volume_mm3, 6),
            "labels": {stats.name: stats.to_json() for stats in self.labels},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabelMeasurements:
        """The inverse of ``to_json`` (up to its rounding), for measurements stored as JSON."""
        connectivity = _CONNECTIVITIES.get(int(data["connectivity"]))
        if connectivity is None:
            raise InvalidInputError(f"Connectivity must be 6, 18 or 26, not {data['connectivity']!r}")
        labels = sorted(
            (LabelStats.from_json(item) for item in data["labels"].values()), key=lambda s: s.value
        )
        return cls(tuple(labels), float(data["voxel_volume_mm3"]), connectivity)


def _named(names: Mapping[str, int], background: int) -> list[tuple[str, int]]:
    values = list(names.values())
    if len(set(values)) != len(values):
        raise InvalidInputError(f"Two label names share a value: {dict(names)}")
    if any(v < 0 for v in values):
        raise InvalidInputError(f"Label values must be non-negative: {dict(names)}")
    return sorted(((n, int(v)) for n, v in names.items() if int(v) != background), key=lambda nv: nv[1])


def _components(
    label: npt.NDArray[Any], value: int, voxels: int, box: BoundingBox, structure: npt.NDArray[np.bool_]
) -> tuple[int, int]:
    """``(components, voxels of the largest)`` of the ``voxels`` of ``value``, labelled within its
    bounding box only, into uint16 (half the memory and time of int32) unless it has more
    components than that holds."""
    box_view = label[box.slices]
    # Axes slowest in memory first, so the mask is C-contiguous and ndimage.label copies nothing
    # (a Fortran-ordered NIfTI array otherwise costs one more mask); the 6-, 18- and 26-
    # neighbourhoods are symmetric under any permutation of the axes, so the counts are unchanged.
    by_stride = np.argsort([-abs(stride) for stride in box_view.strides], kind="stable")
    mask = np.transpose(box_view, by_stride) == value
    components = np.empty(mask.shape, dtype=np.uint16)
    try:
        count = int(ndimage.label(mask, structure=structure, output=components))
    except RuntimeError:  # "insufficient bit-depth": more than 65535 components
        components = np.empty(mask.shape, dtype=np.int32)
        count = int(ndimage.label(mask, structure=structure, output=components))
    del mask
    if count == 1:
        return 1, voxels
    sizes = bincount(components, minlength=count + 1)
    return count, int(sizes[1:].max())


def _foreground_box(label: npt.NDArray[Any], background: int) -> tuple[slice, slice, slice] | None:
    """The index box of ``label``'s voxels other than ``background`` (``None``: there are none)."""
    foreground = label != background
    box = []
    for axis in range(3):
        present = np.flatnonzero(foreground.any(axis=tuple(a for a in range(3) if a != axis)))
        if present.size == 0:
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return (box[0], box[1], box[2])


def _shifted(stats: LabelStats, start: IndexTriple) -> LabelStats:
    """``stats`` measured on a crop starting at voxel ``start``, in the whole map's indices."""
    if stats.bbox is None or stats.centroid_ijk is None:
        return stats

    def shift(ijk: Any) -> Any:
        return type(ijk)(v + s for v, s in zip(ijk, start, strict=True))

    box = replace(stats.bbox, ijk_min=shift(stats.bbox.ijk_min), ijk_max=shift(stats.bbox.ijk_max))
    return replace(stats, centroid_ijk=shift(stats.centroid_ijk), bbox=box)


def measure_labels(
    label: npt.NDArray[Any],
    affine: npt.ArrayLike,
    names: Mapping[str, int] | None = None,
    *,
    connectivity: Connectivity = 26,
    background: int = 0,
) -> LabelMeasurements:
    """Measure every label of a label map.

    Args:
        label: ``(I, J, K)`` label map of whole, non-negative numbers (any integer or bool dtype; a
            float map is accepted when every value is whole, as NIfTI labels sometimes are).
        affine: ``(4, 4)`` voxel index -> RAS mm (``Geometry.affine``).
        names: the app's labels, name -> value: exactly these are measured, present or not (an
            absent one measures 0). ``None``: every value present, named ``label_<value>``.
        connectivity: the neighbourhood of a connected component, 6, 18 or 26 voxels.
        background: the value that is not a label; never measured (a name mapped to it is skipped).

    Returns:
        ``LabelMeasurements`` with one ``LabelStats`` per label, by ascending value.

    Cost: one pass to find the box of the non-background voxels, which alone is measured (on that
    box's own grid, indices shifted back: labels filling a fifth of the image cost a third); then
    one pass over it for voxel counts, centroids and boxes (``np.bincount`` in slabs
    of 4 Mi voxels, never a whole-image mask per label), then per label present a connected-
    component labelling of its bounding box only (``scipy.ndimage.label``), which holds a bool mask
    and a uint16 component map of that box (int32 past 65535 components): about 3 bytes per voxel
    of the largest label's box.

    Raises:
        InvalidInputError: not a 3D map of whole non-negative numbers, a bad affine, two names with
            one value, or a connectivity other than 6, 18 or 26.
    """
    if connectivity not in _RANK:
        raise InvalidInputError(f"Connectivity must be 6, 18 or 26, not {connectivity!r}")
    matrix = _check_affine(affine)
    label = np.asarray(label)
    check_label_map(label)
    crop = _foreground_box(label, background)
    if crop is not None and any(s.stop - s.start < n for s, n in zip(crop, label.shape, strict=True)):
        start = (crop[0].start, crop[1].start, crop[2].start)
        shifted = matrix.copy()
        shifted[:3, 3] = matrix[:3, :3] @ np.asarray(start, dtype=np.float64) + matrix[:3, 3]
        inner = measure_labels(label[crop], shifted, names, connectivity=connectivity, background=background)
        return replace(inner, labels=tuple(_shifted(stats, start) for stats in inner.labels))
    voxel_mm3 = float(abs(np.linalg.det(matrix[:3, :3])))
    if names is None:
        found = profiles(label, [v for v in candidate_values(label).tolist() if v != background])
        selection = [(unnamed_label(int(v)), int(v)) for v in found.values]
    else:
        selection = _named(names, background)
        found = profiles(label, [v for _, v in selection])
    structure = ndimage.generate_binary_structure(3, _RANK[connectivity])
    measured: list[LabelStats] = []
    for name, value in selection:
        column = found.column(value)
        if column is None:
            measured.append(LabelStats(name, value, 0, 0.0, 0, 0.0, None, None, None))
            continue
        counts = [found.along[a][:, column] for a in range(3)]
        voxels = int(counts[0].sum())
        sums = [int(np.arange(c.size, dtype=np.int64) @ c) for c in counts]
        centroid = _triple([s / voxels for s in sums])
        occupied = [np.flatnonzero(c) for c in counts]
        box = BoundingBox.from_indices(
            _index_triple([o[0] for o in occupied]), _index_triple([o[-1] for o in occupied]), matrix
        )
        components, largest = _components(label, value, voxels, box, structure)
        measured.append(
            LabelStats(
                name=name,
                value=value,
                voxels=voxels,
                volume_ml=voxels * voxel_mm3 / _MM3_PER_ML,
                components=components,
                largest_component_ml=largest * voxel_mm3 / _MM3_PER_ML,
                centroid_ijk=centroid,
                centroid_ras_mm=_triple(_ras(matrix, centroid)[0]),
                bbox=box,
            )
        )
    return LabelMeasurements(tuple(measured), voxel_mm3, connectivity)
