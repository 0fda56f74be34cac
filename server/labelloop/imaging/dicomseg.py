"""Label maps to DICOM SEG and back (highdicom), over a single-frame image series.

A label map here is ``(I, J, K)`` integer values on the grid ``read_dicom_series`` gives the
series: ``label[:, :, k]`` covers the k-th slice along the normal (``sort_dicom_series``), and a
DICOM frame is ``(Rows, Columns) = (J, I)``, i.e. ``label[:, :, k].T``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop import __version__
from labelloop.errors import ImageReadError
from labelloop.imaging.dicom import DicomSeries, functional_group, sort_dicom_series

__all__ = [
    "LABEL_MAP_SEGMENTATION_STORAGE",
    "SEGMENTATION_STORAGE",
    "TYPE1_NEEDED",
    "TYPE2_COPIED",
    "SegAuthor",
    "SegImport",
    "SegSegment",
    "label_to_seg",
    "read_seg",
    "referenced_series",
    "seg_to_label",
]


@dataclass(frozen=True)
class SegAuthor:
    """Who made a segmentation: an annotator, or a model (name and version) they started from."""

    creator: str
    model: str | None = None
    model_version: int | None = None


def _person_name(name: str) -> str:
    """A DICOM PN value from a user name; a plain name becomes one family-name component (``name^``)."""
    cleaned = "".join(c if c.isalnum() or c in " ._-^" else "_" for c in name)[:63]
    if not cleaned.strip("^"):
        return "unknown^"
    return cleaned if "^" in cleaned else f"{cleaned}^"


#: Type 2 attributes of the Patient and General Study modules that highdicom copies from the source
#: into the SEG. Anonymised and research series often lack them; the standard lets a Type 2
#: attribute be present with no value, so a missing one is written empty.
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
#: Type 1 attributes a SEG cannot be written without (it must reference the source and share its
#: frame of reference); a source that lacks one is refused, naming it.
TYPE1_NEEDED = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "FrameOfReferenceUID",
)

_PIXEL_DATA = 0x7FE00010


def _series_uid(datasets: Sequence[Any]) -> str:
    return str(getattr(datasets[0], "SeriesInstanceUID", "") or "?") if datasets else "?"


def _writable(series: DicomSeries) -> list[Any]:
    """The series' instances as highdicom's source images: copies without pixel data in which a
    missing Type 2 attribute is present and empty.

    Raises:
        ImageReadError: an instance lacks a Type 1 attribute (``TYPE1_NEEDED``), or the series is
            made of several multi-frame instances.
    """
    from pydicom import Dataset
    from pydicom.valuerep import format_number_as_ds

    instances = series.slices
    if series.multiframe and len(instances) > 1:
        raise ImageReadError(
            f"A DICOM SEG cannot be written over series {_series_uid(instances)}: it is made of "
            f"{len(instances)} multi-frame instances; labelloop writes SEGs over single-frame series "
            "or one multi-frame instance"
        )
    thickness = float(np.linalg.norm(series.geometry.affine[:3, 2]))
    copies = []
    for ds in instances:
        for keyword in TYPE1_NEEDED:
            if not str(getattr(ds, keyword, "") or "").strip():
                raise ImageReadError(
                    f"A DICOM SEG cannot be written over series {_series_uid(instances)}: instance "
                    f"{getattr(ds, 'SOPInstanceUID', '?')} has no {keyword}, which a SEG must copy"
                )
        copy = Dataset()
        for element in ds:
            if element.tag != _PIXEL_DATA:
                copy.add(element)
        for keyword in TYPE2_COPIED:
            if keyword not in copy:
                setattr(copy, keyword, "")
        if "Modality" not in copy:
            copy.Modality = "OT"
        if not series.multiframe and not str(copy.get("SliceThickness", "") or "").strip():
            # Type 2 in the Image Plane module, but highdicom's pixel measures need a value: the
            # distance between the slices is the best one the series gives.
            copy.SliceThickness = format_number_as_ds(thickness)
        copies.append(copy)
    return copies


def label_to_seg(
    label: npt.NDArray[Any],
    source: Sequence[Any],
    names: Mapping[int, str],
    author: SegAuthor,
    *,
    series_description: str = "labelloop segmentation",
    series_number: int = 100,
) -> Any:
    """A BINARY DICOM SEG of ``label`` over ``source`` (the series' datasets; pixel data not needed).

    One segment per nonzero value present, numbered 1.. in increasing value order, labelled
    ``names[value]`` (``"label <value>"`` when unnamed). With ``author.model`` the segments are
    ``SEMIAUTOMATIC`` with the model as algorithm; otherwise ``MANUAL``. The annotator is the
    content creator. ``seg_to_label(seg, source, names)`` gives ``label`` back exactly.

    Raises:
        ImageReadError: ``label`` does not match the series' grid, or is empty.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    series = sort_dicom_series(source, need_pixels=False)
    ordered = _writable(series)
    rows, cols = int(ordered[0].Rows), int(ordered[0].Columns)
    if label.shape != (cols, rows, len(series.frames)):
        expected = (cols, rows, len(series.frames))
        raise ImageReadError(f"The label's shape {label.shape} does not match the DICOM series {expected}")
    values = [int(v) for v in np.unique(label) if v != 0]
    if not values:
        raise ImageReadError("The label is empty; a DICOM SEG needs at least one segment")
    segment_of = np.zeros(max(values) + 1, dtype=np.uint16)
    for number, value in enumerate(values, start=1):
        segment_of[value] = number
    frames = segment_of[np.asarray(label).transpose(2, 1, 0)]  # (planes, rows, cols) segment numbers
    if series.multiframe:  # highdicom takes a multi-frame source's frames in their stored order
        stored = np.empty_like(frames)
        for k, frame in enumerate(series.frames):
            stored[(frame.frame or 1) - 1] = frames[k]
        frames = stored
    algorithm = None
    algorithm_type = hd.seg.SegmentAlgorithmTypeValues.MANUAL
    if author.model:
        algorithm_type = hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
        algorithm = hd.AlgorithmIdentificationSequence(
            name=author.model,
            version=str(author.model_version or "unknown"),
            family=codes.cid7162.ArtificialIntelligence,
            source="labelloop",
        )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=names.get(value, f"label {value}")[:64],
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=algorithm_type,
            algorithm_identification=algorithm,
        )
        for number, value in enumerate(values, start=1)
    ]
    try:
        return hd.seg.Segmentation(
            source_images=ordered,
            pixel_array=frames.astype(np.uint8 if len(values) < 256 else np.uint16),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="labelloop",
            manufacturer_model_name="labelloop",
            software_versions=__version__,
            device_serial_number="0",
            content_creator_name=_person_name(author.creator),
            content_label="LABEL",
            content_description=series_description[:64],
            series_description=series_description,
        )
    except (ValueError, AttributeError) as exc:  # highdicom's checks of the source: they name what is wrong
        raise ImageReadError(
            f"A DICOM SEG cannot be written over series {_series_uid(ordered)}: {exc}"
        ) from exc


SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"

#: A segment label that names no structure: "Segment 1", "label 3", "#2", "" (OHIF's and
#: labelloop's defaults); its number is the label value.
_GENERIC = re.compile(r"^(?:segment|seg|label|region|roi)?\s*#?\s*(\d*)$")


def _normal_name(name: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", name).casefold().split())


@dataclass(frozen=True)
class SegSegment:
    """How one segment of a SEG maps to the app's labels.

    ``matched_by``: ``"name"`` (its SegmentLabel is a label's name), ``"code"`` (its
    SegmentedPropertyType's CodeMeaning is), ``"number"`` (a generic label such as "Segment 2"
    whose number is a label value), or ``"none"`` (skipped: ``value`` is 0).
    """

    number: int
    label: str
    value: int
    matched_by: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "label": self.label,
            "value": self.value,
            "matched_by": self.matched_by,
        }


@dataclass(frozen=True)
class SegImport:
    """A SEG read onto a series' grid.

    Attributes:
        label: ``(I, J, K)`` uint8 label map on the grid ``read_dicom_series(source)`` gives.
        segments: how each segment mapped to a label value (``SegSegment``).
        frames: how many SEG frames were read.
    """

    label: npt.NDArray[np.uint8]
    segments: list[SegSegment]
    frames: int

    @property
    def skipped(self) -> list[SegSegment]:
        return [s for s in self.segments if s.value == 0]


def _segment_values(seg: Any, names: Mapping[int, str] | None) -> list[SegSegment]:
    """Map each segment to a label value: by name, by property code meaning, then by a generic
    label's number (see ``SegSegment``); with no ``names`` every segment keeps its number."""
    by_name = {_normal_name(name): value for value, name in (names or {}).items()}
    out = []
    for item in getattr(seg, "SegmentSequence", None) or []:
        number = int(item.SegmentNumber)
        label = str(getattr(item, "SegmentLabel", "") or "")
        if not names:
            out.append(SegSegment(number, label, number, "number"))
            continue
        if _normal_name(label) in by_name:
            out.append(SegSegment(number, label, by_name[_normal_name(label)], "name"))
            continue
        codes = getattr(item, "SegmentedPropertyTypeCodeSequence", None) or []
        meaning = _normal_name(str(getattr(codes[0], "CodeMeaning", "") or "")) if codes else ""
        if meaning and meaning in by_name:
            out.append(SegSegment(number, label, by_name[meaning], "code"))
            continue
        generic = _GENERIC.fullmatch(_normal_name(label))
        if generic is not None:
            value = int(generic.group(1)) if generic.group(1) else number
            if value in names:
                out.append(SegSegment(number, label, value, "number"))
                continue
        out.append(SegSegment(number, label, 0, "none"))
    return out


