"""Unit tests of labelloop.imaging.dicom: DICOM series, as datasets and as zip archives.

The slices are derived from pydicom's own ``CT_small.dcm`` test file.
"""

from __future__ import annotations

import io
import random
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from labelloop.errors import ImageReadError, PayloadTooLargeError
from labelloop.imaging import read_dicom_series, read_dicom_zip
from tests.support.imaging import SECRET
from tests.support.imaging import assert_no_path as _assert_no_path
from tests.support.imaging import rotation as _rotation
from tests.support.imaging import world as _world

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# ------------------------------------------------------------------ DICOM series


CT_SMALL = get_testdata_file("CT_small.dcm", download=False)


ROWS, COLS = 20, 24  # cropped from CT_small's 128x128, different so a rows/columns swap shows


PIXEL_SPACING = (0.7, 0.9)  # (between rows, between columns), different for the same reason


def _oblique_orientation() -> tuple[list[float], list[float]]:
    rot = _rotation(0.25, -0.15, 0.4)
    row_dir = [round(float(v), 6) for v in rot[:, 0]]
    col_dir = [round(float(v), 6) for v in rot[:, 1]]
    return row_dir, col_dir


def _make_slices(
    n: int,
    *,
    step: float = 2.5,
    orientation: tuple[list[float], list[float]] | None = None,
    origin: tuple[float, float, float] = (-158.1358, -179.0358, -75.7),
    slope: float = 2.0,
    intercept: float = -1024.0,
    series_uid: str | None = None,
    ks: list[float] | None = None,
    seed: int = 0,
) -> list[pydicom.Dataset]:
    """``n`` single-frame CT slices at ``origin + k * step * normal``, with shuffled InstanceNumbers."""
    row_dir, col_dir = orientation or _oblique_orientation()
    normal = np.cross(row_dir, col_dir)
    series_uid = series_uid or generate_uid()
    rng = random.Random(seed)
    instance_numbers = list(range(1, n + 1))
    rng.shuffle(instance_numbers)
    template = pydicom.dcmread(CT_SMALL)
    base = template.pixel_array[:ROWS, :COLS].astype(np.int16)
    slices = []
    for index, k in enumerate(ks if ks is not None else range(n)):
        ds = pydicom.dcmread(CT_SMALL)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = instance_numbers[index]
        ds.ImageOrientationPatient = [*row_dir, *col_dir]
        position = np.asarray(origin) + k * step * normal
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.SliceLocation = round(float(position @ normal), 4)
        ds.PixelSpacing = list(PIXEL_SPACING)
        ds.SliceThickness = abs(step)
        ds.SpacingBetweenSlices = abs(step)
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        pixels = (base + np.int16(index * 7)).astype(np.int16)  # each slice is different
        ds.Rows, ds.Columns = ROWS, COLS
        ds.PixelData = pixels.tobytes()
        slices.append(ds)
    return slices


def _zip_slices(path: Path, slices: list[pydicom.Dataset], extra: dict[str, bytes] | None = None) -> Path:
    """Zip the slices in random order under random names (plus ``extra`` members)."""
    members = []
    for ds in slices:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        members.append((f"series/{uuid.uuid4().hex}.dcm", buffer.getvalue()))
    members.extend((extra or {}).items())
    random.Random(1).shuffle(members)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("series/", b"")  # a directory entry
        for name, data in members:
            zf.writestr(name, data)
    return path


