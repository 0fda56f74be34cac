"""Unit tests of labelloop.imaging: NIfTI/NRRD I/O and geometry, content sniffing, DICOM series, grids.

All volumes here are synthetic (generated in the test) except the DICOM slices, which are
derived from pydicom's own ``CT_small.dcm`` test file.
"""

from __future__ import annotations

import gzip
import io
import random
import struct
import uuid
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from labelloop.errors import GeometryMismatchError, ImageFormatError, ImageReadError, PayloadTooLargeError
from labelloop.imaging import (
    Geometry,
    canonical_extension,
    check_same_grid,
    read_dicom_series,
    read_dicom_zip,
    read_geometry,
    read_volume,
    sniff,
    strip_extensions,
    write_volume,
)

NAN = float("nan")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(rotation: np.ndarray, spacing: tuple[float, float, float], origin: tuple[float, float, float]):
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


AFFINES = {
    # Rotated about all three axes, anisotropic voxels, right-handed.
    "oblique": _affine(_rotation(0.3, -0.2, 0.5), (0.8, 1.1, 2.5), (-100.5, 42.25, 17.0)),
    # Axis-aligned but with i and k flipped (as radiological NIfTI and many DICOM-derived files).
    "flipped": _affine(np.diag([-1.0, 1.0, -1.0]), (0.7, 0.9, 3.0), (120.0, -80.0, 60.5)),
    # Oblique and left-handed (negative determinant): exercises the NIfTI qfac and NRRD signs.
    "oblique-flipped": _affine(
        _rotation(-0.4, 0.1, 1.2) @ np.diag([1.0, -1.0, 1.0]), (1.2, 0.6, 2.0), (5, 6, 7)
    ),
}

SHAPE = (5, 6, 7)  # distinct sizes, so any transpose of the axes is noticed


def _random_array(dtype: np.dtype[Any] | type, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    return (rng.standard_normal(size=shape) * 1000).astype(dtype)


def _world(affine: np.ndarray, ijk: tuple[float, float, float]) -> np.ndarray:
    return (np.asarray(affine) @ np.array([*ijk, 1.0]))[:3]


# ------------------------------------------------------------------ NIfTI / NRRD round trips


@pytest.mark.parametrize("affine_name", sorted(AFFINES))
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd"])
def test_round_trip_keeps_voxels_and_geometry(tmp_path: Path, suffix: str, dtype: type, affine_name: str):
    affine = AFFINES[affine_name]
    array = _random_array(dtype)
    path = tmp_path / f"vol{suffix}"
    write_volume(path, array, affine)

    volume = read_volume(path)
    assert volume.format == ("nrrd" if suffix == ".nrrd" else "nifti")
    assert volume.array.dtype == np.dtype(dtype)
    assert volume.array.shape == SHAPE
    np.testing.assert_array_equal(volume.array, array)
    assert volume.geometry.shape == SHAPE
    np.testing.assert_allclose(volume.geometry.affine, affine, atol=1e-5)

    # The voxel holding a given value is at the same physical point as before.
    voxel = (4, 1, 5)
    assert volume.array[voxel] == array[voxel]
    np.testing.assert_allclose(_world(volume.geometry.affine, voxel), _world(affine, voxel), atol=1e-4)

    geometry, fmt = read_geometry(path)
    assert fmt == volume.format
    assert geometry.shape == SHAPE
    np.testing.assert_allclose(geometry.affine, affine, atol=1e-5)
    np.testing.assert_allclose(geometry.spacing, np.linalg.norm(affine[:3, :3], axis=0), rtol=1e-6)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_written_nifti_is_what_nibabel_reads(tmp_path: Path, suffix: str):
    """Checked with nibabel directly, so a symmetric write/read mistake cannot cancel out."""
    affine = AFFINES["oblique-flipped"]
    array = _random_array(np.int16)
    path = tmp_path / f"vol{suffix}"
    write_volume(path, array, affine)
    img = nib.load(path)
    np.testing.assert_array_equal(np.asarray(img.dataobj), array)
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-5)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert img.header.get_xyzt_units()[0] == "mm"


