"""Unit tests of labelloop.sampledata.pyradiomics: converting pyradiomics' sample cases (no network)."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from labelloop.imaging import read_volume, write_volume
from labelloop.sampledata import SampleDataError, fetch_real
from labelloop.sampledata.pyradiomics import REAL_CASES, SDIST_NAME, cached_sdist
from tests.support.progress import record as _record

_AFFINES = {
    "lung1": np.array([[-0.57, 0, 0, 170.0], [0, -0.57, 0, 180.0], [0, 0, 5.0, -650.0], [0, 0, 0, 1]]),
    # brain1/brain2 have direction diag(1, -1, 1) in LPS
    "brain1": np.array([[-0.78, 0, 0, 99.0], [0, 0.78, 0, -99.0], [0, 0, 6.5, -75.0], [0, 0, 0, 1]]),
}


def _fake_sdist(
    tmp_path: Path,
    *,
    cases: tuple[str, ...] = REAL_CASES,
    label_affine: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]] = lambda a: a,
) -> tuple[Path, dict[str, tuple[npt.NDArray[np.int16], npt.NDArray[np.int16], npt.NDArray[np.float64]]]]:
    """A tar.gz laid out like the pyradiomics sdist, with tiny NRRD pairs; returns it and its arrays."""
    data_dir = tmp_path / "src" / "pyradiomics-3.0.1" / "data"
    data_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for n, case in enumerate(cases):
        affine = _AFFINES.get(case, np.diag([0.7, 0.7, 2.0 + n, 1.0]))
        image = rng.integers(-1000, 1000, size=(6, 5, 4), dtype=np.int16)
        label = np.zeros((6, 5, 4), dtype=np.int16)
        label[1:3, 2:4, 1:3] = 1
        label[4, 0, 0] = 2
        write_volume(data_dir / f"{case}_image.nrrd", image, affine)
        write_volume(data_dir / f"{case}_label.nrrd", label, label_affine(affine))
        written[case] = (image, label, affine)
    sdist = tmp_path / SDIST_NAME
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(tmp_path / "src" / "pyradiomics-3.0.1", arcname="pyradiomics-3.0.1")
    return sdist, written


def test_fake_sdist_is_converted_with_its_geometry(tmp_path: Path) -> None:
    sdist, written = _fake_sdist(tmp_path)
    calls: list[tuple[int, int, str]] = []
    out = tmp_path / "out"
    assert fetch_real(out, sdist=sdist, verify=False, progress=_record(calls)) == list(REAL_CASES)
    assert calls[-1] == (5, 5, "breast1")
    for case, (image, label, affine) in written.items():
        converted = read_volume(out / f"{case}.nii.gz")
        reference = read_volume(out / "labels" / "reference" / f"{case}.nii.gz")
        assert converted.array.dtype == np.int16
        np.testing.assert_array_equal(converted.array, image)
        np.testing.assert_allclose(converted.geometry.affine, affine, atol=1e-5)
        assert reference.array.dtype == np.uint8
        np.testing.assert_array_equal(reference.array, np.where(label != 0, 5, 0))
        np.testing.assert_array_equal(reference.geometry.affine, converted.geometry.affine)


def test_wrong_sha256_is_refused_and_the_local_file_kept(tmp_path: Path) -> None:
    sdist, _ = _fake_sdist(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(SampleDataError, match="sha256"):
        fetch_real(out, sdist=sdist)
    assert sdist.is_file()
    assert not (out / "lung1.nii.gz").exists()


def test_missing_local_sdist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SampleDataError, match="cannot be read"):
        fetch_real(tmp_path / "out", sdist=tmp_path / SDIST_NAME)


def test_skipping_the_check_needs_a_local_sdist(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        fetch_real(tmp_path, cache_dir=tmp_path, verify=False)


def test_missing_case_in_the_archive_is_an_error(tmp_path: Path) -> None:
    sdist, _ = _fake_sdist(tmp_path, cases=("lung1", "lung2"))
    with pytest.raises(SampleDataError, match="brain1"):
        fetch_real(tmp_path / "out", sdist=sdist, verify=False)


def test_label_off_its_image_grid_is_an_error(tmp_path: Path) -> None:
    def shifted(affine: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        moved = affine.copy()
        moved[:3, 3] += 10.0
        return moved

    sdist, _ = _fake_sdist(tmp_path, label_affine=shifted)
    with pytest.raises(SampleDataError, match="lung1"):
        fetch_real(tmp_path / "out", sdist=sdist, verify=False)


def test_cached_sdist_downloads_once_and_verifies(tmp_path: Path) -> None:
    content = b"pretend sdist"
    good = hashlib.sha256(content).hexdigest()
    downloads: list[Path] = []

    def download(dest: Path) -> Path:
        downloads.append(dest)
        (dest / SDIST_NAME).write_bytes(content)
        return dest / SDIST_NAME

    def no_network(dest: Path) -> Path:
        raise AssertionError("the cached file should have been used")

    cache = tmp_path / "cache"
    assert cached_sdist(cache, download=download, sha256=good).read_bytes() == content
    assert cached_sdist(cache, download=no_network, sha256=good) == cache / SDIST_NAME
    assert len(downloads) == 1

    (cache / SDIST_NAME).write_bytes(b"corrupted")
    assert cached_sdist(cache, download=download, sha256=good).read_bytes() == content
    assert len(downloads) == 2


def test_cached_sdist_deletes_a_download_with_the_wrong_sha256(tmp_path: Path) -> None:
    def download(dest: Path) -> Path:
        (dest / SDIST_NAME).write_bytes(b"tampered")
        return dest / SDIST_NAME

    cache = tmp_path / "cache"
    with pytest.raises(SampleDataError, match="sha256"):
        cached_sdist(cache, download=download, sha256="0" * 64)
    assert list(cache.iterdir()) == []
