"""``POST /infer/{model}``: pre-segmentation and click-guided segmentation (MONAI Label section 2.2)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from labelloop.api import schemas
from labelloop.api.deps import (
    PrincipalDep,
    Services,
    ServicesDep,
    UserDep,
    lease_holder,
    octet_stream,
    parse_json_object,
    spooled_upload,
)
from labelloop.api.files import download
from labelloop.api.metrics import metrics_of
from labelloop.datastore import (
    ORIGINAL_TAG,
    LabelFile,
    Measurer,
    Provenance,
    sha256_file,
    validate_id,
    validate_tag,
)
from labelloop.errors import FeatureDisabledError, InvalidIdError, InvalidInputError, InvalidParamsError
from labelloop.imaging import Volume, read_geometry, read_volume, sniff, write_volume
from labelloop.imaging.dicomseg import SegAuthor
from labelloop.inference import ImageSource, InferResult
from labelloop.measurements import monai_centroids

__all__ = ["router"]

router = APIRouter(tags=["infer"], responses=schemas.AUTH_ERRORS)

_EXTENSIONS = (".nrrd", ".seg.nrrd", ".nii.gz", ".nii")
_DTYPES = ("uint8", "uint16", "int16", "int32", "uint32", "float32")


@dataclass
class _Inputs:
    """What a request resolved to: the image, an optional label, and where it came from."""

    source: ImageSource
    label: Volume | None
    image_ext: str
    image_id: str | None


def _image_id(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidParamsError("'image' must be a datastore image id (a string)")
    if "/" in value or "\\" in value:
        raise InvalidIdError(
            "'image' must be a datastore image id; server file paths are not accepted "
            "(upload the file, or create a session)"
        )
    return validate_id(value)


@contextmanager
def _resolve(
    services: Services,
    image: str,
    session_id: str,
    params: dict[str, Any],
    file: UploadFile | None,
    label: UploadFile | None,
) -> Iterator[_Inputs]:
    """Turn the request's image reference (session, upload or id) into an ``ImageSource``."""
    ds = services.datastore
    image_ref = params.get("image", image) or ""
    with ExitStack() as stack:
        image_id: str | None = None
        if session_id:
            session = ds.sessions.get(session_id, touch=True)
            path = session.image_path
            source = ImageSource(key=f"session:{session.id}", load=lambda: read_volume(path))
            geometry, _ = read_geometry(path)
            ext = "".join(Path(session.image_name).suffixes[-2:]) or ".nii.gz"
        elif file is not None:
            upload = stack.enter_context(spooled_upload(ds, file))
            # Validated now (a bad upload is a 4xx, not a model error), within the decode limits, and
            # its share of the decode budget held until the request ends: N uploads waiting for the
            # inference queue cannot hold more decoded voxels than the budget.
            volume = stack.enter_context(ds.decoder.image(upload))
            source = ImageSource(key=f"upload:{sha256_file(upload)}", load=lambda: volume)
            geometry = volume.geometry
            ext = ".nrrd" if sniff(upload) == "nrrd" else ".nii.gz"
        elif image_ref:
            image_id = _image_id(image_ref)
            record = ds.images.get(image_id)
            source = ImageSource(
                key=record.sha256, load=lambda: read_volume(ds.images.file(record)), image_id=image_id
            )
            geometry = record.geometry
            ext = ".nrrd" if record.ext.endswith(".nrrd") else ".nii.gz"
        else:
            raise InvalidInputError(
                "Give an image: 'image' (a datastore id), 'session_id', or a 'file' upload"
            )
        label_volume = None
        if label is not None:
            label_path = stack.enter_context(spooled_upload(ds, label))
            label_volume = stack.enter_context(ds.decoder.label(label_path, label.filename, geometry))
        yield _Inputs(source=source, label=label_volume, image_ext=ext, image_id=image_id)


