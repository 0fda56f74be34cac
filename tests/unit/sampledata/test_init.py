"""Unit tests of the labelloop.sampledata package itself: its exports and ``build_sample_data``."""

from __future__ import annotations

from pathlib import Path

import labelloop.sampledata as sampledata
from labelloop.errors import LabelloopError
from labelloop.sampledata import SampleDataError, build_sample_data
from tests.support.progress import record as _record


def test_package_exports() -> None:
    assert sorted(sampledata.__all__) == sorted(
        ["build_sample_data", "generate_synthetic", "fetch_real", "SampleDataError", "SYNTHETIC_LABELS"]
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