def _assert_matches_slices(volume: Any, slices: list[pydicom.Dataset]) -> None:
    """Every voxel of ``volume`` has its slice's value and lies where that slice's header says."""
    assert volume.format == "dicom"
    assert volume.array.shape == (COLS, ROWS, len(slices))
    assert volume.geometry.shape == (COLS, ROWS, len(slices))
    affine = volume.geometry.affine
    ipps = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    for k in range(len(slices)):
        # Which source slice is voxel plane k? The one whose (LPS) position is its corner.
        corner_lps = (LPS_TO_RAS @ affine @ np.array([0.0, 0.0, k, 1.0]))[:3]
        distances = np.linalg.norm(ipps - corner_lps, axis=1)
        source = slices[int(np.argmin(distances))]
        assert distances.min() < 1e-3
        slope, intercept = float(source.RescaleSlope), float(source.RescaleIntercept)
        np.testing.assert_allclose(volume.array[:, :, k], source.pixel_array.T * slope + intercept)
        row_dir = np.array([float(v) for v in source.ImageOrientationPatient[:3]])
        col_dir = np.array([float(v) for v in source.ImageOrientationPatient[3:]])
        row_spacing, col_spacing = (float(v) for v in source.PixelSpacing)
        ipp = np.array([float(v) for v in source.ImagePositionPatient])
        for i, j in [(0, 0), (COLS - 1, 0), (0, ROWS - 1), (COLS - 1, ROWS - 1), (5, 11)]:
            lps = ipp + i * col_spacing * row_dir + j * row_spacing * col_dir
            expected_ras = lps * np.array([-1.0, -1.0, 1.0])
            np.testing.assert_allclose(_world(affine, (i, j, k)), expected_ras, atol=1e-3)


@pytest.mark.parametrize(
    ("slope", "intercept", "dtype"),
    [(2.0, -1024.0, np.int16), (0.5, -10.25, np.float32)],
    ids=["integral-rescale", "fractional-rescale"],
)
def test_dicom_zip_reads_a_shuffled_series(tmp_path: Path, slope: float, intercept: float, dtype: type):
    slices = _make_slices(5, slope=slope, intercept=intercept)
    archive = _zip_slices(tmp_path / "series.zip", slices, extra={"README.txt": b"not dicom"})
    volume = read_dicom_zip(archive, max_bytes=50_000_000)
    assert volume.array.dtype == np.dtype(dtype)
    _assert_matches_slices(volume, slices)
    # Slices were made at k * step along the normal, so voxel plane k is slice k, whatever
    # the file order and InstanceNumbers.
    for k, ds in enumerate(slices):
        np.testing.assert_allclose(volume.array[:, :, k], ds.pixel_array.T * slope + intercept)
    np.testing.assert_allclose(volume.geometry.spacing, (PIXEL_SPACING[1], PIXEL_SPACING[0], 2.5), atol=1e-4)
    row_dir, col_dir = _oblique_orientation()
    np.testing.assert_allclose(volume.geometry.direction[:, 0], np.array(row_dir) * [-1, -1, 1], atol=1e-5)
    np.testing.assert_allclose(volume.geometry.direction[:, 1], np.array(col_dir) * [-1, -1, 1], atol=1e-5)


def test_dicom_series_stepping_against_the_normal(tmp_path: Path):
    slices = _make_slices(4, step=-3.0)
    volume = read_dicom_zip(_zip_slices(tmp_path / "s.zip", slices), max_bytes=50_000_000)
    _assert_matches_slices(volume, slices)
    assert volume.geometry.spacing[2] == pytest.approx(3.0, abs=1e-4)


