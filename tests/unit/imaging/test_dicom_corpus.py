"""Unit tests of the DICOM corpus itself (``tests.support.dicom_corpus``), through pydicom only.

Each builder's output is saved as Part 10 bytes and read back with ``pydicom.dcmread``; SEG
frames are decoded with ``ds.pixel_array`` and placed on the source's slices by the instance
each frame references. The server's reader (``read_dicom_series``, ``seg_to_label``) is not
used here: these tests pin what the corpus hands to it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    JPEGLSNearLossless,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    RLELossless,
)

from tests.support import dicom_corpus as corpus
from tests.support.dicom_series import volume_to_series

SHAPE = (24, 20, 12)  # (I, J, K): Columns 24, Rows 20, 12 slices
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.7"


@pytest.fixture(scope="module")
def volume() -> Any:
    return corpus.small_volume(SHAPE)


@pytest.fixture(scope="module")
def source(volume: Any) -> list[Dataset]:
    return volume_to_series(volume, patient_id="corpus")


@pytest.fixture(scope="module")
def label() -> npt.NDArray[np.uint8]:
    """``(I, J, K)``: value 1 on slices 3-4, value 2 on slice 6 (touching nothing of 1)."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[3:9, 2:8, 3:5] = 1
    label[10:20, 10:15, 6] = 2
    return label


