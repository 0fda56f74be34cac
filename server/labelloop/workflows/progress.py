"""The labelling's progress per annotator: what the datastore counts (labels saved) joined with what
active learning counts (cases held, time from hand-out to save).

An annotator is one name in both: the user who saved and the lease holder, which is the logged-in
user, or with auth off the ``client_id`` the client sent (else the server's user), as for leases.
"""

from __future__ import annotations

from dataclasses import dataclass

from labelloop.activelearning import lease_progress
from labelloop.datastore import LabelProgress, label_progress
from labelloop.db import Database

__all__ = ["AnnotatorProgress", "LabellingProgress", "labelling_progress"]


@dataclass(frozen=True)
class AnnotatorProgress:
    """One annotator's work: label versions saved (``finals`` of them final), cases held now,
    leases they finished with a final label, and the median seconds from hand-out to that save
    (``None`` before the first)."""

    name: str
    labels: int
    finals: int
    holding: int
    saved_leases: int
    median_handout_to_save_s: float | None


@dataclass(frozen=True)
class LabellingProgress:
    """The catalogue's figures and every annotator's, most labels saved first (then lease holders
    who saved nothing yet, by name)."""

    labels: LabelProgress
    annotators: list[AnnotatorProgress]


def labelling_progress(db: Database, *, by_client_id: bool, now: float) -> LabellingProgress:
    """Both services' aggregate queries on ``db`` (each costs the same with 100 or 100,000 images)."""
    labels = label_progress(db, by_client_id=by_client_id)
    holders = {work.holder: work for work in lease_progress(db, now)}
    authors = {work.annotator: work for work in labels.authors}
    annotators = []
    for name in [*authors, *sorted(holders.keys() - authors.keys())]:
        author, holder = authors.get(name), holders.get(name)
        annotators.append(
            AnnotatorProgress(
                name=name,
                labels=author.labels if author else 0,
                finals=author.finals if author else 0,
                holding=holder.holding if holder else 0,
                saved_leases=holder.saved if holder else 0,
                median_handout_to_save_s=holder.median_s if holder else None,
            )
        )
    return LabellingProgress(labels, annotators)