def test_written_nrrd_is_lps_as_pynrrd_reads_it(tmp_path: Path):
    """The NRRD on disk is in LPS: x and y of every direction and of the origin are negated."""
    affine = AFFINES["oblique"]
    array = _random_array(np.uint8)
    path = tmp_path / "vol.nrrd"
    write_volume(path, array, affine)
    data, header = nrrd.read(str(path), index_order="F")
    np.testing.assert_array_equal(data, array)
    assert header["space"] == "left-posterior-superior"
    expected_directions = (affine[:3, :3] * np.array([[-1.0], [-1.0], [1.0]])).T  # one row per axis
    np.testing.assert_allclose(header["space directions"], expected_directions, atol=1e-6)
    np.testing.assert_allclose(header["space origin"], [100.5, -42.25, 17.0], atol=1e-6)


def test_write_volume_refuses_unknown_suffix(tmp_path: Path):
    with pytest.raises(ImageFormatError):
        write_volume(tmp_path / "vol.mha", _random_array(np.int16), np.eye(4))
    assert not (tmp_path / "vol.mha").exists()


# Directions as NRRD stores them: one row per axis (the vector of one step along that axis).
NRRD_DIRECTIONS = np.array([[0.9, 0.1, 0.0], [-0.2, 1.1, 0.3], [0.0, -0.5, 2.4]])
NRRD_ORIGIN = np.array([10.0, -20.0, 30.0])


def _write_nrrd(path: Path, data: np.ndarray, header: dict[str, Any]) -> None:
    nrrd.write(str(path), data, header=header, index_order="F")


