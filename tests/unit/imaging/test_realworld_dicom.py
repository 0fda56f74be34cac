"""The server's DICOM reader and SEG writer/reader on real-world-shaped series and on SEGs that
other tools write (tests/support/dicom_corpus.py builds them; Orthanc runs in
tests/integration/test_pacs_realworld.py)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless, RLELossless

from labelloop.errors import ImageReadError
from labelloop.imaging import read_dicom_series, read_dicom_zip, sort_dicom_series
from labelloop.imaging.dicomseg import SegAuthor, label_to_seg, read_seg, seg_to_label
from tests.support import dicom_corpus as corpus
from tests.support.dicom_series import as_read_back, volume_to_series, zip_series

NAMES = {1: "spleen", 2: "liver"}


def _round_trip(ds: Any) -> Any:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _series(seed: int = 0) -> tuple[Any, list[Any]]:
    volume = corpus.small_volume(seed=seed)
    return volume, volume_to_series(volume, patient_id=f"P{seed}")


def _label(shape: tuple[int, int, int]) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[3:10, 4:12, 2:6] = 1
    label[12:20, 6:15, 5:10] = 2
    return label


def _assert_volume(datasets: list[Any], expected: Any) -> None:
    got = read_dicom_series([_round_trip(ds) for ds in datasets])
    want = as_read_back(expected)
    np.testing.assert_array_equal(got.array, want.array)
    np.testing.assert_allclose(got.geometry.affine, want.geometry.affine, atol=1e-3)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda s: s, id="plain"),
        pytest.param(corpus.without_attributes, id="no-type2"),
        pytest.param(lambda s: corpus.compressed(s, RLELossless), id="rle"),
        pytest.param(lambda s: corpus.compressed(s, JPEGLSLossless), id="jpeg-ls"),
        pytest.param(lambda s: corpus.legacy_enhanced(s), id="legacy-enhanced"),
        pytest.param(lambda s: corpus.enhanced(s), id="enhanced-shuffled"),
    ],
)
def test_series_kinds_read_as_the_volume_and_carry_a_seg(make: Any) -> None:
    volume, series = _series()
    datasets = make(series)
    _assert_volume(datasets, volume)
    label = _label(volume.array.shape)
    metadata = [_round_trip(ds) for ds in datasets]
    for ds in metadata:
        del ds.PixelData  # write-back works from WADO-RS metadata, without pixels
    seg = _round_trip(label_to_seg(label, metadata, NAMES, SegAuthor("annotator")))
    np.testing.assert_array_equal(seg_to_label(seg, metadata, NAMES), label)


def test_missing_type2_attributes_are_written_empty() -> None:
    volume, series = _series()
    source = corpus.without_attributes(series)
    assert "PatientBirthDate" not in source[0] and "AccessionNumber" not in source[0]
    seg = label_to_seg(_label(volume.array.shape), source, NAMES, SegAuthor("annotator"))
    assert seg.PatientBirthDate == "" and seg.AccessionNumber == "" and seg.ReferringPhysicianName == ""
    assert "PatientBirthDate" not in source[0], "the caller's datasets are not changed"


def test_a_series_without_frame_of_reference_is_refused_by_name() -> None:
    volume, series = _series()
    source = corpus.without_frame_of_reference(series)
    with pytest.raises(ImageReadError, match="FrameOfReferenceUID") as caught:
        label_to_seg(_label(volume.array.shape), source, NAMES, SegAuthor("annotator"))
    assert str(source[0].SeriesInstanceUID) in caught.value.message


def test_oblique_and_mr_orientations() -> None:
    volume = corpus.rotated(corpus.small_volume(), 20.0, "xy")
    _assert_volume(volume_to_series(volume, patient_id="obl"), volume)
    for orientation, series in corpus.mr_study(patient_id="mr").items():
        got = read_dicom_series(series)
        normal = np.cross(
            np.asarray(series[0].ImageOrientationPatient[:3], dtype=float),
            np.asarray(series[0].ImageOrientationPatient[3:], dtype=float),
        )
        assert got.array.shape[2] == len(series), orientation
        step = got.geometry.affine[:3, 2] * np.array([-1, -1, 1])  # RAS -> LPS
        assert abs(abs(float(step @ normal)) - np.linalg.norm(step)) < 1e-6, orientation


def test_localizers_are_left_out_and_listed() -> None:
    volume, series = _series()
    mixed = corpus.with_localizer(series)
    sorted_ = sort_dicom_series(mixed)
    assert len(sorted_.frames) == len(series) and len(sorted_.skipped) == 2
    assert all("localizer" in reason for _, reason in sorted_.skipped)
    _assert_volume(mixed, volume)


def test_a_missing_slice_is_named() -> None:
    _, series = _series()
    gap = corpus.drop_slices(series, [5])
    with pytest.raises(ImageReadError, match="not evenly spaced") as caught:
        read_dicom_series(gap)
    message = caught.value.message
    assert "instance 5" in message and "instance 7" in message
    assert "5.00 mm" in message and "2.50 mm" in message


def test_segs_of_other_tools_become_the_label() -> None:
    volume, series = _series()
    label = _label(volume.array.shape)
    ordered = corpus.in_reading_order(series)
    by_number = {1: "Segment 1", 2: "Segment 2"}
    for name, seg in {
        "ohif-labelmap": corpus.ohif_labelmap_seg(label, ordered),
        "ohif-bitmap": corpus.ohif_bitmap_seg(label, ordered),
        "dcmqi": corpus.dcmqi_seg(label, ordered),
        "fractional": corpus.fractional_seg(corpus.soft_fractions(label), ordered),
    }.items():
        read = read_seg(_round_trip(seg), series, NAMES)
        np.testing.assert_array_equal(read.label, label, err_msg=name)
        assert not read.skipped, name
    read = read_seg(_round_trip(corpus.dcmqi_seg(label, ordered)), series, NAMES)
    assert {(s.label.strip(), s.value, s.matched_by) for s in read.segments} == {
        ("Liver", 2, "name"),
        ("spleen", 1, "name"),
    }
    read = read_seg(_round_trip(corpus.ohif_labelmap_seg(label, ordered, by_number)), series, NAMES)
    assert {s.matched_by for s in read.segments} == {"number"}


def test_unknown_and_overlapping_segments() -> None:
    volume, series = _series()
    label = _label(volume.array.shape)
    ordered = corpus.in_reading_order(series)
    seg = corpus.ohif_labelmap_seg(label, ordered, {1: "tumour", 2: "liver"})
    read = read_seg(_round_trip(seg), series, NAMES)
    assert [(s.label, s.matched_by) for s in read.skipped] == [("tumour", "none")]
    np.testing.assert_array_equal(read.label, np.where(label == 2, 2, 0))
    masks = {1: label == 1, 2: (label == 1) | (label == 2)}
    with pytest.raises(ImageReadError, match="overlap"):
        read_seg(_round_trip(corpus.overlapping_seg(masks, ordered)), series, NAMES)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless], ids=["rle", "jpeg-ls"])
def test_a_compressed_zip_decodes_with_the_installed_handlers(syntax: str, tmp_path: Any) -> None:
    volume, series = _series(seed=3)
    path = zip_series(tmp_path / "compressed.zip", corpus.compressed(series, syntax))
    got = read_dicom_zip(path, max_bytes=50_000_000)
    np.testing.assert_array_equal(got.array, as_read_back(volume).array)
