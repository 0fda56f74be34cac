"""Label maps to DICOM SEG and back (highdicom), over a single-frame image series.

A label map here is ``(I, J, K)`` integer values on the grid ``read_dicom_series`` gives the
series: ``label[:, :, k]`` covers the k-th slice along the normal (``sort_dicom_series``), and a
DICOM frame is ``(Rows, Columns) = (J, I)``, i.e. ``label[:, :, k].T``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop import __version__
from labelloop.errors import ImageReadError
from labelloop.imaging.dicom import sort_dicom_series

__all__ = ["SegAuthor", "label_to_seg", "seg_to_label", "referenced_series"]


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

    ordered = sort_dicom_series(source, need_pixels=False).slices
    rows, cols = int(ordered[0].Rows), int(ordered[0].Columns)
    if label.shape != (cols, rows, len(ordered)):
        expected = (cols, rows, len(ordered))
        raise ImageReadError(f"The label's shape {label.shape} does not match the DICOM series {expected}")
    values = [int(v) for v in np.unique(label) if v != 0]
    if not values:
        raise ImageReadError("The label is empty; a DICOM SEG needs at least one segment")
    segment_of = np.zeros(max(values) + 1, dtype=np.uint16)
    for number, value in enumerate(values, start=1):
        segment_of[value] = number
    frames = segment_of[np.asarray(label).transpose(2, 1, 0)]  # (slices, rows, cols) segment numbers
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


def seg_to_label(
    seg: Any, source: Sequence[Any], names: Mapping[int, str] | None = None
) -> npt.NDArray[np.uint8]:
    """The ``(I, J, K)`` uint8 label map of ``seg`` on the grid of ``source``.

    Segments take the value whose name is their label (``names``: value -> name); a segment
    with an unknown label, or without ``names``, gets its segment number.

    Raises:
        ImageReadError: the SEG does not fit the series, or its segments overlap.
    """
    import highdicom as hd

    try:
        document = seg if isinstance(seg, hd.seg.Segmentation) else hd.seg.Segmentation.from_dataset(seg)
    except Exception as exc:
        raise ImageReadError(f"The DICOM SEG cannot be read: {exc}") from exc
    numbers = [int(n) for n in document.segment_numbers]
    lut = np.arange(max(numbers, default=0) + 1).astype(np.uint8)
    value_of = {name: value for value, name in (names or {}).items()}
    for number in numbers:
        label = str(document.get_segment_description(number).segment_label)
        if label in value_of:
            lut[number] = value_of[label]
    ordered = sort_dicom_series(source, need_pixels=False).slices
    try:
        pixels = document.get_pixels_by_source_instance(
            source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in ordered],
            combine_segments=True,
            assert_missing_frames_are_empty=True,
        )  # (slices, rows, cols) segment numbers
    except Exception as exc:
        raise ImageReadError(f"The DICOM SEG does not fit its source series: {exc}") from exc
    return np.ascontiguousarray(lut[np.asarray(pixels, dtype=np.int64)].transpose(2, 1, 0))


def referenced_series(seg: Any) -> tuple[str, str] | None:
    """``(StudyInstanceUID, SeriesInstanceUID)`` of the image series a SEG segments, if it says."""
    study = str(getattr(seg, "StudyInstanceUID", "") or "")
    for item in getattr(seg, "ReferencedSeriesSequence", []) or []:
        series = str(getattr(item, "SeriesInstanceUID", "") or "")
        if series:
            return study, series
    return None