def test_nrrd_in_lps_reads_as_ras(tmp_path: Path):
    data = _random_array(np.int16, (4, 5, 6))
    path = tmp_path / "lps.nrrd"
    _write_nrrd(
        path,
        data,
        {
            "space": "left-posterior-superior",
            "space directions": NRRD_DIRECTIONS,
            "space origin": NRRD_ORIGIN,
        },
    )
    # By hand: columns are the axis vectors with x and y negated; the origin likewise.
    expected = np.array(
        [
            [-0.9, 0.2, 0.0, -10.0],
            [-0.1, -1.1, 0.5, 20.0],
            [0.0, 0.3, 2.4, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, data)
    np.testing.assert_allclose(volume.geometry.affine, expected, atol=1e-9)
    # Voxel (1, 2, 3) in LPS: origin + 1*d0 + 2*d1 + 3*d2 = (10.5, -19.2, 37.8) -> RAS (-10.5, 19.2, 37.8).
    np.testing.assert_allclose(_world(volume.geometry.affine, (1, 2, 3)), [-10.5, 19.2, 37.8], atol=1e-9)
    geometry, _ = read_geometry(path)
    np.testing.assert_allclose(geometry.affine, expected, atol=1e-9)
    np.testing.assert_allclose(geometry.spacing, np.linalg.norm(NRRD_DIRECTIONS, axis=1))


def test_nrrd_in_ras_is_taken_as_is(tmp_path: Path):
    data = _random_array(np.float32, (4, 5, 6))
    path = tmp_path / "ras.nrrd"
    _write_nrrd(
        path,
        data,
        {
            "space": "right-anterior-superior",
            "space directions": NRRD_DIRECTIONS,
            "space origin": NRRD_ORIGIN,
        },
    )
    expected = np.array(
        [
            [0.9, -0.2, 0.0, 10.0],
            [0.1, 1.1, -0.5, -20.0],
            [0.0, 0.3, 2.4, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, data)
    np.testing.assert_allclose(volume.geometry.affine, expected, atol=1e-9)


def test_nrrd_leading_singleton_axis_is_squeezed(tmp_path: Path):
    data = _random_array(np.uint8, (1, 4, 5, 6))
    directions = np.vstack([[NAN, NAN, NAN], NRRD_DIRECTIONS])
    path = tmp_path / "seg.nrrd"
    _write_nrrd(
        path,
        data,
        {
            "space": "left-posterior-superior",
            "space directions": directions,
            "space origin": NRRD_ORIGIN,
            "kinds": ["list", "domain", "domain", "domain"],
        },
    )
    volume = read_volume(path)
    assert volume.array.shape == (4, 5, 6)
    np.testing.assert_array_equal(volume.array, data[0])
    assert volume.geometry.shape == (4, 5, 6)
    np.testing.assert_allclose(volume.geometry.affine[:3, 3], [-10.0, 20.0, 30.0])
    np.testing.assert_allclose(volume.geometry.spacing, np.linalg.norm(NRRD_DIRECTIONS, axis=1))


def test_nrrd_leading_axis_of_three_is_refused(tmp_path: Path):
    data = _random_array(np.uint8, (3, 4, 5, 6))
    directions = np.vstack([[NAN, NAN, NAN], NRRD_DIRECTIONS])
    path = tmp_path / "layers.seg.nrrd"
    _write_nrrd(
        path,
        data,
        {
            "space": "left-posterior-superior",
            "space directions": directions,
            "kinds": ["list", "domain", "domain", "domain"],
        },
    )
    with pytest.raises(ImageReadError, match="non-spatial axis"):
        read_volume(path)
    with pytest.raises(ImageReadError, match="non-spatial axis"):
        read_geometry(path)


def test_nrrd_trailing_singleton_axis_is_squeezed(tmp_path: Path):
    data = _random_array(np.int16, (4, 5, 6, 1))
    directions = np.vstack([NRRD_DIRECTIONS, [NAN, NAN, NAN]])
    path = tmp_path / "vol4d.nrrd"
    _write_nrrd(
        path,
        data,
        {
            "space": "left-posterior-superior",
            "space directions": directions,
            "kinds": ["domain", "domain", "domain", "list"],
        },
    )
    volume = read_volume(path)
    assert volume.array.shape == (4, 5, 6)
    np.testing.assert_array_equal(volume.array, data[..., 0])


def test_2d_nifti_becomes_a_single_slice(tmp_path: Path):
    data = _random_array(np.int16, (7, 9))
    affine = AFFINES["oblique"]
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    volume = read_volume(path)
    assert volume.array.shape == (7, 9, 1)
    assert volume.geometry.shape == (7, 9, 1)
    np.testing.assert_array_equal(volume.array[:, :, 0], data)
    np.testing.assert_allclose(volume.geometry.affine, affine, atol=1e-5)
    assert read_geometry(path)[0].shape == (7, 9, 1)


def test_2d_nrrd_becomes_a_single_slice(tmp_path: Path):
    data = _random_array(np.uint8, (7, 9))
    path = tmp_path / "slice.nrrd"
    _write_nrrd(path, data, {"spacings": [0.5, 0.75]})
    volume = read_volume(path)
    assert volume.array.shape == (7, 9, 1)
    np.testing.assert_array_equal(volume.array[:, :, 0], data)
    np.testing.assert_allclose(volume.geometry.spacing, [0.5, 0.75, 1.0])
    assert abs(np.linalg.det(volume.geometry.affine[:3, :3])) > 0


def test_2d_nrrd_in_3d_space_becomes_a_single_slice(tmp_path: Path):
    data = _random_array(np.uint8, (7, 9))
    path = tmp_path / "slice3d.nrrd"
    _write_nrrd(
        path,
        data,
        {
            "space": "left-posterior-superior",
            "space directions": NRRD_DIRECTIONS[:2],
            "space origin": NRRD_ORIGIN,
        },
    )
    volume = read_volume(path)
    assert volume.array.shape == (7, 9, 1)
    np.testing.assert_array_equal(volume.array[:, :, 0], data)
    np.testing.assert_allclose(volume.geometry.affine[:3, 0], [-0.9, -0.1, 0.0], atol=1e-9)
    np.testing.assert_allclose(volume.geometry.affine[:3, 1], [0.2, -1.1, 0.3], atol=1e-9)
    np.testing.assert_allclose(volume.geometry.affine[:3, 3], [-10.0, 20.0, 30.0], atol=1e-9)


def test_4d_nifti_with_trailing_singleton_is_squeezed(tmp_path: Path):
    data = _random_array(np.float32, (*SHAPE, 1))
    affine = AFFINES["flipped"]
    path = tmp_path / "vol4d.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    volume = read_volume(path)
    assert volume.array.shape == SHAPE
    np.testing.assert_array_equal(volume.array, data[..., 0])
    np.testing.assert_allclose(volume.geometry.affine, affine, atol=1e-5)


def test_4d_nifti_with_several_volumes_is_refused(tmp_path: Path):
    path = tmp_path / "vol4d.nii.gz"
    nib.save(nib.Nifti1Image(_random_array(np.float32, (*SHAPE, 2)), np.eye(4)), path)
    with pytest.raises(ImageReadError, match="dimensions"):
        read_volume(path)
    with pytest.raises(ImageReadError, match="dimensions"):
        read_geometry(path)


def test_nifti2_and_big_endian_nifti1_are_read(tmp_path: Path):
    data = _random_array(np.int16)
    affine = AFFINES["oblique"]
    nifti2 = tmp_path / "two.nii"
    nib.save(nib.Nifti2Image(data, affine), nifti2)
    big = tmp_path / "big.nii"
    nib.save(nib.Nifti1Image(data, affine, header=nib.Nifti1Header(endianness=">")), big)
    assert struct.unpack(">i", big.read_bytes()[:4])[0] == 348
    for path in (nifti2, big):
        assert sniff(path) == "nifti"
        volume = read_volume(path)
        np.testing.assert_array_equal(volume.array, data)
        np.testing.assert_allclose(volume.geometry.affine, affine, atol=1e-5)


# ------------------------------------------------------------------ sniff


def test_sniff_reads_content_not_name(tmp_path: Path):
    data = _random_array(np.int16)
    affine = AFFINES["flipped"]
    gz = tmp_path / "a.nii.gz"
    write_volume(gz, data, affine)
    noext = tmp_path / "upload"
    gz.rename(noext)
    assert sniff(noext) == "nifti-gz"
    np.testing.assert_array_equal(read_volume(noext).array, data)

    plain = tmp_path / "a.nii"
    write_volume(plain, data, affine)
    disguised = tmp_path / "a.nrrd"
    plain.rename(disguised)
    assert sniff(disguised) == "nifti"
    assert read_volume(disguised).format == "nifti"

    nrrd_file = tmp_path / "b.nrrd"
    write_volume(nrrd_file, data, affine)
    as_nii = tmp_path / "b.nii"
    nrrd_file.rename(as_nii)
    assert sniff(as_nii) == "nrrd"
    volume = read_volume(as_nii)
    assert volume.format == "nrrd"
    np.testing.assert_array_equal(volume.array, data)
    np.testing.assert_allclose(volume.geometry.affine, affine, atol=1e-6)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"hello world, this is a readme\n", "'hello world, thi'"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "89 50 4e 47 0d 0a 1a 0a"),
        (gzip.compress(b"just some text, no image here\n" * 30), "no NIfTI header"),
        (bytes(range(256)) * 4, "00 01 02 03"),
    ],
    ids=["empty", "text", "png", "gzip-text", "binary"],
)
def test_sniff_refuses_what_it_does_not_know_and_says_what_it_saw(
    tmp_path: Path, content: bytes, expected: str
):
    path = tmp_path / "scan.nii.gz"  # the name must not matter
    path.write_bytes(content)
    with pytest.raises(ImageFormatError) as info:
        sniff(path)
    assert expected in str(info.value)
    assert str(tmp_path) not in str(info.value)
    with pytest.raises(ImageFormatError):
        read_volume(path)
    with pytest.raises(ImageFormatError):
        read_geometry(path)


def test_a_broken_gzip_stream_is_a_damaged_file_not_an_unknown_format(tmp_path: Path):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"\x1f\x8b" + b"\x00garbage that is not deflate" * 4)
    with pytest.raises(ImageReadError, match="cannot be decompressed") as info:
        sniff(path)
    assert str(tmp_path) not in str(info.value)