def test_dicom_series_axis_aligned_matches_plain_lps_to_ras():
    slices = _make_slices(
        3, orientation=([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]), step=5.0, origin=(-10.0, 20.0, 30.0)
    )
    volume = read_dicom_series(slices)
    expected = np.array(
        [
            [-0.9, 0.0, 0.0, 10.0],
            [0.0, -0.7, 0.0, -20.0],
            [0.0, 0.0, 5.0, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(volume.geometry.affine, expected, atol=1e-6)
    _assert_matches_slices(volume, slices)


def test_dicom_single_slice_uses_slice_thickness():
    slices = _make_slices(1, step=4.0)
    volume = read_dicom_series(slices)
    assert volume.array.shape == (COLS, ROWS, 1)
    assert volume.geometry.spacing[2] == pytest.approx(4.0)
    _assert_matches_slices(volume, slices)


def test_dicom_geometry_agrees_with_highdicom():
    highdicom = pytest.importorskip("highdicom")
    slices = _make_slices(4)
    ours = read_dicom_series(slices)
    theirs = highdicom.get_volume_from_series(slices)
    # highdicom's volume is indexed (slice, row, column) with an LPS affine.
    inverse = np.linalg.inv(theirs.affine)
    for ijk in [(0, 0, 0), (COLS - 1, 0, 1), (3, ROWS - 1, 2), (COLS - 1, ROWS - 1, 3)]:
        lps = LPS_TO_RAS @ ours.geometry.affine @ np.array([*ijk, 1.0])
        index = inverse @ lps
        rounded = np.round(index[:3])
        np.testing.assert_allclose(index[:3], rounded, atol=1e-3)
        k, r, c = (int(v) for v in rounded)
        assert (c, r) == ijk[:2]
        assert ours.array[ijk] == pytest.approx(theirs.array[k, r, c])


def test_dicom_zip_with_two_series_is_refused(tmp_path: Path):
    slices = _make_slices(3) + _make_slices(3, seed=2)  # two series on the same positions
    with pytest.raises(ImageReadError, match="2 DICOM series"):
        read_dicom_zip(_zip_slices(tmp_path / "two.zip", slices), max_bytes=50_000_000)


def test_dicom_zip_with_a_missing_slice_is_refused(tmp_path: Path):
    slices = _make_slices(4, ks=[0, 1, 2, 4])
    with pytest.raises(ImageReadError, match="evenly spaced"):
        read_dicom_zip(_zip_slices(tmp_path / "gap.zip", slices), max_bytes=50_000_000)


def test_dicom_zip_with_mixed_orientations_is_refused(tmp_path: Path):
    slices = _make_slices(4)
    slices[2].ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    with pytest.raises(ImageReadError, match="orientations"):
        read_dicom_zip(_zip_slices(tmp_path / "mixed.zip", slices), max_bytes=50_000_000)


def test_dicom_slices_on_one_position_are_refused():
    slices = _make_slices(3, step=0.0)
    with pytest.raises(ImageReadError, match="share one position"):
        read_dicom_series(slices)


def test_zip_without_dicom_is_refused(tmp_path: Path):
    path = tmp_path / "nodicom.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("README.txt", "hello")
        zf.writestr("image.png", b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ImageReadError, match="no DICOM"):
        read_dicom_zip(path, max_bytes=50_000_000)


def test_not_a_zip_is_refused_without_its_path(tmp_path: Path):
    path = tmp_path / f"{SECRET}.zip"
    path.write_bytes(b"PK\x03\x04 but not really a zip")
    with pytest.raises(ImageReadError) as info:
        read_dicom_zip(path, max_bytes=50_000_000)
    _assert_no_path(str(info.value), path)


def test_zip_declaring_too_many_bytes_is_refused(tmp_path: Path):
    path = tmp_path / "bomb.zip"
    declared = 4 * 1024 * 1024
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.dcm", bytes(declared))
    limit = 1024 * 1024
    assert path.stat().st_size < limit  # the archive itself is small; what it unpacks to is not
    with pytest.raises(PayloadTooLargeError, match=str(declared)):
        read_dicom_zip(path, max_bytes=limit)


def test_dicom_zip_limit_counts_all_members(tmp_path: Path):
    slices = _make_slices(3)
    archive = _zip_slices(tmp_path / "s.zip", slices)
    with zipfile.ZipFile(archive) as zf:
        total = sum(m.file_size for m in zf.infolist())
    assert read_dicom_zip(archive, max_bytes=total).array.shape[2] == 3
    with pytest.raises(PayloadTooLargeError):
        read_dicom_zip(archive, max_bytes=total - 1)