def _reread(ds: Dataset) -> Dataset:
    """``ds`` saved as Part 10 bytes (with its preamble and ``DICM``) and read back."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue()
    assert raw[128:132] == b"DICM"
    return pydicom.dcmread(io.BytesIO(raw))


def _reread_all(datasets: Sequence[Dataset]) -> list[Dataset]:
    return [_reread(ds) for ds in datasets]


def _floats(values: Any) -> npt.NDArray[np.float64]:
    return np.asarray([float(v) for v in values], dtype=np.float64)


def _normal(ds: Dataset) -> npt.NDArray[np.float64]:
    orientation = _floats(ds.ImageOrientationPatient)
    return np.cross(orientation[:3], orientation[3:])


def _frames(ds: Dataset) -> npt.NDArray[Any]:
    """``(frames, Rows, Columns)`` decoded pixels, one frame or many."""
    return np.asarray(ds.pixel_array).reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))


def _frame_slices(seg: Dataset, source: Sequence[Dataset]) -> list[int]:
    """For each SEG frame, the ``k`` (in reading order) of the source instance it derives from.

    Also checks that the frame's PlanePositionSequence is that slice's position.
    """
    ordered = corpus.in_reading_order(source)
    k_of = {str(ds.SOPInstanceUID): k for k, ds in enumerate(ordered)}
    ks = []
    for frame in seg.PerFrameFunctionalGroupsSequence:
        reference = frame.DerivationImageSequence[0].SourceImageSequence[0]
        k = k_of[str(reference.ReferencedSOPInstanceUID)]
        position = _floats(frame.PlanePositionSequence[0].ImagePositionPatient)
        np.testing.assert_allclose(position, _floats(ordered[k].ImagePositionPatient), atol=1e-4)
        ks.append(k)
    return ks


def _segments(seg: Dataset, source: Sequence[Dataset]) -> dict[int, npt.NDArray[Any]]:
    """Segment number -> ``(I, J, K)`` stored values of a BINARY or FRACTIONAL SEG (0 where no frame)."""
    ordered = corpus.in_reading_order(source)
    frames = _frames(seg)
    result = {
        int(item.SegmentNumber): np.zeros((int(seg.Columns), int(seg.Rows), len(ordered)), dtype=frames.dtype)
        for item in seg.SegmentSequence
    }
    for n, (frame, k) in enumerate(
        zip(seg.PerFrameFunctionalGroupsSequence, _frame_slices(seg, source), strict=True)
    ):
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        assert not result[number][:, :, k].any(), "two frames of one segment on one slice"
        result[number][:, :, k] = frames[n].T
    return result


def _assert_references_source(seg: Dataset, source: Sequence[Dataset]) -> None:
    assert seg.Modality == "SEG"
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {str(ds.SOPInstanceUID) for ds in source}
    assert seg.SeriesInstanceUID != source[0].SeriesInstanceUID
    assert all("PlanePositionSequence" in frame for frame in seg.PerFrameFunctionalGroupsSequence)


def _painted_slices(mask: npt.NDArray[Any]) -> list[int]:
    return [k for k in range(mask.shape[2]) if mask[:, :, k].any()]


# ------------------------------------------------------------------ series variants


def test_without_attributes_deletes_them_and_keeps_the_rest(source: list[Dataset]) -> None:
    stripped = _reread_all(corpus.without_attributes(source))
    assert len(stripped) == len(source)
    for ds, original in zip(stripped, source, strict=True):
        for keyword in corpus.TYPE2_OPTIONAL:
            assert keyword not in ds, keyword
        for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "ImagePositionPatient"):
            assert ds[keyword].value == original[keyword].value
        np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)
        assert ds.SOPInstanceUID != original.SOPInstanceUID
    assert len({ds.SeriesInstanceUID for ds in stripped}) == 1
    assert stripped[0].SeriesInstanceUID != source[0].SeriesInstanceUID
    # The inputs are untouched.
    assert all("PatientName" in ds and "InstanceNumber" in ds for ds in source)


def test_without_frame_of_reference(source: list[Dataset]) -> None:
    stripped = _reread_all(corpus.without_frame_of_reference(source, new_uids=False))
    assert all("FrameOfReferenceUID" not in ds for ds in stripped)
    assert [ds.SOPInstanceUID for ds in stripped] == [ds.SOPInstanceUID for ds in source]
    assert all("PatientName" in ds for ds in stripped)


def test_rotated_volume_gives_an_oblique_series_with_orthogonal_planes(volume: Any) -> None:
    turned = corpus.rotated(volume, 20.0, "xy")
    affine, original = turned.geometry.affine, volume.geometry.affine
    np.testing.assert_allclose(
        np.linalg.norm(affine[:3, :3], axis=0), np.linalg.norm(original[:3, :3], axis=0)
    )
    assert np.linalg.det(affine[:3, :3]) == pytest.approx(np.linalg.det(original[:3, :3]))
    centre = (np.asarray(SHAPE) - 1) / 2.0
    np.testing.assert_allclose(affine @ [*centre, 1], original @ [*centre, 1], atol=1e-9)
    series = _reread_all(volume_to_series(turned, patient_id="oblique"))
    orientation = _floats(series[0].ImageOrientationPatient)
    row, col = orientation[:3], orientation[3:]
    assert abs(row @ col) < 1e-6
    assert np.sum(np.abs(row) > 1e-3) >= 2 and np.sum(np.abs(col) > 1e-3) >= 2  # oblique, not axis-aligned


def test_mr_study_shares_study_and_frame_of_reference(source: list[Dataset]) -> None:
    study = corpus.mr_study(patient_id="mr")
    assert list(study) == ["axial", "sagittal", "coronal"]
    series = {name: _reread_all(datasets) for name, datasets in study.items()}
    everything = [ds for datasets in series.values() for ds in datasets]
    assert {ds.Modality for ds in everything} == {"MR"}
    assert {ds.SOPClassUID for ds in everything} == {"1.2.840.10008.5.1.4.1.1.4"}
    assert len({ds.StudyInstanceUID for ds in everything}) == 1
    assert len({ds.FrameOfReferenceUID for ds in everything}) == 1
    assert len({datasets[0].SeriesInstanceUID for datasets in series.values()}) == 3
    assert all(len({ds.SeriesInstanceUID for ds in datasets}) == 1 for datasets in series.values())
    normals = {name: np.abs(_normal(datasets[0])) for name, datasets in series.items()}
    np.testing.assert_allclose(normals["axial"], [0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(normals["sagittal"], [1, 0, 0], atol=1e-9)
    np.testing.assert_allclose(normals["coronal"], [0, 1, 0], atol=1e-9)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_legacy_enhanced_has_one_frame_per_slice(volume: Any, modality: str) -> None:
    series = volume_to_series(volume, patient_id="legacy", modality=modality)  # type: ignore[arg-type]
    (image,) = _reread_all(corpus.legacy_enhanced(series))
    expected = {"CT": LegacyConvertedEnhancedCTImageStorage, "MR": LegacyConvertedEnhancedMRImageStorage}
    assert image.SOPClassUID == expected[modality]
    assert int(image.NumberOfFrames) == len(series)
    shared = image.SharedFunctionalGroupsSequence[0]
    for keyword in (
        "PlaneOrientationSequence",
        "PixelMeasuresSequence",
        "PixelValueTransformationSequence",
        "FrameVOILUTSequence",
    ):
        assert keyword in shared, keyword
    assert "WindowWidth" in shared.FrameVOILUTSequence[0]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in series}
    frames = _frames(image)
    for frame, pixels in zip(image.PerFrameFunctionalGroupsSequence, frames, strict=True):
        original = by_uid[str(frame.ConversionSourceAttributesSequence[0].ReferencedSOPInstanceUID)]
        position = _floats(frame.PlanePositionSequence[0].ImagePositionPatient)
        np.testing.assert_allclose(position, _floats(original.ImagePositionPatient), atol=1e-4)
        np.testing.assert_array_equal(pixels, original.pixel_array)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_enhanced_has_shuffled_frames_at_the_single_frame_positions(volume: Any, modality: str) -> None:
    series = volume_to_series(volume, patient_id="enhanced", modality=modality)  # type: ignore[arg-type]
    (image,) = _reread_all(corpus.enhanced(series))
    assert image.SOPClassUID == {"CT": EnhancedCTImageStorage, "MR": EnhancedMRImageStorage}[modality]
    assert "ImagePositionPatient" not in image
    assert int(image.NumberOfFrames) == len(series)
    assert image.StudyInstanceUID == series[0].StudyInstanceUID
    assert image.FrameOfReferenceUID == series[0].FrameOfReferenceUID
    shared = image.SharedFunctionalGroupsSequence[0]
    assert list(shared.PlaneOrientationSequence[0].ImageOrientationPatient) == list(
        series[0].ImageOrientationPatient
    )
    assert list(shared.PixelMeasuresSequence[0].PixelSpacing) == list(series[0].PixelSpacing)
    assert float(shared.PixelValueTransformationSequence[0].RescaleSlope) == float(series[0].RescaleSlope)
    by_position = {tuple(_floats(ds.ImagePositionPatient)): (k, ds) for k, ds in enumerate(series)}
    stack_positions = []
    frames = _frames(image)
    for frame, pixels in zip(image.PerFrameFunctionalGroupsSequence, frames, strict=True):
        k, original = by_position[tuple(_floats(frame.PlanePositionSequence[0].ImagePositionPatient))]
        assert int(frame.FrameContentSequence[0].InStackPositionNumber) == k + 1  # k order is reading order
        stack_positions.append(k)
        np.testing.assert_array_equal(pixels, original.pixel_array)
    assert sorted(stack_positions) == list(range(len(series)))
    assert stack_positions != sorted(stack_positions)


def test_drop_slices_leaves_a_gap(source: list[Dataset]) -> None:
    gapped = _reread_all(corpus.drop_slices(source, [5]))
    assert len(gapped) == len(source) - 1
    along = [float(_floats(ds.ImagePositionPatient) @ _normal(ds)) for ds in gapped]
    steps = np.round(np.diff(along), 6)
    assert sorted(set(steps)) == [2.5, 5.0]
    assert [ds.InstanceNumber for ds in gapped] == [n for n in range(1, 13) if n != 6]


def test_uneven_and_jittered_move_slices_along_the_normal(source: list[Dataset]) -> None:
    moved = _reread_all(corpus.uneven(source, {4: 0.8, 7: -0.6}))
    normal = _normal(source[0])
    for n, (ds, original) in enumerate(zip(moved, source, strict=True)):
        shift = _floats(ds.ImagePositionPatient) - _floats(original.ImagePositionPatient)
        np.testing.assert_allclose(shift, {4: 0.8, 7: -0.6}.get(n, 0.0) * normal, atol=1e-6)
        assert float(ds.SliceLocation) == pytest.approx(float(_floats(ds.ImagePositionPatient) @ normal))
    jittered = _reread_all(corpus.jittered(source, 0.005))
    shifts = [
        np.linalg.norm(_floats(ds.ImagePositionPatient) - _floats(original.ImagePositionPatient))
        for ds, original in zip(jittered, source, strict=True)
    ]
    assert max(shifts) <= 0.005 + 1e-9 and max(shifts) > 0


@pytest.mark.parametrize("syntax", corpus.ENCODABLE_TRANSFER_SYNTAXES, ids=lambda uid: uid.name)
def test_compressed_decodes_to_the_same_pixels(source: list[Dataset], syntax: pydicom.uid.UID) -> None:
    encoded = _reread_all(corpus.compressed(source, syntax))
    for ds, original in zip(encoded, source, strict=True):
        assert ds.file_meta.TransferSyntaxUID == syntax
        assert ds.SeriesInstanceUID == encoded[0].SeriesInstanceUID != original.SeriesInstanceUID
        if syntax.is_compressed:
            assert ds["PixelData"].is_undefined_length  # encapsulated
        pixels, expected = ds.pixel_array.astype(np.int32), original.pixel_array.astype(np.int32)
        if syntax == JPEGLSNearLossless:
            assert ds.LossyImageCompression == "01"
            assert np.max(np.abs(pixels - expected)) <= 2
        else:
            np.testing.assert_array_equal(pixels, expected)


def test_rle_and_jpeg_ls_lossless_are_encodable() -> None:
    assert RLELossless in corpus.LOSSLESS_TRANSFER_SYNTAXES
    assert set(corpus.LOSSLESS_TRANSFER_SYNTAXES) <= set(corpus.DECODABLE_TRANSFER_SYNTAXES)
    with pytest.raises(ValueError, match="cannot be encoded"):
        corpus.compressed([], "1.2.840.10008.1.2.4.57")  # JPEG Lossless: no encoder anywhere


def test_with_localizer_puts_orthogonal_scouts_in_the_series(source: list[Dataset]) -> None:
    mixed = _reread_all(corpus.with_localizer(source))
    assert len(mixed) == len(source) + 2
    assert len({ds.SeriesInstanceUID for ds in mixed}) == 1
    localizers = [ds for ds in mixed if "LOCALIZER" in ds.ImageType]
    assert len(localizers) == 2
    series_normal = _normal(source[0])
    for ds in localizers:
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        assert (ds.Rows, ds.Columns) != (source[0].Rows, source[0].Columns)
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
        assert abs(float(_normal(ds) @ series_normal)) < 1e-6
        assert ds.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert len({ds.SOPInstanceUID for ds in mixed}) == len(mixed)
    assert len({int(ds.InstanceNumber) for ds in mixed}) == len(mixed)


def test_in_reading_order_sorts_along_the_normal(source: list[Dataset]) -> None:
    shuffled = [source[i] for i in np.random.default_rng(1).permutation(len(source))]
    assert [ds.SOPInstanceUID for ds in corpus.in_reading_order(shuffled)] == [
        ds.SOPInstanceUID for ds in source
    ]


# ------------------------------------------------------------------ SEGs by other tools


def test_ohif_labelmap_seg(source: list[Dataset], label: npt.NDArray[np.uint8]) -> None:
    seg = _reread(corpus.ohif_labelmap_seg(label, source))
    _assert_references_source(seg, source)
    assert seg.SOPClassUID == LABEL_MAP_SEGMENTATION
    assert seg.SegmentationType == "LABELMAP"
    assert seg.file_meta.TransferSyntaxUID == RLELossless
    assert (seg.BitsAllocated, seg.BitsStored, seg.PhotometricInterpretation) == (8, 8, "MONOCHROME2")
    assert "ContentCreatorName" not in seg
    assert "ContributingEquipmentSequence" not in seg  # no trace of highdicom
    assert [str(item.SegmentLabel) for item in seg.SegmentSequence] == ["Segment 1", "Segment 2"]
    assert all("FrameContentSequence" not in frame for frame in seg.PerFrameFunctionalGroupsSequence)
    assert all("SegmentIdentificationSequence" not in frame for frame in seg.PerFrameFunctionalGroupsSequence)
    ks = _frame_slices(seg, source)
    assert sorted(ks) == _painted_slices(label)
    decoded = np.zeros(SHAPE, dtype=np.uint8)
    for frame, k in zip(_frames(seg), ks, strict=True):
        decoded[:, :, k] = frame.T
    np.testing.assert_array_equal(decoded, label)


def test_ohif_labelmap_seg_names_segments_it_is_given(
    source: list[Dataset], label: npt.NDArray[np.uint8]
) -> None:
    seg = _reread(corpus.ohif_labelmap_seg(label, source, {1: "spleen", 2: "liver"}))
    assert [str(item.SegmentLabel) for item in seg.SegmentSequence] == ["spleen", "liver"]
    with_background = _reread(corpus.ohif_labelmap_seg(label, source, background_segment=True))
    assert [int(item.SegmentNumber) for item in with_background.SegmentSequence] == [0, 1, 2]


def test_ohif_bitmap_seg(source: list[Dataset], label: npt.NDArray[np.uint8]) -> None:
    seg = _reread(corpus.ohif_bitmap_seg(label, source))
    _assert_references_source(seg, source)
    assert seg.SOPClassUID == SEGMENTATION
    assert (seg.SegmentationType, seg.BitsAllocated) == ("BINARY", 1)
    assert "ContentCreatorName" not in seg
    assert [str(item.SegmentLabel) for item in seg.SegmentSequence] == ["Segment 1", "Segment 2"]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        assert "SpatialLocationsPreserved" not in frame.DerivationImageSequence[0].SourceImageSequence[0]
    assert all("SpatialLocationsPreserved" not in item for item in seg.get("SourceImageSequence", []))
    assert int(seg.NumberOfFrames) == len(_painted_slices(label == 1)) + len(_painted_slices(label == 2))
    segments = _segments(seg, source)
    np.testing.assert_array_equal(segments[1], label == 1)
    np.testing.assert_array_equal(segments[2], label == 2)


def test_dcmqi_seg(source: list[Dataset], label: npt.NDArray[np.uint8]) -> None:
    seg = _reread(corpus.dcmqi_seg(label, source))
    _assert_references_source(seg, source)
    assert (seg.SegmentationType, seg.BitsAllocated) == ("BINARY", 1)
    first, second = seg.SegmentSequence
    assert (int(first.SegmentNumber), str(first.SegmentLabel)) == (1, "Liver")
    assert (int(second.SegmentNumber), str(second.SegmentLabel)) == (2, "spleen")  # pydicom strips the pad
    liver = first.SegmentedPropertyTypeCodeSequence[0]
    assert (liver.CodeValue, liver.CodingSchemeDesignator, liver.CodeMeaning) == ("10200004", "SCT", "Liver")
    assert second.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Spleen"
    assert first.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Anatomical Structure"
    assert "ContentCreatorName" in seg
    segments = _segments(seg, source)
    np.testing.assert_array_equal(segments[1], label == 2)  # liver is the app's value 2
    np.testing.assert_array_equal(segments[2], label == 1)
    order = [
        (int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber), k)
        for frame, k in zip(seg.PerFrameFunctionalGroupsSequence, _frame_slices(seg, source), strict=True)
    ]
    assert order != sorted(order)
    assert [k for _, k in order] != sorted(k for _, k in order)
    assert len(order) == len(_painted_slices(label == 1)) + len(_painted_slices(label == 2))


def test_fractional_seg(source: list[Dataset], label: npt.NDArray[np.uint8]) -> None:
    seg = _reread(corpus.fractional_seg(corpus.soft_fractions(label), source))
    _assert_references_source(seg, source)
    assert (seg.SegmentationType, seg.BitsAllocated, int(seg.MaximumFractionalValue)) == (
        "FRACTIONAL",
        8,
        255,
    )
    for number, value in ((1, 1), (2, 2)):
        stored = _segments(seg, source)[number]
        np.testing.assert_array_equal(stored > 127, label == value)
        assert set(np.unique(stored)) == {0, round(0.3 * 255), round(0.8 * 255)}


def test_overlapping_seg(source: list[Dataset], label: npt.NDArray[np.uint8]) -> None:
    masks = {1: label == 1, 2: (label == 2) | (label == 1)}
    seg = _reread(corpus.overlapping_seg(masks, source))
    _assert_references_source(seg, source)
    assert (seg.SegmentationType, seg.SegmentsOverlap) == ("BINARY", "YES")
    segments = _segments(seg, source)
    np.testing.assert_array_equal(segments[1], masks[1])
    np.testing.assert_array_equal(segments[2], masks[2])
    assert (segments[1] & segments[2]).any()


def test_seg_over_a_series_with_a_gap(source: list[Dataset], label: npt.NDArray[np.uint8]) -> None:
    gapped = corpus.drop_slices(source, [5])
    gapped_label = np.delete(label, 5, axis=2)
    seg = _reread(corpus.ohif_bitmap_seg(gapped_label, gapped))
    _assert_references_source(seg, gapped)
    np.testing.assert_array_equal(_segments(seg, gapped)[2], gapped_label == 2)


def test_seg_builders_refuse_a_label_of_another_shape(
    source: list[Dataset], label: npt.NDArray[np.uint8]
) -> None:
    with pytest.raises(ValueError, match="does not match"):
        corpus.ohif_labelmap_seg(label[:, :, :-1], source)
    with pytest.raises(ValueError, match="empty"):
        corpus.dcmqi_seg(np.zeros_like(label), source)