def test_sniff_gzip_of_text_shows_the_decompressed_text(tmp_path: Path):
    path = tmp_path / "x"
    path.write_bytes(gzip.compress(b"id,label\n1,2\n" * 50))
    with pytest.raises(ImageFormatError, match="gzip") as info:
        sniff(path)
    assert "'id,label" in str(info.value)


def test_sniff_recognises_zip_and_bare_dicom(tmp_path: Path):
    archive = tmp_path / "series.bin"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert sniff(archive) == "zip"

    empty_zip = tmp_path / "empty"
    with zipfile.ZipFile(empty_zip, "w"):
        pass
    assert sniff(empty_zip) == "zip"

    dicom_copy = tmp_path / "IM0001"
    dicom_copy.write_bytes(Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes())
    assert sniff(dicom_copy) == "dicom"

    # A zip or a DICOM file is not a volume file: read_volume says so instead of guessing.
    for path in (archive, dicom_copy):
        with pytest.raises(ImageFormatError):
            read_volume(path)
        with pytest.raises(ImageFormatError):
            read_geometry(path)


def test_canonical_and_stripped_names():
    assert canonical_extension("nifti-gz") == ".nii.gz"
    assert canonical_extension("nifti", "x.nii.gz") == ".nii"
    assert canonical_extension("nrrd", "x.nrrd") == ".nrrd"
    assert canonical_extension("nrrd", "Case.SEG.NRRD") == ".seg.nrrd"
    assert canonical_extension("nrrd") == ".nrrd"
    assert canonical_extension("zip", "series.zip") == ".nii.gz"
    assert canonical_extension("dicom") == ".nii.gz"
    assert strip_extensions("case.001.nii.gz") == "case"
    assert strip_extensions("dir/sub/x.nrrd") == "x"
    assert strip_extensions("C:\\data\\y.nii") == "y"


