"""Double reading: once ``reads`` annotators have labelled an image, measure their agreement and
store their majority vote as the image's final label."""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelloop.datastore import DEFAULT_TAG, Datastore, LabelFile, LabelVersion, Provenance
from labelloop.errors import LabelConflictError
from labelloop.imaging import read_volume, write_volume

__all__ = ["CONSENSUS_AUTHOR", "READ_PREFIX", "ReadsOutcome", "agreement", "complete_reads", "reader_tag"]

logger = logging.getLogger(__name__)

#: Reader labels are saved under ``read.<holder>``; the consensus under ``final``, by this author.
READ_PREFIX = "read."
CONSENSUS_AUTHOR = "double-reading"

_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def reader_tag(holder: str) -> str:
    """The tag a double-reading annotator's labels are saved under: ``read.<holder>``."""
    return (READ_PREFIX + _TAG_UNSAFE.sub("_", holder))[:128]


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


@dataclass(frozen=True)
class ReadsOutcome:
    """Where an image stands in double reading after a read was saved.

    Attributes:
        reads: readers' labels saved so far.
        reads_needed: how many make the image complete.
        agreement: ``{"dice": mean pairwise Dice, "pairs": {"a|b": Dice}}`` once complete.
        final_version: the version of the consensus ``final`` label, once stored.
    """

    reads: int
    reads_needed: int
    agreement: dict[str, Any] | None = None
    final_version: int | None = None


def complete_reads(datastore: Datastore, image_id: str, reads: int) -> ReadsOutcome:
    """If ``image_id`` has ``reads`` reader labels and no final one, store their consensus as final.

    The consensus label and the image's ``double_reading`` info are one transaction, and the save
    is refused if a final label appeared meanwhile (two last reads at once), so an image gets one
    consensus. Safe to call again: an image that already has a final label is left alone.
    """
    current = [v for v in datastore.labels.current() if v.image_id == image_id]
    readers = sorted((v for v in current if v.tag.startswith(READ_PREFIX)), key=lambda v: v.created_at)
    if len(readers) < reads or any(v.tag == DEFAULT_TAG for v in current):
        return ReadsOutcome(len(readers), reads)
    measured = agreement(readers)
    consensus = _majority([np.asarray(read_volume(r.path).array) for r in readers])
    image = datastore.images.get(image_id)
    provenance = Provenance(
        author=CONSENSUS_AUTHOR,
        params={
            "consensus_of": [{"tag": r.tag, "version": r.version, "author": r.author} for r in readers],
            "agreement": measured,
            "method": "majority vote (ties: earliest reader)",
        },
    )
    info = {"double_reading": {"reads": [r.tag for r in readers], "agreement": measured}}
    with datastore.blobs.scratch(".nii.gz") as path:
        write_volume(path, consensus.astype(np.uint8), image.geometry.affine)
        try:
            saved = datastore.labels.save(
                image_id,
                DEFAULT_TAG,
                LabelFile(path, disposable=True),
                provenance,
                create_only=True,
                in_transaction=lambda conn, _: datastore.images.update_info_in(
                    conn, image_id, info, CONSENSUS_AUTHOR
                ),
            )
        except LabelConflictError:
            logger.info("image %s: another save completed its reads first", image_id)
            return ReadsOutcome(len(readers), reads)
    logger.info("image %s completed by %d reads; agreement Dice %s", image_id, len(readers), measured["dice"])
    return ReadsOutcome(len(readers), reads, measured, saved.version)
