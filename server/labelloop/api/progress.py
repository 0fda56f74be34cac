"""``GET /datastore/progress``: the labelling's progress for curators (ours; the dashboard reads it).

The figures come from ``workflows.labelling_progress`` (the datastore's counts joined with active
learning's); this router only shapes them.
"""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel, Field

from labelloop.api import schemas
from labelloop.api.deps import STRICT_QUERY, ServicesDep
from labelloop.workflows import labelling_progress

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
    found = labelling_progress(
        services.datastore.db, by_client_id=not services.settings.auth.enabled, now=now
    )
    labels = found.labels
    return ProgressRead(
        ts=now,
        images=labels.images,
        labelled=labels.labelled,
        final=labels.finals,
        label_tags=labels.tags,
        annotators=[
            AnnotatorRead(
                name=a.name,
                labels_saved=a.labels,
                final_labels=a.finals,
                holding=a.holding,
                saved_leases=a.saved_leases,
                median_handout_to_save_s=a.median_handout_to_save_s,
            )
            for a in found.annotators
        ],
        finals_by_day=[
            FinalsDayRead(day_ts=d.day_ts, new=d.new, total=d.total) for d in labels.finals_by_day
        ],
    )
