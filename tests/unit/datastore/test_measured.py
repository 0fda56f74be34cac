"""The datastore's ``Measurer`` measures only the labels' box, yet gives what measuring the whole
map gives, with the app's lesions flagged."""

from __future__ import annotations

import numpy as np
import pytest

from labelloop.datastore import Measurer
from labelloop.measurements import measure_labels

LABELS = {"background": 0, "liver": 1, "spleen": 2, "lesion": 5}
#: Oblique, anisotropic, off the origin: a shifted crop must land on the same millimetres.
AFFINE = np.array(
    [[0.0, -0.9, 0.1, 40.0], [0.8, 0.0, 0.0, -12.0], [0.0, 0.05, 2.0, 7.5], [0.0, 0.0, 0.0, 1.0]]
)


def _map(order: str) -> np.ndarray:
    label = np.zeros((40, 36, 20), dtype=np.uint8, order="F" if order == "F" else "C")
    label[8:20, 10:30, 4:12] = 1
    label[22:27, 5:9, 14:18] = 2
    label[30:33, 25:28, 2:5] = 5  # two lesions, one voxel apart
    label[34:36, 29:31, 6:8] = 5
    return label


@pytest.mark.parametrize("order", ["C", "F"])
def test_measuring_the_labels_box_equals_measuring_the_whole_map(order: str) -> None:
    label = _map(order)
    whole = measure_labels(label, AFFINE, LABELS)
    cropped = Measurer(LABELS).measure(label, AFFINE)
    assert cropped.names == whole.names == ["liver", "spleen", "lesion"]
    for a, b in zip(cropped, whole, strict=True):
        assert (a.voxels, a.components, a.value) == (b.voxels, b.components, b.value)
        assert a.volume_ml == pytest.approx(b.volume_ml, rel=1e-12)
        assert a.largest_component_ml == pytest.approx(b.largest_component_ml, rel=1e-12)
        assert a.centroid_ijk == pytest.approx(b.centroid_ijk, abs=1e-9)
        assert a.centroid_ras_mm == pytest.approx(b.centroid_ras_mm, abs=1e-9)
        assert a.bbox is not None and b.bbox is not None
        assert (a.bbox.ijk_min, a.bbox.ijk_max) == (b.bbox.ijk_min, b.bbox.ijk_max)
        assert a.bbox.ras_min_mm == pytest.approx(b.bbox.ras_min_mm, abs=1e-9)
        assert a.bbox.ras_max_mm == pytest.approx(b.bbox.ras_max_mm, abs=1e-9)
    assert whole["lesion"].components == 2


def test_an_empty_map_and_unnamed_values_measure_as_the_package_does() -> None:
    empty = np.zeros((8, 8, 4), dtype=np.uint8)
    assert Measurer(LABELS).measure(empty, AFFINE) == measure_labels(empty, AFFINE, LABELS)
    label = _map("C")
    assert Measurer().measure(label, AFFINE).names == ["label_1", "label_2", "label_5"]


def test_the_json_flags_the_lesions() -> None:
    data = Measurer(LABELS, frozenset({"lesion"})).json_of(_map("C"), AFFINE)
    assert {name: entry["lesion"] for name, entry in data["labels"].items()} == {
        "liver": False,
        "spleen": False,
        "lesion": True,
    }
    assert data["labels"]["lesion"]["components"] == 2 and data["connectivity"] == 26
