"""``/activelearning/``: the next image for an annotator, leased to them (MONAI Label section 2.4), plus
rankings, leases and double-reading agreement (ours)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Body, Path, Query, Request

from labelloop.api import schemas
from labelloop.api.audit import pending_audit
from labelloop.api.deps import STRICT_QUERY, PrincipalDep, ServicesDep, UserDep, lease_holder
from labelloop.api.proxy import proxied
from labelloop.api.schemas import ID_SCHEMA, errors
from labelloop.datastore import validate_id

__all__ = ["router"]

router = APIRouter(prefix="/activelearning", tags=["activelearning"], responses=schemas.AUTH_ERRORS)

ImageQuery = Annotated[str, Query(json_schema_extra=ID_SCHEMA)]
#: Strategy names are ids; another name is a 404.
StrategyPath = Annotated[str, Path(json_schema_extra=ID_SCHEMA)]


@router.get("/leases", summary="Open leases: who works on which image until when")
def open_leases(services: ServicesDep) -> list[schemas.LeaseRead]:
    return [schemas.lease(lease) for lease in services.activelearning.open_leases()]


@router.get(
    "/skips",
    summary='Images annotators skipped (next sample with {"skip": true}) and why, newest first',
    dependencies=[STRICT_QUERY],
    responses=errors(400, 422),
)
def skips(
    services: ServicesDep,
    since: Annotated[float | None, Query(ge=0, description="Only skips after this time (epoch s)")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> list[schemas.SkipRead]:
    return [schemas.skip(record) for record in services.activelearning.skips(since, limit)]


@router.delete(
    "/lease",
    summary="Give an image back before saving a final label",
    responses=errors(400, 404, 422),
)
def release(
    services: ServicesDep,
    principal: PrincipalDep,
    image: ImageQuery,
    client_id: Annotated[str | None, Query(max_length=256)] = None,
) -> dict[str, Any]:
    validate_id(image)
    services.activelearning.release(image, lease_holder(principal, client_id))
    return {}


@router.get(
    "/agreement",
    summary="Double reading: the readers' labels and their agreement on an image",
    responses=errors(400, 404, 422),
)
def agreement(services: ServicesDep, image: ImageQuery) -> dict[str, Any]:
    record = services.datastore.images.get(image)
    return dict(record.info.get("double_reading") or {"reads": [], "agreement": None})


@router.get(
    "/{strategy}/ranking",
    summary="The strategy's ranking: each image's score and why it ranks there",
    responses=errors(404, 422),
)
def ranking(
    services: ServicesDep,
    strategy: StrategyPath,
    limit: Annotated[int, Query(ge=1, le=10000)] = 50,
) -> list[schemas.RankRead]:
    return [schemas.rank(entry) for entry in services.activelearning.ranking(strategy, {}, limit)]


@router.post(
    "/{strategy}",
    summary='Lease the next image to annotate ({} when none is left); {"skip": true} skips the current one',
    description="A PACS series' `RetrieveURL` points at this server's DICOMweb proxy (`/proxy/dicom/wado`).",
    response_model_exclude_unset=True,
    # A body that is not JSON (400), too large (413), not an object or with a bad client_id (422).
    responses=errors(400, 404, 413, 422),
)
async def next_sample(
    services: ServicesDep,
    user: UserDep,
    principal: PrincipalDep,
    request: Request,
    strategy: StrategyPath,
    params: Annotated[dict[str, Any] | None, Body()] = None,
) -> schemas.NextSampleRead:
    params = dict(params or {})
    params["client_id"] = lease_holder(principal, params.get("client_id"))
    # The hand-out and its audit event commit together (one commit instead of two).
    pending = pending_audit(request.scope)
    handout = await anyio.to_thread.run_sync(
        partial(
            services.activelearning.next_sample,
            strategy,
            params,
            user,
            in_transaction=pending.record_in if pending is not None else None,
        )
    )
    answer = schemas.next_sample(strategy, handout)
    extra = answer.model_extra  # the image's info keys; the stored info keeps the PACS's own URL
    if extra is not None and isinstance(extra.get("RetrieveURL"), str):
        extra["RetrieveURL"] = proxied(services, request, extra["RetrieveURL"])
    return answer