def _check_clicks(params: dict[str, Any], most: int) -> None:
    """Refuse more than ``most`` clicks: every list of points in ``params`` (``foreground``,
    ``background``, or a label's name as DeepEdit clients send them) counts."""
    clicks = sum(
        len(value)
        for value in params.values()
        if isinstance(value, list) and value and all(isinstance(p, list | tuple) for p in value)
    )
    if clicks > most:
        raise InvalidParamsError(
            f"{clicks} clicks sent; at most {most} are accepted (setting inference.max_clicks)"
        )


def _output_options(params: dict[str, Any], default_ext: str) -> tuple[str, np.dtype[Any]]:
    ext = params.get("result_extension") or default_ext
    if ext not in _EXTENSIONS:
        raise InvalidParamsError(f"'result_extension' must be one of {list(_EXTENSIONS)}, not {ext!r}")
    dtype_name = params.get("result_dtype") or "uint8"
    if dtype_name not in _DTYPES:
        raise InvalidParamsError(f"'result_dtype' must be one of {list(_DTYPES)}, not {dtype_name!r}")
    return ext, np.dtype(dtype_name)


def _write(result: InferResult, path: Path, dtype: np.dtype[Any]) -> float:
    started = time.perf_counter()
    label = result.output.label
    if label.size and dtype.kind in "iu" and int(label.max()) > np.iinfo(dtype).max:
        raise InvalidParamsError(
            f"The result holds label values up to {int(label.max())}; {dtype} cannot hold them"
        )
    write_volume(path, label.astype(dtype, copy=False), result.image.geometry.affine)
    return time.perf_counter() - started


def _measure(result: InferResult, labels: Any, lesions: frozenset[str]) -> dict[str, Any]:
    """``{"measurements": ..., "centroids": ...}`` of the result's label: each label's volume, lesion
    count, centroid and box (ours), and MONAI Label's ``centroids`` (``{"label_<v>": ["v", "i", "j",
    "k"]}``, voxel indices as strings). Labels are named by ``label_names`` when it maps names to
    values, else ``label_<value>``."""
    names: dict[str, int] | None = None
    if isinstance(labels, Mapping) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in labels.values()
    ):
        names = {str(k): int(v) for k, v in labels.items()}
    measurer = Measurer(names, lesions)
    measured = measurer.measure(result.output.label, result.image.geometry.affine)
    return {"measurements": measurer.to_json(measured), "centroids": monai_centroids(measured)}


def _result_json(result: InferResult, labels: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"label_names": labels, **result.output.result}
    body["latencies"] = {**result.latencies, "transform": None}
    body["model"] = result.model
    body["model_version"] = result.model_version
    body["cache"] = result.cache
    return body


