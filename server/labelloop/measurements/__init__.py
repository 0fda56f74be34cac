"""Measurements of label maps: volumes, lesion counts, centroids, bounding boxes, and their trends.

Pure functions of arrays (numpy and scipy only): label maps are ``(I, J, K)`` with a ``(4, 4)``
voxel -> RAS mm affine (``labelloop.imaging``'s conventions); units are in the names (``_ml``,
``_mm``, ``_mm3``, ``_pct``; ``_ijk`` is voxel indices).
"""

from labelloop.measurements.centroids import monai_centroids
from labelloop.measurements.label_stats import (
    BoundingBox,
    Connectivity,
    LabelMeasurements,
    LabelStats,
    measure_labels,
    unnamed_label,
    voxel_volume_mm3,
)
from labelloop.measurements.trends import StudyChange, StudyVolumes, VolumeChange, volume_changes

__all__ = [
    "BoundingBox",
    "Connectivity",
    "LabelMeasurements",
    "LabelStats",
    "StudyChange",
    "StudyVolumes",
    "VolumeChange",
    "measure_labels",
    "monai_centroids",
    "unnamed_label",
    "voxel_volume_mm3",
    "volume_changes",
]
