"""Unit tests of the labelloop.sampledata package itself: its exports and ``build_sample_data``."""

from __future__ import annotations

from pathlib import Path

import pytest

import labelloop.sampledata as sampledata
from labelloop.errors import LabelloopError
from labelloop.sampledata import SampleDataError, build_sample_data
from tests.support.progress import record as _record


def test_package_exports() -> None:
    assert sorted(sampledata.__all__) == sorted(
        [
            "build_sample_data",
            "generate_synthetic",
            "fetch_real",
            "OTHER",
            "SampleDataError",
            "SYNTHETIC_LABELS",
        ]
    )
    assert issubclass(SampleDataError, LabelloopError)


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


def test_real_cases_go_to_a_studies_folder_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17, item 4: the radiology app's studies hold only cases it can label."""
    from labelloop.sampledata import OTHER
    from labelloop.sampledata.pyradiomics import REAL_CASES
    from tests.unit.sampledata.test_pyradiomics import _fake_sdist

    sdist, _ = _fake_sdist(tmp_path / "sdist")
    real_fetch = sampledata.fetch_real
    monkeypatch.setattr(
        sampledata, "fetch_real", lambda out, **kw: real_fetch(out, sdist=sdist, verify=False)
    )
    # A folder of the older layout: a real case next to the synthetic ones.
    (tmp_path / "out" / "labels" / "reference").mkdir(parents=True)
    (tmp_path / "out" / "lung1.nii.gz").write_bytes(b"old")
    (tmp_path / "out" / "labels" / "reference" / "lung1.nii.gz").write_bytes(b"old")
    summary = build_sample_data(tmp_path / "out", real=True, synthetic=2)
    assert summary["real"] == list(REAL_CASES)
    top = sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz"))
    assert top == ["synth_000.nii.gz", "synth_001.nii.gz"], "only the abdominal cases are at the top"
    assert list((tmp_path / "out" / "labels" / "reference").iterdir()) == []
    other = tmp_path / "out" / OTHER
    assert sorted(p.name for p in other.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in REAL_CASES)
    assert (other / "labels" / "reference" / "lung1.nii.gz").is_file()
    assert f"{OTHER}/" in (tmp_path / "out" / "README.txt").read_text()
