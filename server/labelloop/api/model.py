"""``/model/``: model weights files and their versions (MONAI Label section 2.9, plus versions)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, File, Path, UploadFile
from fastapi.responses import Response

from labelloop.api import schemas
from labelloop.api.deps import ServicesDep, UserDep, octet_stream, spooled_upload
from labelloop.api.files import download
from labelloop.api.schemas import ID_SCHEMA, MAX_INT, errors, file_response
from labelloop.errors import ConflictError, ModelNotFoundError
from labelloop.workflows import activate_version, publish_upload

__all__ = ["router"]

router = APIRouter(prefix="/model", tags=["model"], responses=schemas.AUTH_ERRORS)

#: Model names are ids (``server.py`` refuses to serve a model named otherwise); another name is a 404.
ModelPath = Annotated[str, Path(json_schema_extra=ID_SCHEMA)]


@router.get(
    "/info/{model}",
    summary="Checksum, time and training stats of the active weights",
    response_model=schemas.ModelFileRead,
    response_model_exclude_unset=True,
    responses=errors(404, 422),
)
def model_info(services: ServicesDep, model: ModelPath) -> dict[str, Any]:
    services.inference.spec(model)
    active = services.registry.active(model)
    if active is None:
        raise ModelNotFoundError(f"Model File NOT Found for {model}")
    info: dict[str, Any] = {"checksum": active.checksum, "modified_time": int(active.created_at)}
    if active.train_stats:
        info["train_stats"] = active.train_stats
    info["version"] = active.version
    return info


@router.get(
    "/{model}/versions",
    summary="Every version of a model with its metrics, newest first",
    responses=errors(404, 422),
)
def versions(services: ServicesDep, model: ModelPath) -> list[schemas.ModelVersionRead]:
    services.inference.spec(model)
    return [schemas.model_version(v) for v in services.registry.versions(model)]


@router.post(
    "/{model}/versions/{version}/activate",
    summary="Serve this version (promote or roll back)",
    responses=errors(404, 409, 422),
)
def activate(
    services: ServicesDep,
    user: UserDep,
    model: ModelPath,
    version: Annotated[int, Path(ge=1, le=MAX_INT)],
) -> schemas.ModelVersionRead:
    s = services
    return schemas.model_version(activate_version(s.registry, s.jobs, s.inference, model, version, user))


@router.get(
    "/{model}",
    summary="Download the active weights",
    response_class=Response,
    responses={**file_response("application/octet-stream"), **errors(404, 422, 503)},
)
def get_model(services: ServicesDep, model: ModelPath) -> Response:
    services.inference.spec(model)
    active = services.registry.active(model)
    if active is None:
        raise ModelNotFoundError(f"Model File NOT Found for {model}")
    return octet_stream(download(active.path, f"{model}.pt", etag=f'"{active.sha256}"'))


@router.put(
    "/{model}",
    summary="Upload weights as a new version and serve them",
    response_model=schemas.ModelFileRead,
    response_model_exclude_unset=True,
    # 400: a multipart body that does not parse; 422: weights that do not load into the model.
    responses=errors(400, 404, 409, 413, 422),
)
async def put_model(
    services: ServicesDep, user: UserDep, model: ModelPath, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    services.inference.spec(model)

    def publish() -> dict[str, Any]:
        s = services
        with spooled_upload(s.datastore, file) as path:
            version = publish_upload(s.registry, s.jobs, s.inference, model, path, user)
        return {
            "checksum": version.checksum,
            "modified_time": int(version.created_at),
            "version": version.version,
        }

    return await anyio.to_thread.run_sync(publish)


@router.delete(
    "/{model}",
    summary="Take the active weights out of service (they stay in the history)",
    responses=errors(404, 409, 422),
)
def delete_model(services: ServicesDep, model: ModelPath) -> dict[str, Any]:
    if not services.inference.spec(model).needs_weights:
        raise ConflictError(f"Model '{model}' takes no weights from the registry")
    services.registry.retire_active(model)
    return {}