def _dicom_seg(services: Services, image_id: str, model: str, result: InferResult, user: str) -> Response:
    assert services.pacs is not None
    record = services.datastore.images.get(image_id)
    author = SegAuthor(creator=user, model=model, model_version=result.model_version)
    label = np.asarray(result.output.label, dtype=np.uint8)
    _, _, content = services.pacs.prepare_seg(record.location, label, author)
    filename = f"{image_id}_{model}.dcm"
    return Response(
        content,
        media_type="application/dicom",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _multipart(params: dict[str, Any], filename: str, content: bytes) -> Response:
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="params"\r\n'
        "Content-Type: application/json\r\n\r\n"
        f"{json.dumps(params)}\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return Response(head + content + tail, media_type=f"multipart/form-data; boundary={boundary}")


_INFER_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The segmentation: a file (output=image), JSON (output=json), both as multipart "
        "(output=all, the default), or a DICOM SEG (output=dicom_seg)",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "string", "format": "binary"}},
            "application/dicom": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/infer/{model}",
    summary="Run a model on an image (datastore id, session or upload)",
    response_class=Response,
    responses={**_INFER_200, **schemas.errors(400, 404, 406, 409, 413, 415, 422, 503)},
)
async def infer(
    request: Request,
    services: ServicesDep,
    user: UserDep,
    principal: PrincipalDep,
    model: Annotated[str, PathParam(json_schema_extra=schemas.ID_SCHEMA)],
    image: Annotated[str, Query(max_length=256)] = "",
    session_id: Annotated[str, Query(json_schema_extra={"maxLength": 64})] = "",
    output: Annotated[Literal["image", "json", "all", "dicom_seg"] | None, Query()] = None,
    params: Annotated[str, Form()] = "{}",
    file: Annotated[UploadFile | None, File()] = None,
    label: Annotated[UploadFile | None, File()] = None,
) -> Response:
    inference = services.inference
    spec = inference.spec(model)
    parsed = parse_json_object(params, "params")
    _check_clicks(parsed, services.settings.inference.max_clicks)
    if output == "dicom_seg" and services.pacs is None:
        raise FeatureDisabledError(
            "DICOM SEG output needs a DICOMweb datastore; this server's studies are files. "
            "Ask for output=image or output=all"
        )
    with ExitStack() as stack:
        inputs = await anyio.to_thread.run_sync(
            lambda: stack.enter_context(_resolve(services, image, session_id, parsed, file, label))
        )
        ext, dtype = _output_options(parsed, inputs.image_ext)
        remote = inputs.image_id is not None and services.datastore.images.get(inputs.image_id).remote
        if output == "dicom_seg" and not remote:
            raise FeatureDisabledError(
                "DICOM SEG output is for images from the PACS (a series id as 'image')"
            )
        result = await inference.infer(model, inputs.source, parsed, inputs.label)
        recorded = metrics_of(request.app)
        if recorded is not None:
            recorded.observe_inference(model, result.latencies)  # before "write", which comes below
        if inputs.image_id is not None:
            # What this annotator's next save of the image started from (workflows.label_save).
            client_id = parsed.get("client_id")
            holder = lease_holder(principal, client_id if isinstance(client_id, str) else None)
            await anyio.to_thread.run_sync(
                services.datastore.runs.record, inputs.image_id, holder, model, result.model_version
            )
        if output == "dicom_seg" and services.pacs is not None and inputs.image_id is not None:
            return await anyio.to_thread.run_sync(_dicom_seg, services, inputs.image_id, model, result, user)
        out_path = services.datastore.blobs.new_scratch(ext)
        try:
            write_s = await anyio.to_thread.run_sync(_write, result, out_path, dtype)
            result.latencies["write"] = round(write_s, 4)
            result.latencies["total"] = round(result.latencies["total"] + write_s, 4)
            if recorded is not None:
                recorded.observe_inference(model, {"write": write_s})
            labels = result.output.result.get("label_names", dict(spec.labels) or [])
            body = _result_json(result, labels)
            measured = await anyio.to_thread.run_sync(_measure, result, labels, services.app.lesions)
            body["measurements"] = measured["measurements"]
            body.setdefault("centroids", measured["centroids"])  # a task's own centroids win
            if parsed.get("save_label") and inputs.image_id is not None:
                tag = validate_tag(parsed.get("label_tag") or ORIGINAL_TAG)
                client_id = parsed.get("client_id")
                provenance = Provenance(
                    author=user,
                    client_id=str(client_id) if client_id is not None else None,
                    source="infer",
                    model=model,
                    model_version=result.model_version,
                    params={
                        "model": model,
                        "model_version": result.model_version,
                        "client_id": client_id,
                        "params": body,
                    },
                )
                output_file = LabelFile(out_path, f"result{ext}")
                saved = await anyio.to_thread.run_sync(
                    lambda: services.datastore.labels.save(
                        inputs.image_id or "", tag, output_file, provenance
                    )
                )
                body["label"] = {"tag": saved.tag, "version": saved.version, "etag": saved.etag}
            filename = f"{inputs.image_id or 'image'}_{model}_{uuid.uuid4().hex[:8]}{ext}"
            if output == "json":
                return JSONResponse(body)
            if output == "image":
                response = octet_stream(download(out_path, filename, delete_after=True))
                out_path = Path()  # the response owns it now
                return response
            content = await anyio.to_thread.run_sync(out_path.read_bytes)
            return _multipart(body, filename, content)
        finally:
            if out_path != Path():
                out_path.unlink(missing_ok=True)