# ------------------------------------------------------------------ broken files


SECRET = "secret-upload-7f3a"


def _assert_no_path(message: str, path: Path) -> None:
    assert str(path) not in message
    assert str(path.parent) not in message
    assert SECRET not in message


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti_is_a_read_error(tmp_path: Path, suffix: str):
    path = tmp_path / f"{SECRET}{suffix}"
    write_volume(path, _random_array(np.float32, (20, 20, 20)), AFFINES["oblique"])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError) as info:
        read_volume(path)
    _assert_no_path(str(info.value), path)


@pytest.mark.parametrize("encoding", ["gzip", "raw"])
def test_truncated_nrrd_is_a_read_error(tmp_path: Path, encoding: str):
    path = tmp_path / f"{SECRET}.nrrd"
    data = _random_array(np.float32, (20, 20, 20))
    _write_nrrd(
        path,
        data,
        {"space": "left-posterior-superior", "space directions": NRRD_DIRECTIONS, "encoding": encoding},
    )
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError) as info:
        read_volume(path)
    _assert_no_path(str(info.value), path)


def test_broken_nrrd_header_is_a_read_error(tmp_path: Path):
    path = tmp_path / f"{SECRET}.nrrd"
    path.write_bytes(b"NRRD0004\ntype: int16\ndimension: three\nsizes: 2 2 2\nencoding: raw\n\n" + bytes(16))
    for read in (read_volume, read_geometry):
        with pytest.raises(ImageReadError) as info:
            read(path)
        _assert_no_path(str(info.value), path)


