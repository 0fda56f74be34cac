"""``GET /datastore/progress``: the labelling's progress for curators (ours; the dashboard reads it).

The datastore counts images and labels (per tag, per author, final labels per day); active
learning counts leases (cases held now, time from hand-out to save). Both are aggregate queries,
so the answer costs the same with 100 or 100,000 images. An annotator is one name: the user who
saved and the lease holder: the logged-in user, or with auth off the ``client_id`` the client sent
(else the server's user), as for leases.
"""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel, Field

from labelloop.activelearning import lease_progress
from labelloop.api import schemas
from labelloop.api.deps import STRICT_QUERY, ServicesDep
from labelloop.datastore import label_progress

__all__ = ["router"]

router = APIRouter(tags=["datastore"], responses=schemas.AUTH_ERRORS)


class AnnotatorRead(BaseModel):
    """One annotator's work."""

    name: str
    labels_saved: int = Field(description="Label versions they saved (any tag; imports are nobody's)")
    final_labels: int = Field(description="Of those, versions of the final tag")
    holding: int = Field(description="Cases leased to them now")
    saved_leases: int = Field(description="Hand-outs they finished with a final label")
    median_handout_to_save_s: float | None = Field(
        description="Median seconds from a hand-out to the save that finished it; null before the first"
    )


class FinalsDayRead(BaseModel):
    """Images whose first final label was saved on one UTC day."""

    day_ts: int = Field(description="The day's start, epoch seconds (UTC)")
    new: int
    total: int = Field(description="Images with a final label up to the end of that day")


class ProgressRead(BaseModel):
    """The labelling's progress; ``final`` and ``label_tags`` equal ``GET /datastore/?output=stats``."""

    ts: float = Field(description="When it was read, epoch seconds")
    images: int
    labelled: int = Field(description="Images with a label of any tag but a model's 'original'")
    final: int = Field(description="Images with a final label (MONAI Label's 'completed')")
    label_tags: dict[str, int]
    annotators: list[AnnotatorRead] = Field(description="Most labels saved first")
    finals_by_day: list[FinalsDayRead] = Field(description="Oldest first; days without a new one left out")


@router.get(
    "/datastore/progress",
    summary="Labelling progress: images, labelled, final, per tag, per annotator, final labels per day",
    dependencies=[STRICT_QUERY],
    responses=schemas.errors(400),
)
def progress(services: ServicesDep) -> ProgressRead:
    now = time.time()
    labels = label_progress(services.datastore.db, by_client_id=not services.settings.auth.enabled)
    holders = {work.holder: work for work in lease_progress(services.datastore.db, now)}
    authors = {work.annotator: work for work in labels.authors}
    names = [*authors, *sorted(holders.keys() - authors.keys())]
    annotators = []
    for name in names:
        author, holder = authors.get(name), holders.get(name)
        annotators.append(
            AnnotatorRead(
                name=name,
                labels_saved=author.labels if author else 0,
                final_labels=author.finals if author else 0,
                holding=holder.holding if holder else 0,
                saved_leases=holder.saved if holder else 0,
                median_handout_to_save_s=holder.median_s if holder else None,
            )
        )
    return ProgressRead(
        ts=now,
        images=labels.images,
        labelled=labels.labelled,
        final=labels.finals,
        label_tags=labels.tags,
        annotators=annotators,
        finals_by_day=[
            FinalsDayRead(day_ts=d.day_ts, new=d.new, total=d.total) for d in labels.finals_by_day
        ],
    )
