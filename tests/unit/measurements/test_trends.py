"""Unit tests of labelloop.measurements.volume_changes: a patient's label volumes over studies."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest

from labelloop.errors import InvalidInputError
from labelloop.measurements import StudyVolumes, measure_labels, volume_changes


def test_three_timepoints_give_the_change_since_the_previous_study() -> None:
    studies = [
        StudyVolumes("s1", {"lesion": 2.0, "liver": 1500.0, "new": 0.0}, date(2024, 1, 10)),
        StudyVolumes("s2", {"lesion": 3.0, "liver": 1450.0, "new": 0.5}, date(2024, 4, 2)),
        StudyVolumes("s3", {"lesion": 1.5, "liver": 1450.0, "new": 0.0}, date(2024, 9, 30)),
    ]
    changes = volume_changes(studies)
    assert [c.study_id for c in changes] == ["s1", "s2", "s3"]
    first = changes[0].labels["lesion"]
    assert (first.volume_ml, first.previous_ml, first.change_ml, first.change_pct) == (2.0, None, None, None)
    second, third = changes[1].labels, changes[2].labels
    assert second["lesion"].change_ml == pytest.approx(1.0)
    assert second["lesion"].change_pct == pytest.approx(50.0)
    assert third["lesion"].previous_ml == 3.0
    assert third["lesion"].change_ml == pytest.approx(-1.5)
    assert third["lesion"].change_pct == pytest.approx(-50.0)
    assert second["liver"].change_pct == pytest.approx(-100 * 50 / 1500)
    assert third["liver"].change_ml == 0.0 and third["liver"].change_pct == 0.0
    assert second["new"].change_ml == pytest.approx(0.5)
    assert second["new"].change_pct is None, "no % growth from nothing"
    assert third["new"].change_pct == pytest.approx(-100.0)
    assert changes[2].to_json()["labels"]["lesion"] == {
        "volume_ml": 1.5,
        "previous_ml": 3.0,
        "change_ml": -1.5,
        "change_pct": -50.0,
    }
    assert changes[1].to_json()["acquired"] == "2024-04-02"


def test_a_label_not_measured_on_a_study_has_no_change_there() -> None:
    changes = volume_changes([StudyVolumes("a", {"liver": 10.0}), StudyVolumes("b", {"lesion": 1.0})])
    assert list(changes[0].labels) == ["liver", "lesion"]
    assert changes[1].labels["liver"].volume_ml is None and changes[1].labels["liver"].change_ml is None
    assert changes[1].labels["lesion"].previous_ml is None and changes[1].labels["lesion"].change_ml is None


def test_studies_out_of_time_order_or_bad_volumes_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="oldest first"):
        volume_changes(
            [
                StudyVolumes("late", {"x": 1.0}, date(2024, 5, 1)),
                StudyVolumes("early", {"x": 1.0}, date(2023, 5, 1)),
            ]
        )
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(InvalidInputError):
            volume_changes([StudyVolumes("a", {"x": bad})])
    assert volume_changes([]) == []


def test_growing_spheres_measured_on_three_studies_change_by_their_volumes() -> None:
    affine = np.diag([0.7, 0.9, 2.5, 1.0])
    shape = (80, 64, 24)
    ijk = np.indices(shape).reshape(3, -1).T * np.array([0.7, 0.9, 2.5])
    centre = (np.asarray(shape) - 1) / 2.0 * np.array([0.7, 0.9, 2.5])
    distance = np.linalg.norm(ijk - centre, axis=1).reshape(shape)
    studies = []
    for n, radius in enumerate((10.0, 15.0, 12.0)):
        label = (distance <= radius).astype(np.uint8) * 5
        volumes = measure_labels(label, affine, {"lesion": 5}).volumes_ml()
        studies.append(StudyVolumes(f"t{n}", volumes))
    changes = volume_changes(studies)

    def sphere_ml(r: float) -> float:
        return 4 / 3 * math.pi * r**3 / 1000

    growth = changes[1].labels["lesion"]
    assert growth.change_ml == pytest.approx(sphere_ml(15) - sphere_ml(10), rel=0.03)
    assert growth.change_pct == pytest.approx(100 * (1.5**3 - 1), rel=0.05)
    assert changes[2].labels["lesion"].change_ml == pytest.approx(sphere_ml(12) - sphere_ml(15), rel=0.03)
