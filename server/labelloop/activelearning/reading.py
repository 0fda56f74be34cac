"""Double reading: once ``reads`` annotators have labelled an image, measure their agreement and
store their majority vote as the image's final label."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np

from labelloop.datastore import DEFAULT_TAG, Datastore, LabelVersion
from labelloop.imaging import read_volume, write_volume

__all__ = ["complete_reads", "agreement"]

logger = logging.getLogger(__name__)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the label values present in either map (1.0 when both are empty)."""
    values = [int(v) for v in np.union1d(np.unique(a), np.unique(b)) if v != 0]
    if not values:
        return 1.0
    scores = [
        2.0 * float(np.logical_and(a == v, b == v).sum()) / float((a == v).sum() + (b == v).sum())
        for v in values
    ]
    return float(np.mean(scores))


def agreement(reads: list[LabelVersion]) -> dict[str, Any]:
    """Pairwise Dice between readers' labels and its mean."""
    arrays = {r.tag: np.asarray(read_volume(r.path).array) for r in reads}
    pairs = {
        f"{a}|{b}": round(_dice(arrays[a], arrays[b]), 4)
        for a, b in itertools.combinations(sorted(arrays), 2)
    }
    return {"dice": round(float(np.mean(list(pairs.values()))), 4) if pairs else None, "pairs": pairs}


def _majority(arrays: list[np.ndarray]) -> np.ndarray:
    """Per voxel, the label most readers gave; a tie goes to the earliest reader's label."""
    stack = np.stack(arrays)
    values = np.unique(stack)
    counts = np.stack([(stack == v).sum(axis=0) for v in values])  # (values, I, J, K)
    clear = (counts == counts.max(axis=0)).sum(axis=0) == 1
    out = arrays[0].copy()
    out[clear] = values[counts.argmax(axis=0)[clear]]
    return out


def complete_reads(datastore: Datastore, image_id: str, reads: int) -> dict[str, Any]:
    """If ``image_id`` has ``reads`` reader labels and no final one, store their consensus as final."""
    current = [v for v in datastore.labels.current() if v.image_id == image_id]
    readers = sorted((v for v in current if v.tag.startswith("read.")), key=lambda v: v.created_at)
    if len(readers) < reads or any(v.tag == DEFAULT_TAG for v in current):
        return {"reads": len(readers), "reads_needed": reads}
    measured = agreement(readers)
    consensus = _majority([np.asarray(read_volume(r.path).array) for r in readers])
    image = datastore.images.get(image_id)
    with datastore.blobs.scratch(".nii.gz") as path:
        write_volume(path, consensus.astype(np.uint8), image.geometry.affine)
        saved = datastore.labels.save(
            image_id,
            DEFAULT_TAG,
            path,
            filename=path.name,
            params={
                "consensus_of": [{"tag": r.tag, "version": r.version, "author": r.author} for r in readers],
                "agreement": measured,
                "method": "majority vote (ties: earliest reader)",
            },
            user="double-reading",
        )
    datastore.images.update_info(
        image_id,
        {"double_reading": {"reads": [r.tag for r in readers], "agreement": measured}},
        "double-reading",
    )
    logger.info("image %s completed by %d reads; agreement Dice %s", image_id, len(readers), measured["dice"])
    return {
        "reads": len(readers),
        "reads_needed": reads,
        "agreement": measured,
        "final_version": saved.version,
    }
