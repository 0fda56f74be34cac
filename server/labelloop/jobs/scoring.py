"""Scoring jobs: per-image scores written into label info (``/scoring/``).

Built in: ``dice``, the Dice between an image's newest model output (tag ``original``) and
its ``final`` label: how much annotators had to change the pre-segmentation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from labelloop.datastore import DEFAULT_TAG, ORIGINAL_TAG, Datastore
from labelloop.imaging import read_volume
from labelloop.jobs.training import mean_dice

__all__ = ["SCORING_METHODS", "run_scoring"]

#: method -> description, as /info/ lists them
SCORING_METHODS: dict[str, dict[str, Any]] = {
    "dice": {
        "description": "Dice between each image's model output ('original') and its final label",
        "config": {},
    },
}


def _dice(
    datastore: Datastore, progress: Callable[[int, int, str], None], stop: threading.Event
) -> dict[str, Any]:
    originals = {label.image_id: label for label in datastore.labels.current(ORIGINAL_TAG)}
    finals = [label for label in datastore.labels.current(DEFAULT_TAG) if label.image_id in originals]
    scores: dict[str, Any] = {}
    for done, final in enumerate(finals, start=1):
        if stop.is_set():
            break
        original = originals[final.image_id]
        a = np.asarray(read_volume(final.path).array)
        b = np.asarray(read_volume(original.path).array)
        values = sorted(int(v) for v in np.union1d(np.unique(a), np.unique(b)) if v != 0)
        score = mean_dice(a, b, values) if a.shape == b.shape else None
        scores[final.image_id] = score
        datastore.labels.update_info(
            final.image_id,
            DEFAULT_TAG,
            {"dice": {"original": score, "original_version": original.version}},
            user="scoring",
        )
        progress(done, len(finals), final.image_id)
    return scores


def run_scoring(
    method: str, datastore: Datastore, progress: Callable[[int, int, str], None], stop: threading.Event
) -> dict[str, Any]:
    """Run scoring ``method`` over the datastore; returns ``{image_id: score}``."""
    if method == "dice":
        return _dice(datastore, progress, stop)
    raise ValueError(f"unknown scoring method {method!r}")
