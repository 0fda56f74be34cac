"""Unit tests of labelloop.measurements.monai_centroids against MONAI Label's own algorithm."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.measurements import measure_labels, monai_centroids
from tests.support.imaging import make_affine, rotation

AFFINE = make_affine(rotation(0.3, 0.1, -0.2), (0.8, 0.8, 3.0), (-100.0, 20.0, 40.0))


def _reference(label: npt.NDArray[Any]) -> dict[str, list[str]]:
    """MONAI Label's centroids, as its code computes them (commit 058ddfc4 of Project-MONAI/MONAILabel):
    ``GetCentroidsd._get_centroids`` (sample-apps/radiology/lib/transforms/transforms.py, lines
    125-141) on the restored ``(1, I, J, K)`` prediction, then the merge in
    ``BasicInferTask.__call__`` (monailabel/tasks/infer/basic_infer.py, lines 358-365)."""
    pred = label[None]
    centroids = []
    for seg_class in np.unique(pred):
        c = {}
        if seg_class == 0:
            continue
        centre = []
        for indices in np.where(pred == seg_class):
            centre.append(np.average(indices).astype(int))
        c[f"label_{int(seg_class)}"] = [int(seg_class), centre[-3], centre[-2], centre[-1]]
        centroids.append(c)
    centroids_dict = {}
    for c in centroids:
        all_items = list(c.items())
        centroids_dict[all_items[0][0]] = [str(i) for i in all_items[0][1]]
    return centroids_dict


def test_centroids_match_monai_labels_format_and_values() -> None:
    rng = np.random.default_rng(7)
    label = np.zeros((40, 36, 20), dtype=np.uint8)
    label[3:17, 20:33, 1:9] = 1
    label[25:31, 2:5, 12:19] = 2
    label[rng.integers(0, 40, 50), rng.integers(0, 36, 50), rng.integers(0, 20, 50)] = 5  # scattered
    label[39, 35, 19] = 7  # a corner voxel: its mean index is exactly the last index
    ours = monai_centroids(measure_labels(label, AFFINE))
    reference = _reference(label)
    assert ours == reference
    assert ours["label_1"] == ["1", "9", "26", "4"]  # (3+16)/2 = 9.5 truncates to 9
    assert ours["label_7"] == ["7", "39", "35", "19"]
    assert json.loads(json.dumps(ours)) == ours


def test_centroids_are_keyed_by_value_even_when_the_app_names_the_labels() -> None:
    label = np.zeros((8, 8, 8), dtype=np.uint8)
    label[1:4, 1:4, 1:4] = 5
    measured = measure_labels(label, AFFINE, {"background": 0, "liver": 1, "lesion": 5})
    assert monai_centroids(measured) == {"label_5": ["5", "2", "2", "2"]}, "no entry for the absent liver"


def test_no_label_gives_no_centroids() -> None:
    assert monai_centroids(measure_labels(np.zeros((4, 4, 4), dtype=np.uint8), AFFINE)) == {}
