"""``/datastore/``: images, labels and their info, stats, history and export (MONAI Label §2.5)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Header, Query, Response, UploadFile

from labelloop.api import schemas
from labelloop.api.deps import (
    DatastoreDep,
    PrincipalDep,
    ServicesDep,
    UserDep,
    client_provenance,
    parse_json_object,
    spooled_upload,
)
from labelloop.api.files import download
from labelloop.datastore import LabelFile, parse_if_match, validate_id, validate_tag
from labelloop.errors import ImageNotFoundError, LabelNotFoundError
from labelloop.workflows import LabelSave, save_label

__all__ = ["router"]

router = APIRouter(prefix="/datastore", tags=["datastore"])


@router.get("/", summary="Datastore stats, the whole datastore model, or the training list")
def datastore(
    ds: DatastoreDep, output: Annotated[Literal["stats", "all", "train"], Query()] = "stats"
) -> Response:
    if output == "all":
        body: Any = ds.views.model()
    elif output == "train":
        body = ds.views.train_list()
    else:
        body = ds.views.stats()
    return Response(json.dumps(body), media_type="application/json")


# ---------------------------------------------------------------- images


def _put_image(
    ds: DatastoreDep, user: str, file: UploadFile, image: str | None, params: str
) -> dict[str, str]:
    info = parse_json_object(params, "params")
    if image is not None:
        validate_id(image)
    with spooled_upload(ds, file) as path:
        record = ds.images.add(
            path, filename=file.filename, image_id=image, info=info, user=user, disposable=True
        )
    return {"image": record.id}


@router.put("/image", summary="Upload an image (NIfTI, NRRD or a zipped DICOM series)")
def put_image(
    ds: DatastoreDep,
    user: UserDep,
    file: Annotated[UploadFile, File()],
    image: Annotated[str | None, Query()] = None,
    params: Annotated[str, Form()] = "{}",
) -> dict[str, str]:
    return _put_image(ds, user, file, image, params)


@router.put("/", summary="Deprecated alias of PUT /datastore/image (the MONAI Label client uses it)")
def put_image_alias(
    ds: DatastoreDep,
    user: UserDep,
    file: Annotated[UploadFile, File()],
    image: Annotated[str | None, Query()] = None,
    params: Annotated[str, Form()] = "{}",
) -> dict[str, str]:
    return _put_image(ds, user, file, image, params)


@router.delete("/image", summary="Delete an image and its labels (their history is kept)")
def delete_image(ds: DatastoreDep, id: Annotated[str, Query()]) -> dict[str, Any]:
    ds.images.delete(id)
    return {}


@router.delete("/", summary="Deprecated alias of DELETE /datastore/image")
def delete_image_alias(ds: DatastoreDep, id: Annotated[str, Query()]) -> dict[str, Any]:
    ds.images.delete(id)
    return {}


@router.get("/image", summary="Download an image")
def get_image(ds: DatastoreDep, image: Annotated[str, Query()]) -> Response:
    record = ds.images.get(image)
    return download(ds.images.file(record), record.name, etag=f'"{record.sha256}"')


@router.head("/image", summary="Does the image exist (with this SHA256 checksum)?")
def head_image(
    ds: DatastoreDep, image: Annotated[str, Query()], check_sum: Annotated[str | None, Query()] = None
) -> Response:
    validate_id(image)
    return Response(status_code=200 if ds.images.exists(image, check_sum) else 404)


@router.get("/image/info", summary="Image info (plus its server path)")
def get_image_info(ds: DatastoreDep, image: Annotated[str, Query()]) -> dict[str, Any]:
    record = ds.images.get(image)
    return {**record.public_info(), "path": str(record.path), "checksum": record.checksum}


@router.put("/image/info", summary="Merge into the image info")
def put_image_info(
    ds: DatastoreDep, user: UserDep, image: Annotated[str, Query()], info: Annotated[str, Form()]
) -> None:
    ds.images.update_info(image, parse_json_object(info, "info"), user)


# ---------------------------------------------------------------- labels


@router.put(
    "/label",
    summary="Save a label as a new version (If-Match: refuse if it changed since)",
    response_model_exclude_unset=True,
)
def put_label(
    services: ServicesDep,
    principal: PrincipalDep,
    response: Response,
    image: Annotated[str, Query()],
    label: Annotated[UploadFile, File()],
    tag: Annotated[str, Query()] = "",
    params: Annotated[str, Form()] = "{}",
    if_match: Annotated[str | None, Header()] = None,
) -> schemas.LabelSavedRead:
    validate_id(image)
    tag = validate_tag(tag)
    provenance = client_provenance(parse_json_object(params, "params"), principal)
    with spooled_upload(services.datastore, label) as path:
        file = LabelFile(path, label.filename, disposable=True)
        request = LabelSave(image, tag, file, provenance, parse_if_match(if_match))
        saved = save_label(services.datastore, services.activelearning, request)
    response.headers["ETag"] = saved.version.etag
    return schemas.label_saved(saved)


@router.delete("/label", summary="Delete a label (its versions stay in the history)")
def delete_label(
    ds: DatastoreDep, id: Annotated[str, Query()], tag: Annotated[str, Query()]
) -> dict[str, Any]:
    ds.labels.delete(id, tag)
    return {}


@router.get("/label", summary="Download a label (the current version, or ?version=N)")
def get_label(
    ds: DatastoreDep,
    label: Annotated[str, Query()],
    tag: Annotated[str, Query()],
    version: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    record = ds.labels.get(label, tag, version)
    return download(record.path, record.name, etag=record.etag)


@router.head("/label", summary="Does the label exist? (takes image=, as MONAI Label does; label= works too)")
def head_label(
    ds: DatastoreDep,
    tag: Annotated[str, Query()],
    image: Annotated[str | None, Query()] = None,
    label: Annotated[str | None, Query()] = None,
) -> Response:
    image_id = validate_id(image or label)
    try:
        record = ds.labels.get(image_id, tag)
    except LabelNotFoundError:
        return Response(status_code=404)
    return Response(status_code=200, headers={"ETag": record.etag})


@router.get("/label/info", summary="Label info of the current version")
def get_label_info(
    ds: DatastoreDep, label: Annotated[str, Query()], tag: Annotated[str, Query()]
) -> dict[str, Any]:
    return ds.labels.get(label, tag).public_info()


LabelQuery = Annotated[str, Query()]


@router.put("/label/info", summary="Merge into the current label version's info")
def put_label_info(
    ds: DatastoreDep, user: UserDep, label: LabelQuery, tag: LabelQuery, info: Annotated[str, Form()]
) -> None:
    ds.labels.update_info(label, tag, parse_json_object(info, "info"), user)


@router.put("/updatelabelinfo", summary="Deprecated: same as PUT /datastore/label/info, field 'params'")
def update_label_info(
    ds: DatastoreDep, user: UserDep, label: LabelQuery, tag: LabelQuery, params: Annotated[str, Form()]
) -> None:
    ds.labels.update_info(label, tag, parse_json_object(params, "params"), user)


@router.get("/label/versions", summary="Label history with provenance, newest first")
def label_versions(
    ds: DatastoreDep, image: Annotated[str, Query()], tag: Annotated[str | None, Query()] = None
) -> list[schemas.LabelVersionRead]:
    if not ds.images.known(image):
        raise ImageNotFoundError(f"Image '{image}' not found")
    return [schemas.label_version(v) for v in ds.labels.versions(image, tag or None)]


# ---------------------------------------------------------------- export


@router.get("/dataset", summary="Export images with final labels as a zip (MSD layout, dataset.json)")
def dataset(services: ServicesDep, limit_cases: Annotated[int | None, Query()] = None) -> Response:
    ds = services.datastore
    path = ds.blobs.new_scratch(".zip")  # the response deletes it once sent
    try:
        ds.export(path, label_names=services.app.labels, limit_cases=limit_cases)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return download(path, "dataset.zip", delete_after=True)