def _referenced(seg: Any, index: int) -> list[tuple[str, int | None]]:
    """``(SOPInstanceUID, frame number)`` of the source planes SEG frame ``index`` derives from."""
    from pydicom.multival import MultiValue

    groups = seg.get("PerFrameFunctionalGroupsSequence") or []
    if index >= len(groups):
        return []
    out: list[tuple[str, int | None]] = []
    for derivation in groups[index].get("DerivationImageSequence") or []:
        for source in derivation.get("SourceImageSequence") or []:
            uid = str(getattr(source, "ReferencedSOPInstanceUID", "") or "")
            numbers = source.get("ReferencedFrameNumber")
            if numbers is None:
                out.append((uid, None))
            else:
                out += [(uid, int(n)) for n in (numbers if isinstance(numbers, MultiValue) else [numbers])]
    return out


class _Locator:
    """Finds the plane ``k`` of the source series a SEG frame lies on: by the source instance
    (and frame) it references, else by its position (same frame of reference and orientation)."""

    def __init__(self, series: DicomSeries, seg: Any) -> None:
        self.series = series
        self.by_ref: dict[tuple[str, int | None], int] = {}
        for k, frame in enumerate(series.frames):
            self.by_ref[(frame.sop_instance_uid, frame.frame)] = k
            if frame.frame is None:
                self.by_ref[(frame.sop_instance_uid, 1)] = k
        first = series.frames[0]
        self.orientation = first.orientation
        self.normal = np.cross(first.orientation[:3], first.orientation[3:])
        self.positions = np.asarray([f.position for f in series.frames])
        self.depths = self.positions @ self.normal
        steps = np.abs(np.diff(self.depths))
        self.tolerance = 0.1 * float(np.median(steps)) if steps.size else 0.01
        self.pixel = min(first.pixel_spacing)
        source_for = str(getattr(first.dataset, "FrameOfReferenceUID", "") or "")
        seg_for = str(getattr(seg, "FrameOfReferenceUID", "") or "")
        self.same_frame_of_reference = not source_for or not seg_for or source_for == seg_for

    def locate(self, seg: Any, index: int) -> int:
        for ref in _referenced(seg, index):
            if ref in self.by_ref:
                return self.by_ref[ref]
            if ref[1] is None and (ref[0], 1) in self.by_ref:
                return self.by_ref[(ref[0], 1)]
        plane = functional_group(seg, index, "PlanePositionSequence")
        position = getattr(plane, "ImagePositionPatient", None) if plane is not None else None
        if position is None or not self.same_frame_of_reference:
            raise ImageReadError(
                f"Frame {index + 1} of the DICOM SEG references no plane of the series and has no "
                "position in its frame of reference"
            )
        orientation = functional_group(seg, index, "PlaneOrientationSequence")
        if orientation is not None and getattr(orientation, "ImageOrientationPatient", None) is not None:
            values = np.asarray([float(v) for v in orientation.ImageOrientationPatient])
            if values.shape != (6,) or not np.allclose(values, self.orientation, atol=1e-3):
                raise ImageReadError("The DICOM SEG's planes are not oriented as the series' slices")
        point = np.asarray([float(v) for v in position])
        k = int(np.argmin(np.abs(self.depths - point @ self.normal)))
        offset = point - self.positions[k]
        in_plane = offset - (offset @ self.normal) * self.normal
        if (
            abs(float(offset @ self.normal)) > self.tolerance
            or float(np.linalg.norm(in_plane)) > 0.5 * self.pixel
        ):
            raise ImageReadError(
                f"Frame {index + 1} of the DICOM SEG lies at {[round(float(v), 2) for v in point]} mm, "
                "on no slice of the series"
            )
        return k


