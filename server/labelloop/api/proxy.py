"""``/proxy/dicom/``: the PACS's DICOMweb API relayed for OHIF (MONAI Label section 2.12).

Unlike the reference (its bug 12): the query string and the ``Accept`` header are kept, requests
time out, and the client's ``Authorization`` never reaches the PACS; only the configured PACS
credentials do.
"""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response

from labelloop.api import schemas
from labelloop.api.deps import ServicesDep
from labelloop.api.schemas import errors
from labelloop.errors import FeatureDisabledError, PayloadTooLargeError

__all__ = ["router"]

#: Whatever the PACS answers is relayed: its status, its content type (DICOM JSON, multipart DICOM...).
_RELAYED: dict[int | str, dict[str, object]] = {
    "default": {"description": "The PACS's answer, relayed", "content": {"*/*": {}}},
    200: {"description": "The PACS's answer, relayed", "content": {"*/*": {}}},
}

router = APIRouter(
    prefix="/proxy/dicom",
    tags=["dicomweb proxy"],
    responses={**schemas.AUTH_ERRORS, **_RELAYED, **errors(406, 413, 502, 504)},
)

#: Request headers passed on to the PACS; everything else (Authorization, Cookie, Host...) stays here.
_FORWARDED_REQUEST = ("accept", "content-type", "accept-encoding", "range")
#: Response headers relayed to the client.
_RELAYED_RESPONSE = (
    "content-type",
    "content-length",
    "content-encoding",
    "content-range",
    "etag",
    "last-modified",
)


async def _forward(services: ServicesDep, request: Request, path: str) -> Response:
    settings = services.settings
    if services.pacs is None or not settings.studies:
        raise FeatureDisabledError("The DICOMweb proxy needs a DICOMweb studies URL (--studies http://...)")
    target = f"{settings.studies.rstrip('/')}/{path.lstrip('/')}"
    headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED_REQUEST}
    body = await request.body() if request.method == "POST" else None
    if body is not None and len(body) > settings.datastore.upload_max_bytes:
        raise PayloadTooLargeError()
    auth = None
    if settings.dicomweb.username:
        auth = httpx.BasicAuth(settings.dicomweb.username, settings.dicomweb.password or "")
    try:
        async with httpx.AsyncClient(timeout=settings.dicomweb.timeout_s, auth=auth) as client:
            answer = await client.request(
                request.method, target, params=request.query_params, headers=headers, content=body
            )
    except httpx.TimeoutException:
        return Response(b'{"detail":"The PACS did not answer in time"}', 504, media_type="application/json")
    except httpx.HTTPError as exc:
        detail = f'{{"detail":"The PACS cannot be reached: {type(exc).__name__}"}}'
        return Response(detail.encode(), 502, media_type="application/json")
    relayed = {k: v for k, v in answer.headers.items() if k.lower() in _RELAYED_RESPONSE}
    relayed.pop("content-length", None)  # the body is re-sent decoded
    relayed.pop("content-encoding", None)
    return Response(answer.content, answer.status_code, headers=relayed)


@router.get("/qido/{path:path}", summary="QIDO-RS (OHIF's qidoRoot)", response_class=Response)
async def proxy_qido(services: ServicesDep, request: Request, path: str) -> Response:
    return await _forward(services, request, path)


@router.get("/wado/{path:path}", summary="WADO-RS (OHIF's wadoRoot)", response_class=Response)
async def proxy_wado(services: ServicesDep, request: Request, path: str) -> Response:
    return await _forward(services, request, path)


@router.post("/stow/{path:path}", summary="STOW-RS", response_class=Response)
async def proxy_stow(services: ServicesDep, request: Request, path: str) -> Response:
    return await _forward(services, request, path)


@router.get("/{path:path}", summary="Any DICOMweb read", response_class=Response)
async def proxy(services: ServicesDep, request: Request, path: str) -> Response:
    return await _forward(services, request, path)


@router.post("/{path:path}", summary="Any DICOMweb write", response_class=Response)
async def proxy_post(services: ServicesDep, request: Request, path: str) -> Response:
    return await _forward(services, request, path)
