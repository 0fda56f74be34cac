"""Unit tests of the studies-folder source's pure helpers: image ids from a studies folder's file names."""

from __future__ import annotations

import pytest

from labelloop.datastore import studies_id

# ------------------------------------------------------------------ names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("case.001.nii.gz", "case.001"),
        ("x.seg.nrrd", "x"),
        ("x.nrrd", "x"),
        ("x.nii", "x"),
        ("spleen_10.nii.gz", "spleen_10"),
        ("Upper.NII.GZ", "Upper"),
        ("x.txt", None),
        ("x.nii.gz.bak", None),
        ("noext", None),
        (".nii.gz", None),
    ],
)
def test_studies_id(name: str, expected: str | None):
    assert studies_id(name) == expected