def test_nifti_with_singular_affine_is_a_read_error(tmp_path: Path):
    path = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(_random_array(np.int16), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    raw[252:256] = struct.pack("<hh", 0, 1)  # qform_code 0, sform_code 1
    raw[312:328] = bytes(16)  # srow_z = 0: every voxel plane in one place
    path.write_bytes(bytes(raw))
    header = nib.load(path).header
    assert header["sform_code"] == 1 and not header["srow_z"].any()
    with pytest.raises(ImageReadError, match="orientation"):
        read_volume(path)


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


# ------------------------------------------------------------------ check_same_grid

GRID_SHAPE = (10, 12, 8)
GRID_AFFINE = _affine(_rotation(0.2, 0.1, -0.3), (0.8, 0.9, 2.5), (10.0, -20.0, 5.0))


def _grid(affine: np.ndarray = GRID_AFFINE, shape: tuple[int, int, int] = GRID_SHAPE) -> Geometry:
    return Geometry(shape=shape, affine=np.array(affine, dtype=np.float64))


def _scaled(factors: tuple[float, float, float]) -> np.ndarray:
    affine = GRID_AFFINE.copy()
    affine[:3, :3] = affine[:3, :3] * np.asarray(factors)
    return affine


def _rotated(angle: float) -> np.ndarray:
    affine = GRID_AFFINE.copy()
    affine[:3, :3] = _rotation(0.0, 0.0, angle) @ affine[:3, :3]
    return affine


def _shifted(mm: float) -> np.ndarray:
    affine = GRID_AFFINE.copy()
    affine[:3, 3] += mm * np.array([0.6, 0.0, 0.8])  # a unit vector
    return affine


def test_same_grid_passes():
    check_same_grid(_grid(), _grid())
    check_same_grid(_grid(), _grid(GRID_AFFINE.copy()))


@pytest.mark.parametrize(
    "label",
    [
        _grid(_scaled((1.0005, 1.0, 0.9995))),  # spacing within rtol 1e-3
        _grid(_rotated(2e-4)),  # direction within atol 1e-3
        _grid(_shifted(0.3)),  # origin within half the smallest voxel (0.4 mm)
    ],
    ids=["spacing", "direction", "origin"],
)
def test_small_differences_pass(label: Geometry):
    check_same_grid(_grid(), label)


@pytest.mark.parametrize(
    ("label", "word"),
    [
        (_grid(shape=(10, 12, 9)), "shape"),
        (_grid(shape=(12, 10, 8)), "shape"),
        (_grid(_scaled((1.0, 1.003, 1.0))), "spacing"),
        (_grid(_rotated(0.01)), "orientation"),
        (_grid(GRID_AFFINE @ np.diag([1.0, -1.0, 1.0, 1.0])), "orientation"),  # j flipped
        (_grid(_shifted(0.5)), "origin"),
        (_grid(_shifted(25.0)), "origin"),
    ],
    ids=["shape-k", "shape-swapped", "spacing", "rotated", "flipped", "origin-half-voxel", "origin-far"],
)
def test_grid_differences_are_refused(label: Geometry, word: str):
    with pytest.raises(GeometryMismatchError, match=word):
        check_same_grid(_grid(), label)


def test_tolerances_can_be_set():
    label = _grid(_shifted(0.5))
    check_same_grid(_grid(), label, origin_tol_voxels=1.0)
    with pytest.raises(GeometryMismatchError, match="spacing"):
        check_same_grid(_grid(), _grid(_scaled((1.0005, 1.0, 1.0))), spacing_rtol=1e-4)


def test_label_in_nrrd_lies_on_its_nifti_image_grid(tmp_path: Path):
    """Across formats (NIfTI RAS, NRRD LPS) the same grid reads back as the same grid."""
    write_volume(tmp_path / "image.nii.gz", _random_array(np.int16, GRID_SHAPE), GRID_AFFINE)
    write_volume(tmp_path / "label.seg.nrrd", _random_array(np.uint8, GRID_SHAPE), GRID_AFFINE)
    image, _ = read_geometry(tmp_path / "image.nii.gz")
    label, fmt = read_geometry(tmp_path / "label.seg.nrrd")
    assert fmt == "nrrd"
    check_same_grid(image, label)
    write_volume(tmp_path / "moved.nrrd", _random_array(np.uint8, GRID_SHAPE), _shifted(2.0))
    with pytest.raises(GeometryMismatchError, match="origin"):
        check_same_grid(image, read_geometry(tmp_path / "moved.nrrd")[0])


def test_geometry_properties_and_json_round_trip():
    geometry = _grid()
    assert geometry.spacing == pytest.approx((0.8, 0.9, 2.5))
    np.testing.assert_allclose(geometry.direction, _rotation(0.2, 0.1, -0.3), atol=1e-12)
    assert geometry.origin == pytest.approx((10.0, -20.0, 5.0))
    data = geometry.to_json()
    assert data["shape"] == list(GRID_SHAPE)
    assert data["spacing"] == pytest.approx([0.8, 0.9, 2.5])
    back = Geometry.from_json(data)
    assert back.shape == GRID_SHAPE
    np.testing.assert_allclose(back.affine, GRID_AFFINE)
    with pytest.raises(ValueError):
        Geometry.from_json({"shape": [1, 2], "affine": np.eye(4).tolist()})
