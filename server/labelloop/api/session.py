"""``/session/``: temporary server-side images for clients whose volume is not in the datastore (§2.8)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile
from fastapi import Path as PathParam

from labelloop.api import schemas
from labelloop.api.deps import ServicesDep, UserDep, octet_stream, spooled_uploads
from labelloop.api.files import download
from labelloop.datastore.sessions import SessionStore
from labelloop.errors import FeatureDisabledError

__all__ = ["router"]

router = APIRouter(prefix="/session", tags=["session"], responses=schemas.AUTH_ERRORS)

#: Session ids are UUIDs the server made; any other string is a 400 (``validate_id``) or a 404.
SessionPath = Annotated[str, PathParam(json_schema_extra={"maxLength": 64})]


def _store(services: ServicesDep) -> SessionStore:
    if not services.settings.sessions.enabled:
        raise FeatureDisabledError("Session Feature is Not Enabled")
    return services.datastore.sessions


@router.put(
    "/",
    summary="Create a session from one image file, a zipped DICOM series, or DICOM slices",
    responses=schemas.errors(400, 406, 413, 415, 422, 429, 503, 507),
)
def create_session(
    services: ServicesDep,
    user: UserDep,
    files: Annotated[list[UploadFile], File()],
    uncompress: Annotated[bool, Query()] = False,
    expiry: Annotated[int, Query(le=schemas.MAX_INT)] = 0,
) -> dict[str, Any]:
    store = _store(services)
    with spooled_uploads(services.datastore, files) as spooled:
        record = store.create(spooled, uncompress=uncompress, expiry=expiry, user=user)
    return {"session_id": record.id, "session_info": store.info(record)}


@router.get(
    "/{session_id}",
    summary="Session info, or its image with ?image=true",
    responses={
        200: {
            "description": "The session's info (JSON), or with image=true its image file",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **schemas.errors(400, 404, 406, 422, 503),
    },
)
def get_session(
    services: ServicesDep,
    session_id: SessionPath,
    update_ts: Annotated[bool, Query()] = False,
    image: Annotated[bool, Query()] = False,
) -> Any:
    store = _store(services)
    record = store.get(session_id, touch=update_ts)
    if image:
        return octet_stream(download(record.image_path, record.image_name))
    return store.info(record)


@router.delete(
    "/{session_id}", summary="Remove a session and its files", responses=schemas.errors(400, 404, 406, 422)
)
def delete_session(services: ServicesDep, session_id: SessionPath) -> dict[str, Any]:
    store = _store(services)
    return store.info(store.delete(session_id))
