"""``/datastore/``: images, labels and their info, stats, history and export (MONAI Label §2.5)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, Response, UploadFile

from labelloop.api import schemas
from labelloop.api.audit import pending_audit
from labelloop.api.deps import (
    STRICT_QUERY,
    DatastoreDep,
    PrincipalDep,
    ServicesDep,
    UserDep,
    client_provenance,
    epoch_seconds,
    octet_stream,
    parse_json_object,
    spooled_upload,
)
from labelloop.api.files import download
from labelloop.api.proxy import proxied_info
from labelloop.api.schemas import ID_SCHEMA, MAX_INT, TAG_SCHEMA, errors, file_response
from labelloop.datastore import LabelFile, parse_if_match, validate_id, validate_tag
from labelloop.errors import ImageNotFoundError, InvalidParamsError, LabelNotFoundError
from labelloop.workflows import LabelSave, save_label

__all__ = ["router"]

router = APIRouter(prefix="/datastore", tags=["datastore"], responses=schemas.AUTH_ERRORS)

#: Ids and tags declare their rule in the schema; ``validate_id`` still checks them (400 naming it).
ImageQuery = Annotated[str, Query(json_schema_extra=ID_SCHEMA)]
OptionalImageQuery = Annotated[str | None, Query(json_schema_extra=ID_SCHEMA)]
TagQuery = Annotated[str, Query(json_schema_extra=TAG_SCHEMA)]


def _info_limit(services: ServicesDep) -> int:
    return services.settings.datastore.max_info_bytes


#: The largest ``params``/``info`` field stored as image or label info (413 above it).
InfoLimit = Annotated[int, Depends(_info_limit)]

_DATASTORE_BODIES = schemas.DatastoreStatsRead | schemas.DatastoreModelRead | list[schemas.TrainPairRead]


@router.get(
    "/",
    summary="Datastore stats, the whole datastore model, or the training list",
    response_model=_DATASTORE_BODIES,
    responses=errors(422),
)
def datastore(
    services: ServicesDep,
    request: Request,
    output: Annotated[Literal["stats", "all", "train"], Query()] = "stats",
) -> Response:
    ds = services.datastore
    if output == "all":
        body: Any = ds.views.model()
        for entry in body["objects"].values():  # PACS series' RetrieveURL through the proxy
            entry["image"]["info"] = proxied_info(services, request, entry["image"]["info"])
    elif output == "train":
        body = ds.views.train_list()
    else:
        body = ds.views.stats()
    return Response(json.dumps(body), media_type="application/json")


# ---------------------------------------------------------------- images

_UPLOAD_ERRORS = errors(400, 409, 413, 415, 422, 503)


def _put_image(
    ds: DatastoreDep, user: str, file: UploadFile, image: str | None, params: str, limit: int
) -> dict[str, str]:
    info = parse_json_object(params, "params", max_bytes=limit)
    if image is not None:
        validate_id(image)
    with spooled_upload(ds, file) as path:
        record = ds.images.add(
            path, filename=file.filename, image_id=image, info=info, user=user, disposable=True
        )
    return {"image": record.id}


@router.put(
    "/image", summary="Upload an image (NIfTI, NRRD or a zipped DICOM series)", responses=_UPLOAD_ERRORS
)
def put_image(
    ds: DatastoreDep,
    user: UserDep,
    limit: InfoLimit,
    file: Annotated[UploadFile, File()],
    image: OptionalImageQuery = None,
    params: Annotated[str, Form()] = "{}",
) -> dict[str, str]:
    return _put_image(ds, user, file, image, params, limit)


@router.put(
    "/",
    summary="Deprecated alias of PUT /datastore/image (the MONAI Label client uses it)",
    responses=_UPLOAD_ERRORS,
)
def put_image_alias(
    ds: DatastoreDep,
    user: UserDep,
    limit: InfoLimit,
    file: Annotated[UploadFile, File()],
    image: OptionalImageQuery = None,
    params: Annotated[str, Form()] = "{}",
) -> dict[str, str]:
    return _put_image(ds, user, file, image, params, limit)


_DELETE_ERRORS = errors(400, 404, 422)


@router.delete(
    "/image", summary="Delete an image and its labels (their history is kept)", responses=_DELETE_ERRORS
)
def delete_image(ds: DatastoreDep, id: ImageQuery) -> dict[str, Any]:
    ds.images.delete(id)
    return {}


@router.delete("/", summary="Deprecated alias of DELETE /datastore/image", responses=_DELETE_ERRORS)
def delete_image_alias(ds: DatastoreDep, id: ImageQuery) -> dict[str, Any]:
    ds.images.delete(id)
    return {}


#: Audited reads answer 503 when the audit trail cannot be written (``api/audit.py``).
_READ_ERRORS = errors(400, 404, 422, 503)


@router.get(
    "/image",
    summary="Download an image",
    response_class=Response,
    responses={**file_response("application/octet-stream"), **_READ_ERRORS},
)
def get_image(ds: DatastoreDep, image: ImageQuery) -> Response:
    record = ds.images.get(image)
    return octet_stream(download(ds.images.file(record), record.name, etag=f'"{record.sha256}"'))


_HEADER: dict[str, Any] = {"required": True, "schema": {"type": "string"}}
_EXISTS: dict[int | str, dict[str, Any]] = {
    200: {"description": "It exists (no body)", "content": {}},
    404: {"description": "It does not exist (no body)", "content": {}},
}


@router.head(
    "/image",
    summary="Does the image exist (with this SHA256 checksum)?",
    response_class=Response,
    responses={**_EXISTS, **errors(400, 422)},
)
def head_image(
    ds: DatastoreDep,
    image: ImageQuery,
    check_sum: Annotated[str | None, Query(max_length=256, description="[SHA256:]<hex>")] = None,
) -> Response:
    validate_id(image)
    return Response(status_code=200 if ds.images.exists(image, check_sum) else 404)


@router.get(
    "/image/info",
    summary="Image info (plus its server path)",
    description="A PACS series' `RetrieveURL` points at this server's DICOMweb proxy (`/proxy/dicom/wado`).",
    responses=_READ_ERRORS,
)
def get_image_info(services: ServicesDep, request: Request, image: ImageQuery) -> dict[str, Any]:
    record = services.datastore.images.get(image)
    info = proxied_info(services, request, record.public_info())
    return {**info, "path": str(record.path), "checksum": record.checksum}


#: An info update answers ``null``, as MONAI Label's does.
_INFO_ERRORS = {
    200: {"description": "null", "content": {"application/json": {"schema": {"type": "null"}}}},
    **errors(400, 404, 413, 422),
}


@router.put("/image/info", summary="Merge into the image info", responses=_INFO_ERRORS)
def put_image_info(
    ds: DatastoreDep, user: UserDep, limit: InfoLimit, image: ImageQuery, info: Annotated[str, Form()]
) -> None:
    ds.images.update_info(image, parse_json_object(info, "info", max_bytes=limit), user, max_bytes=limit)


# ---------------------------------------------------------------- labels


@router.put(
    "/label",
    summary="Save a label as a new version (If-Match: if unchanged since; If-None-Match: *: if none yet)",
    response_model_exclude_unset=True,
    responses={
        200: {"headers": {"ETag": {**_HEADER, "description": "The new version's entity tag"}}},
        **errors(400, 404, 409, 413, 415, 422, 503),
    },
)
def put_label(
    services: ServicesDep,
    principal: PrincipalDep,
    http: Request,
    response: Response,
    limit: InfoLimit,
    image: ImageQuery,
    label: Annotated[UploadFile, File()],
    tag: Annotated[str, Query(json_schema_extra=TAG_SCHEMA)] = "",
    params: Annotated[str, Form()] = "{}",
    if_match: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[
        str | None,
        Header(
            max_length=64, description="`*`: save only if the image has no label of this tag yet (else 409)"
        ),
    ] = None,
    client_id: Annotated[
        str | None, Query(max_length=256, description="As in params; params wins when both say")
    ] = None,
) -> schemas.LabelSavedRead:
    validate_id(image)
    tag = validate_tag(tag)
    if if_none_match is not None and if_none_match.strip() != "*":
        raise InvalidParamsError(
            "If-None-Match on a label save takes only '*' (save only if there is none yet)"
        )
    parsed = parse_json_object(params, "params", max_bytes=limit)
    if client_id and not parsed.get("client_id"):
        parsed["client_id"] = client_id  # some of MONAI Label's clients send it in the query string
    provenance = client_provenance(parsed, principal)
    pending = pending_audit(http.scope)
    with spooled_upload(services.datastore, label) as path:
        file = LabelFile(path, label.filename, disposable=True)
        request = LabelSave(
            image,
            tag,
            file,
            provenance,
            parse_if_match(if_match),
            create_only=if_none_match is not None,
            audit=pending.record_in if pending is not None else None,
        )
        saved = save_label(services.datastore, services.activelearning, request)
    response.headers["ETag"] = saved.version.etag
    return schemas.label_saved(saved)


@router.delete(
    "/label", summary="Delete a label (its versions stay in the history)", responses=_DELETE_ERRORS
)
def delete_label(ds: DatastoreDep, id: ImageQuery, tag: TagQuery) -> dict[str, Any]:
    ds.labels.delete(id, tag)
    return {}


@router.get(
    "/label",
    summary="Download a label (the current version, or ?version=N)",
    response_class=Response,
    responses={**file_response("application/octet-stream"), **_READ_ERRORS},
)
def get_label(
    ds: DatastoreDep,
    label: ImageQuery,
    tag: TagQuery,
    version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> Response:
    record = ds.labels.get(label, tag, version)
    return octet_stream(download(record.path, record.name, etag=record.etag))


@router.head(
    "/label",
    summary="Does the label exist? (takes image=, as MONAI Label does; label= works too)",
    response_class=Response,
    responses={
        200: {
            "description": "It exists (no body)",
            "content": {},
            "headers": {"ETag": {**_HEADER, "description": "The current version's entity tag"}},
        },
        404: _EXISTS[404],
        **errors(400, 422),
    },
)
def head_label(
    ds: DatastoreDep,
    tag: TagQuery,
    image: OptionalImageQuery = None,
    label: OptionalImageQuery = None,
) -> Response:
    image_id = validate_id(image or label)
    try:
        record = ds.labels.get(image_id, tag)
    except LabelNotFoundError:
        return Response(status_code=404)
    return Response(status_code=200, headers={"ETag": record.etag})


@router.get(
    "/label/info",
    summary="Label info of the current version (with its measurements, when it was measured)",
    responses=_READ_ERRORS,
)
def get_label_info(ds: DatastoreDep, label: ImageQuery, tag: TagQuery) -> dict[str, Any]:
    version = ds.labels.get(label, tag)
    info = version.public_info()
    if version.measurements is not None:
        info["measurements"] = version.measurements  # ours, additive: as in /datastore/label/versions
    return info


@router.put("/label/info", summary="Merge into the current label version's info", responses=_INFO_ERRORS)
def put_label_info(
    ds: DatastoreDep,
    user: UserDep,
    limit: InfoLimit,
    label: ImageQuery,
    tag: TagQuery,
    info: Annotated[str, Form()],
) -> None:
    ds.labels.update_info(label, tag, parse_json_object(info, "info", max_bytes=limit), user, max_bytes=limit)


@router.put(
    "/updatelabelinfo",
    summary="Deprecated: same as PUT /datastore/label/info, field 'params'",
    responses=_INFO_ERRORS,
)
def update_label_info(
    ds: DatastoreDep,
    user: UserDep,
    limit: InfoLimit,
    label: ImageQuery,
    tag: TagQuery,
    params: Annotated[str, Form()],
) -> None:
    ds.labels.update_info(
        label, tag, parse_json_object(params, "params", max_bytes=limit), user, max_bytes=limit
    )


#: The most versions one page of the history holds (the datastore's own cap is the same).
_HISTORY_MAX_LIMIT = 1000

_LINK = {
    "description": 'The next (older) page, when there is one: ``<url>; rel="next"`` (RFC 8288)',
    "schema": {"type": "string"},
}


@router.get(
    "/label/versions",
    summary="Label history with provenance, newest first: one image's or every image's, filtered, paged",
    dependencies=[STRICT_QUERY],
    responses={200: {"headers": {"Link": _LINK}}, **_READ_ERRORS},
)
def label_versions(
    request: Request,
    response: Response,
    ds: DatastoreDep,
    image: Annotated[
        str | None, Query(json_schema_extra=ID_SCHEMA, description="One image's history (else every image's)")
    ] = None,
    tag: Annotated[str | None, Query(json_schema_extra=TAG_SCHEMA, description="Only this tag")] = None,
    author: Annotated[
        str | None, Query(max_length=128, description="Only versions saved by this user")
    ] = None,
    client_id: Annotated[
        str | None, Query(max_length=256, description="Only versions the client sent with this client_id")
    ] = None,
    since: Annotated[
        str | None,
        Query(max_length=64, description="Saved at or after: epoch seconds or ISO 8601 (UTC unless it says)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=_HISTORY_MAX_LIMIT, description="Versions per page")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=256, description="Where the page starts: from the previous page's Link")
    ] = None,
) -> list[schemas.LabelVersionRead]:
    if image is not None and not ds.images.known(image):
        raise ImageNotFoundError(f"Image '{image}' not found")
    page = ds.labels.history(
        image_id=image,
        tag=tag or None,
        author=author,
        client_id=client_id,
        since=epoch_seconds(since, "since"),
        limit=limit,
        cursor=cursor,
    )
    if page.next_cursor is not None:
        response.headers["Link"] = (
            f'<{request.url.include_query_params(cursor=page.next_cursor)}>; rel="next"'
        )
    return [schemas.label_version(v) for v in page.versions]


# ---------------------------------------------------------------- export


@router.get(
    "/dataset",
    summary="Export images with final labels as a zip (MSD layout, all NIfTI, dataset.json)",
    response_class=Response,
    responses={
        **file_response("application/zip", description="dataset.zip", etag=False),
        404: {"model": schemas.ErrorRead, "description": "No image has a final label yet"},
        **errors(422, 503),
    },
)
def dataset(
    services: ServicesDep,
    limit_cases: Annotated[
        int | None, Query(ge=0, le=MAX_INT, description="At most this many cases (0: all)")
    ] = None,
) -> Response:
    ds = services.datastore
    path = ds.blobs.new_scratch(".zip")  # the response deletes it once sent
    try:
        ds.export(path, label_names=services.app.labels, limit_cases=limit_cases)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return download(path, "dataset.zip", delete_after=True)
