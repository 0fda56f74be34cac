"""``/session/``: temporary server-side images for clients whose volume is not in the datastore (§2.8)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile

from labelloop.api.deps import ServicesDep, UserDep, spooled_uploads
from labelloop.api.files import download
from labelloop.datastore.sessions import SessionStore
from labelloop.errors import FeatureDisabledError

__all__ = ["router"]

router = APIRouter(prefix="/session", tags=["session"])


def _store(services: ServicesDep) -> SessionStore:
    if not services.settings.sessions.enabled:
        raise FeatureDisabledError("Session Feature is Not Enabled")
    return services.datastore.sessions


@router.put("/", summary="Create a session from one image file, a zipped DICOM series, or DICOM slices")
def create_session(
    services: ServicesDep,
    user: UserDep,
    files: Annotated[list[UploadFile], File()],
    uncompress: Annotated[bool, Query()] = False,
    expiry: Annotated[int, Query()] = 0,
) -> dict[str, Any]:
    store = _store(services)
    with spooled_uploads(services.datastore, files) as spooled:
        record = store.create(spooled, uncompress=uncompress, expiry=expiry, user=user)
    return {"session_id": record.id, "session_info": store.info(record)}


@router.get("/{session_id}", summary="Session info, or its image with ?image=true")
def get_session(
    services: ServicesDep,
    session_id: str,
    update_ts: Annotated[bool, Query()] = False,
    image: Annotated[bool, Query()] = False,
) -> Any:
    store = _store(services)
    record = store.get(session_id, touch=update_ts)
    if image:
        return download(record.image_path, record.image_name)
    return store.info(record)


@router.delete("/{session_id}", summary="Remove a session and its files")
def delete_session(services: ServicesDep, session_id: str) -> dict[str, Any]:
    store = _store(services)
    return store.info(store.delete(session_id))
