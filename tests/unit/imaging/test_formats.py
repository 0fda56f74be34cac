"""Unit tests of labelloop.imaging.formats: content sniffing and file names."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from labelloop.errors import ImageFormatError, ImageReadError
from labelloop.imaging import (
    canonical_extension,
    read_geometry,
    read_volume,
    sniff,
    strip_extensions,
    write_volume,
)
from tests.support.imaging import AFFINES
from tests.support.imaging import random_array as _random_array

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


# ------------------------------------------------------------------ names


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


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("case.001.nii.gz", "case"),
        ("noext", "noext"),
        ("x.seg.nrrd", "x"),
        ("dir/x.nrrd", "x"),
        ("a/b/c.nii", "c"),
        ("C:\\uploads\\scan.nii.gz", "scan"),
    ],
)
def test_strip_extensions(name: str, expected: str):
    assert strip_extensions(name) == expected
