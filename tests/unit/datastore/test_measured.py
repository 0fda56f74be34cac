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
def test_measuring_only_the_labels_box_gives_the_whole_maps_indices_and_millimetres(order: str) -> None:
    """The map is measured on the box of its labels: what comes back is in the whole map's voxel
    indices and RAS mm (checked against numpy on the whole map)."""
    label = _map(order)
    measured = Measurer(LABELS).measure(label, AFFINE)
    assert measured.names == ["liver", "spleen", "lesion"]
    voxel_ml = abs(np.linalg.det(AFFINE[:3, :3])) / 1000
    for stats in measured:
        where = np.argwhere(label == stats.value)
        centroid = where.mean(axis=0)
        assert stats.voxels == len(where)
        assert stats.volume_ml == pytest.approx(len(where) * voxel_ml, rel=1e-12)
        assert stats.centroid_ijk == pytest.approx(tuple(centroid), abs=1e-9)
        assert stats.centroid_ras_mm == pytest.approx(
            tuple(AFFINE[:3, :3] @ centroid + AFFINE[:3, 3]), abs=1e-9
        )
        assert stats.bbox is not None
        assert stats.bbox.ijk_min == tuple(where.min(axis=0)) and stats.bbox.ijk_max == tuple(
            where.max(axis=0)
        )
    assert measured["lesion"].components == 2
    assert measure_labels(label, AFFINE, LABELS) == measured


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
