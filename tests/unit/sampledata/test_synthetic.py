"""Unit tests of labelloop.sampledata.synthetic: the synthetic CT cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from labelloop.imaging import check_same_grid, read_volume
from labelloop.sampledata import SYNTHETIC_LABELS, SampleDataError, generate_synthetic
from labelloop.sampledata.synthetic import TISSUES, SyntheticCase, generate_case, render_case
from tests.support.progress import record as _record

SMALL_SHAPE = (48, 48, 24)


SMALL_SPACING = (8.0, 8.0, 10.67)  # the same field of view as the default grid, coarser


@pytest.fixture(scope="module")
def cases() -> list[SyntheticCase]:
    """Six default-size cases of seed 0 (about 0.1 s each)."""
    return [render_case(np.random.default_rng([0, i])) for i in range(6)]


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


# ---------------------------------------------------------------- helpers


def _centroid_mm(case: SyntheticCase, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    index = np.argwhere(mask).mean(axis=0)
    return np.asarray((case.affine @ np.append(index, 1.0))[:3], dtype=np.float64)
