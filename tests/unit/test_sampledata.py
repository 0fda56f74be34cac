"""The sample-data package: synthetic cohort and the pyradiomics conversion (no network)."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import labelloop.sampledata as sampledata
from labelloop.errors import LabelloopError
from labelloop.imaging import check_same_grid, read_volume, write_volume
from labelloop.sampledata import (
    SYNTHETIC_LABELS,
    SampleDataError,
    build_sample_data,
    fetch_real,
    generate_synthetic,
)
from labelloop.sampledata.pyradiomics import REAL_CASES, SDIST_NAME, cached_sdist
from labelloop.sampledata.synthetic import TISSUES, SyntheticCase, generate_case, render_case

SMALL_SHAPE = (48, 48, 24)
SMALL_SPACING = (8.0, 8.0, 10.67)  # the same field of view as the default grid, coarser

# ---------------------------------------------------------------- synthetic


@pytest.fixture(scope="module")
def cases() -> list[SyntheticCase]:
    """Six default-size cases of seed 0 (about 0.1 s each)."""
    return [render_case(np.random.default_rng([0, i])) for i in range(6)]


def test_package_exports() -> None:
    assert sorted(sampledata.__all__) == sorted(
        ["build_sample_data", "generate_synthetic", "fetch_real", "SampleDataError", "SYNTHETIC_LABELS"]
    )
    assert issubclass(SampleDataError, LabelloopError)


def test_labels_match_the_radiology_app() -> None:
    assert SYNTHETIC_LABELS == {
        "background": 0,
        "liver": 1,
        "spleen": 2,
        "left kidney": 3,
        "right kidney": 4,
        "lesion": 5,
    }


def test_same_seed_gives_identical_arrays() -> None:
    a = generate_case(np.random.default_rng([5, 2]), SMALL_SHAPE, SMALL_SPACING)
    b = generate_case(np.random.default_rng([5, 2]), SMALL_SHAPE, SMALL_SPACING)
    c = generate_case(np.random.default_rng([5, 3]), SMALL_SHAPE, SMALL_SPACING)
    image, label, affine = b
    assert a[0].dtype == image.dtype == np.int16 and a[0].tobytes() == image.tobytes()
    assert a[1].dtype == label.dtype == np.uint8 and a[1].tobytes() == label.tobytes()
    assert a[2].tobytes() == affine.tobytes()
    assert a[0].tobytes() != c[0].tobytes()


def test_case_does_not_depend_on_cohort_size(tmp_path: Path) -> None:
    generate_synthetic(tmp_path / "one", 1, seed=3, labelled=0, shape=SMALL_SHAPE, spacing=SMALL_SPACING)
    generate_synthetic(tmp_path / "three", 3, seed=3, labelled=0, shape=SMALL_SHAPE, spacing=SMALL_SPACING)
    for name in ("synth_000.nii.gz", "groundtruth/synth_000.nii.gz"):
        one, three = read_volume(tmp_path / "one" / name), read_volume(tmp_path / "three" / name)
        assert one.array.tobytes() == three.array.tobytes()
        np.testing.assert_array_equal(one.geometry.affine, three.geometry.affine)


def test_dtypes_shape_and_centred_affine(cases: list[SyntheticCase]) -> None:
    case = cases[0]
    assert case.image.dtype == np.int16 and case.image.shape == (128, 128, 64)
    assert case.label.dtype == np.uint8 and case.label.shape == case.image.shape
    np.testing.assert_allclose(np.linalg.norm(case.affine[:3, :3], axis=0), [3.0, 3.0, 4.0])
    centre = case.affine @ np.array([63.5, 63.5, 31.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-6)


def test_every_case_has_all_organs_and_some_have_lesions(cases: list[SyntheticCase]) -> None:
    for case in cases:
        present = set(np.unique(case.label).tolist())
        assert {1, 2, 3, 4} <= present <= {0, 1, 2, 3, 4, 5}
        # structures several voxels thick, so a small UNet can learn them
        assert all(int((case.label == v).sum()) > 1000 for v in (1, 2, 3, 4))
    assert any(5 in np.unique(case.label) for case in cases)


def test_organs_sit_on_the_expected_side(cases: list[SyntheticCase]) -> None:
    for case in cases:
        x_mm = {v: _centroid_mm(case, case.label == v)[0] for v in (1, 2, 3, 4)}
        assert x_mm[1] > 20.0  # liver: patient's right is +x in RAS
        assert x_mm[2] < -20.0 and x_mm[3] < -20.0  # spleen, left kidney
        assert x_mm[4] > 20.0  # right kidney
        assert _centroid_mm(case, case.label == 2)[1] < 0.0  # spleen posterior


def test_hounsfield_units_are_plausible(cases: list[SyntheticCase]) -> None:
    for case in cases:
        image = case.image.astype(np.float64)
        assert image[case.tissue == TISSUES["air"]].mean() < -900
        assert image[case.tissue == TISSUES["bone"]].mean() > 300
        # the thin fat rim borders air, so blur pulls its mean down: compare its median
        assert -130 < np.median(image[case.tissue == TISSUES["fat"]]) < -70
        assert 40 < image[case.label == 1].mean() < 80
        assert 30 < image[case.label == 2].mean() < 70
        for kidney in (3, 4):
            assert 80 < image[case.label == kidney].mean() < 180
        if (case.label == 5).any():
            assert image[case.label == 5].mean() < image[case.label == 1].mean() - 15
        noise = image[case.tissue == TISSUES["liver"]].std()
        assert 8 < noise < 40  # noisy, not piecewise constant


def test_studies_folder_layout(tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    ids = generate_synthetic(
        tmp_path, 3, seed=0, labelled=2, progress=_record(calls), shape=SMALL_SHAPE, spacing=SMALL_SPACING
    )
    assert ids == ["synth_000", "synth_001", "synth_002"]
    assert calls[-1] == (3, 3, "synth_002")
    assert sorted(p.name for p in (tmp_path / "labels" / "final").iterdir()) == [
        "synth_000.nii.gz",
        "synth_001.nii.gz",
    ]
    for image_id in ids:
        image = read_volume(tmp_path / f"{image_id}.nii.gz")
        truth = read_volume(tmp_path / "groundtruth" / f"{image_id}.nii.gz")
        assert image.array.dtype == np.int16 and truth.array.dtype == np.uint8
        check_same_grid(image.geometry, truth.geometry)
    final = read_volume(tmp_path / "labels" / "final" / "synth_001.nii.gz")
    assert final.array.tobytes() == read_volume(tmp_path / "groundtruth" / "synth_001.nii.gz").array.tobytes()


def test_negative_counts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SampleDataError):
        generate_synthetic(tmp_path, -1, seed=0, labelled=0)


def test_build_sample_data_without_real_cases(tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    summary = build_sample_data(tmp_path, real=False, synthetic=2, labelled=5, progress=_record(calls))
    assert summary == {
        "synthetic": ["synth_000", "synth_001"],
        "real": [],
        "labelled": ["synth_000", "synth_001"],
    }
    assert calls[-1][:2] == (2, 2)
    readme = (tmp_path / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "pyradiomics" not in readme


# ---------------------------------------------------------------- pyradiomics conversion

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


# ---------------------------------------------------------------- helpers


def _record(calls: list[tuple[int, int, str]]) -> Callable[[int, int, str], None]:
    def progress(done: int, total: int, what: str) -> None:
        calls.append((done, total, what))

    return progress


def _centroid_mm(case: SyntheticCase, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    index = np.argwhere(mask).mean(axis=0)
    return np.asarray((case.affine @ np.append(index, 1.0))[:3], dtype=np.float64)
