"""What is measured on a label map the server stores or hands out: each label's volume, lesion
count, centroid and box (``labelloop.measurements``), named and flagged with the app's labels.

The datastore does not know the app: the server passes its label names and lesions in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from labelloop.measurements import LabelMeasurements, measure_labels

__all__ = ["Measurer"]


@dataclass(frozen=True)
class Measurer:
    """Measures label maps with the app's label names.

    Attributes:
        labels: label name -> value; exactly these are measured, present or not (background, 0,
            never). ``None``: every value present, named ``label_<value>``.
        lesions: the names that are lesions; their entries say ``"lesion": true``, others false.
    """

    labels: Mapping[str, int] | None = None
    lesions: frozenset[str] = field(default_factory=frozenset)

    def measure(self, label: npt.NDArray[Any], affine: npt.ArrayLike) -> LabelMeasurements:
        """Measure ``label``, an ``(I, J, K)`` integer map on the grid of ``affine`` (voxel -> RAS mm)."""
        return measure_labels(label, affine, self.labels or None)

    def to_json(self, measured: LabelMeasurements) -> dict[str, Any]:
        """``LabelMeasurements.to_json()`` with ``"lesion": true | false`` in each label's entry:
        ``{"connectivity": 26, "voxel_volume_mm3": ..., "labels": {name: {"volume_ml", ...}}}``."""
        data = measured.to_json()
        for name, stats in data["labels"].items():
            stats["lesion"] = name in self.lesions
        return data

    def json_of(self, label: npt.NDArray[Any], affine: npt.ArrayLike) -> dict[str, Any]:
        """``to_json(measure(label, affine))``."""
        return self.to_json(self.measure(label, affine))
