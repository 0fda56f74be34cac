"""``GET /datastore/pacs``: how the PACS link stands (ours): the last refresh, the series that
cannot be used and why, and the SEGs that did not make it either way (write-backs waiting or
refused, SEGs of the PACS that were not imported)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from labelloop.api import schemas
from labelloop.api.deps import STRICT_QUERY, ServicesDep
from labelloop.errors import FeatureDisabledError

__all__ = ["router"]

router = APIRouter(tags=["datastore"], responses=schemas.AUTH_ERRORS)


class SkippedSeriesRead(BaseModel):
    series_uid: str
    study_uid: str
    instances: int | None = Field(description="Instances it had; it is looked at again when this changes")
    reason: str
    first_seen: float
    last_seen: float


class PacsSegRead(BaseModel):
    """A SEG written back (``direction`` out: pending, stored, failed) or read (in: imported, skipped)."""

    seg_sop_instance_uid: str
    seg_series_uid: str
    direction: str
    state: str
    image: str | None
    tag: str | None
    version: int | None
    attempts: int
    reason: str | None
    created_at: float
    updated_at: float
    next_attempt_at: float | None = Field(description="A pending write-back's next try, epoch seconds")


class PacsRead(BaseModel):
    url: str
    last_refresh: dict[str, Any] | None = Field(
        description="This server's last refresh; null before the first"
    )
    skipped_series: list[SkippedSeriesRead]
    segs: dict[str, dict[str, int]] = Field(
        description='Counts: {"out": {"pending", "stored", "failed"}, "in": {"imported", "skipped"}}'
    )
    attention: list[PacsSegRead] = Field(description="SEGs pending, refused or not imported, newest first")


@router.get(
    "/datastore/pacs",
    summary="The PACS link: last refresh, unusable series, SEG write-backs and imports needing attention",
    dependencies=[STRICT_QUERY],
    responses=schemas.errors(400, 406),
)
def pacs_status(services: ServicesDep) -> PacsRead:
    if services.pacs is None or not services.settings.studies:
        raise FeatureDisabledError("No PACS is connected (--studies http://.../dicom-web)")
    segs = services.datastore.segs
    last = services.pacs.last_refresh
    return PacsRead(
        url=services.settings.studies,
        last_refresh=last.as_dict() if last is not None else None,
        skipped_series=[SkippedSeriesRead(**vars(s)) for s in segs.skipped_series().values()],
        segs=segs.counts(),
        attention=[PacsSegRead(**r.as_dict()) for r in segs.attention()],
    )
