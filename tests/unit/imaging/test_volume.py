"""Unit tests of labelloop.imaging.volume: NIfTI/NRRD reading and writing, their geometry, broken files.

All volumes here are synthetic (generated in the test).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pytest

from labelloop.errors import ImageFormatError, ImageReadError
from labelloop.imaging import Geometry, read_geometry, read_volume, sniff, write_volume
from tests.support.imaging import AFFINES, GRID_AFFINE, GRID_SHAPE, SECRET, SHAPE
from tests.support.imaging import assert_no_path as _assert_no_path
from tests.support.imaging import grid as _grid
from tests.support.imaging import random_array as _random_array
from tests.support.imaging import rotation as _rotation
from tests.support.imaging import world as _world

NAN = float("nan")


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


# ------------------------------------------------------------------ broken files


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


# ------------------------------------------------------------------ Geometry


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
