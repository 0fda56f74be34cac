"""MONAI Label's ``centroids`` in ``/infer``'s params, from our measurements.

The reference (Project-MONAI/MONAILabel, ``sample-apps/radiology/lib/transforms/transforms.py``,
``GetCentroidsd._get_centroids``) takes, for each value of the restored prediction other than 0,
``np.average`` of each voxel-index array of ``np.where(label == value)`` truncated with
``astype(int)``, and keeps ``{"label_<value>": [value, i, j, k]}``; ``monailabel/tasks/infer/
basic_infer.py`` (``BasicInferTask.__call__``) then merges the list into one dict and turns every
number into a string "making it json compatible". What a client reads is therefore::

    "centroids": {"label_1": ["1", "120", "88", "41"], "label_5": ["5", "97", "130", "38"]}

with voxel indices ``(i, j, k)`` of the original image (not millimetres), and ``{}`` when no
label was found. OHIF v3's MONAI Label panel reads it to jump to a segment.
"""

from __future__ import annotations

import math

from labelloop.measurements.label_stats import LabelMeasurements, unnamed_label

__all__ = ["monai_centroids"]


def monai_centroids(measurements: LabelMeasurements) -> dict[str, list[str]]:
    """``{"label_<value>": ["<value>", "<i>", "<j>", "<k>"]}`` for each label with voxels.

    ``i, j, k`` is the label's mean voxel index, truncated as the reference does (``astype(int)``
    of non-negative means is ``floor``). Keys use the label's value, not its name, as the
    reference's do; absent labels are left out, so an empty result is ``{}``.
    """
    centroids: dict[str, list[str]] = {}
    for stats in measurements.labels:
        if stats.centroid_ijk is None:
            continue
        centre = [str(math.floor(c)) for c in stats.centroid_ijk]
        centroids[unnamed_label(stats.value)] = [str(stats.value), *centre]
    return centroids