def read_seg(seg: Any, source: Sequence[Any], names: Mapping[int, str] | None = None) -> SegImport:
    """A DICOM SEG, as any tool writes it, as a label map on the grid of ``source``.

    Reads the Segmentation (BINARY, FRACTIONAL: a voxel is set at half the maximum fractional
    value or more) and the Label Map Segmentation classes, any transfer syntax pydicom decodes, in
    any segment and frame order, with frames only where a segment is present. Each frame is put
    on its source plane by the instance (and frame) its derivation references, else by its
    position in the series' frame of reference (OHIF writes no FrameContentSequence, and
    sometimes no SpatialLocationsPreserved). Segments map to label values by ``_segment_values``;
    a segment that maps to none is left out and listed. Sizes are checked from the header before
    the pixels are decoded: the SEG's planes must be the series' and it may hold at most one
    frame per plane and segment.

    Raises:
        ImageReadError: not a SEG, frames that fit no plane of the series, overlapping segments
            (two label values for one voxel), or pixel data that cannot be decoded.
    """
    sop_class = str(getattr(seg, "SOPClassUID", "") or "")
    if sop_class not in (SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE):
        raise ImageReadError(f"The instance is not a DICOM SEG (SOP class {sop_class or 'missing'})")
    labelmap = sop_class == LABEL_MAP_SEGMENTATION_STORAGE or (
        str(getattr(seg, "SegmentationType", "")).upper() == "LABELMAP"
    )
    fractional = str(getattr(seg, "SegmentationType", "")).upper() == "FRACTIONAL"
    series = sort_dicom_series(source, need_pixels=False)
    rows, cols = int(series.slices[0].Rows), int(series.slices[0].Columns)
    segments = _segment_values(seg, names)
    try:
        seg_rows, seg_cols = int(seg.Rows), int(seg.Columns)
        count = int(getattr(seg, "NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageReadError(f"The DICOM SEG has no usable Rows, Columns or NumberOfFrames: {exc}") from exc
    if (seg_rows, seg_cols) != (rows, cols):
        raise ImageReadError(
            f"The DICOM SEG's frames are {seg_rows}x{seg_cols} (rows x columns); the series' slices are "
            f"{rows}x{cols}"
        )
    if count > len(series.frames) * max(len(segments), 1):
        raise ImageReadError(
            f"The DICOM SEG has {count} frames, more than one per slice and segment "
            f"({len(series.frames)} slices, {len(segments)} segments)"
        )
    locator = _Locator(series, seg)
    targets = [locator.locate(seg, i) for i in range(count)]
    value_of = {s.number: s.value for s in segments}
    try:
        pixels = np.asarray(seg.pixel_array)
    except Exception as exc:
        raise ImageReadError(f"The DICOM SEG's pixel data cannot be decoded: {exc}") from exc
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    label = np.zeros((len(series.frames), rows, cols), dtype=np.uint8)  # (K, rows, cols) while filling
    maximum = float(getattr(seg, "MaximumFractionalValue", 255) or 255)
    for index, k in enumerate(targets):
        frame = pixels[index]
        if labelmap:
            lut = np.zeros(max(int(frame.max()), max(value_of, default=0)) + 1, dtype=np.uint8)
            for number, value in value_of.items():
                lut[number] = value
            values = lut[frame.astype(np.int64)]
            set_ = values > 0
        else:
            item = functional_group(seg, index, "SegmentIdentificationSequence")
            if item is None:
                raise ImageReadError(f"Frame {index + 1} of the DICOM SEG names no segment")
            value = value_of.get(int(item.ReferencedSegmentNumber), 0)
            set_ = frame.astype(np.float64) * 2 >= maximum if fractional else frame > 0
            if not value:
                continue
            values = np.where(set_, value, 0).astype(np.uint8)
        plane = label[k]
        clash = set_ & (plane > 0) & (plane != values)
        if clash.any():
            raise ImageReadError(
                f"Segments of the DICOM SEG overlap in {int(clash.sum())} voxels of slice {k}; "
                "a label map holds one label per voxel"
            )
        plane[set_] = values[set_]
    return SegImport(label=np.ascontiguousarray(label.transpose(2, 1, 0)), segments=segments, frames=count)


def seg_to_label(
    seg: Any, source: Sequence[Any], names: Mapping[int, str] | None = None
) -> npt.NDArray[np.uint8]:
    """The ``(I, J, K)`` uint8 label map of ``seg`` on the grid of ``source`` (``read_seg``)."""
    return read_seg(seg, source, names).label


def referenced_series(seg: Any) -> tuple[str, str] | None:
    """``(StudyInstanceUID, SeriesInstanceUID)`` of the image series a SEG segments, if it says."""
    study = str(getattr(seg, "StudyInstanceUID", "") or "")
    for item in getattr(seg, "ReferencedSeriesSequence", []) or []:
        series = str(getattr(item, "SeriesInstanceUID", "") or "")
        if series:
            return study, series
    return None
