"""``/proxy/dicom/``: the PACS's DICOMweb API relayed for OHIF (MONAI Label section 2.12).

Unlike the reference (its bug 12): the query string and the ``Accept`` header are kept, requests
time out, and the client's ``Authorization`` never reaches the PACS; only the configured PACS
credentials do. ``wado/`` and ``qido/`` are OHIF's roots and are stripped; a ``POST`` on the WADO
root is STOW-RS (OHIF stores a SEG as ``POST {wadoRoot}/studies``); ``GET /proxy/dicom/wado?...``
is WADO-URI, relayed to ``dicomweb.wado_uri_url``. A SEG stored through the proxy becomes a label
version of the person who stored it as soon as the PACS has it (``workflows.save_stowed_segs``).

The PACS writes absolute URLs built from the address it was called on (``settings.studies``): QIDO-RS
``RetrieveURL`` (0008,1190), WADO-RS metadata ``BulkDataURI``, STOW-RS ``RetrieveURL``. A browser
elsewhere cannot reach that address, so in every relayed JSON answer (``application/dicom+json``,
``application/json``) the PACS root becomes the proxy's WADO root as this request reached it
(``public_wado_root``: ``root_path`` and the proxy headers uvicorn trusts included). Multipart and
binary answers pass byte for byte. Routers that hand out a series' ``RetrieveURL`` (next sample,
image info) rewrite it the same way with ``proxied``/``proxied_info``, when they answer only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import anyio
import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response

from labelloop.api import schemas
from labelloop.api.deps import PrincipalDep, Services, ServicesDep, client_provenance
from labelloop.api.schemas import errors
from labelloop.errors import FeatureDisabledError, PayloadTooLargeError
from labelloop.workflows import save_stowed_segs

__all__ = ["proxied", "proxied_info", "public_wado_root", "router"]

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

#: Relayed answers of these media types have the PACS's URLs rewritten; all others pass unchanged.
_JSON_TYPES = frozenset({"application/dicom+json", "application/json"})
#: What may follow the PACS root in a URL (so ``.../dicom-web`` never matches ``.../dicom-web2``).
_AFTER_ROOT = r"(?=[/?#\"\\]|$)"


def public_wado_root(request: Request) -> str:
    """The proxy's WADO-RS root as the client reached it, e.g. ``https://host/labelloop/proxy/dicom/wado``."""
    return f"{str(request.base_url).rstrip('/')}{router.prefix}/wado"


def _pacs_root(services: Services) -> str | None:
    """The PACS's DICOMweb root without a trailing ``/``; ``None`` when the studies are no PACS."""
    studies = services.settings.studies
    return studies.rstrip("/") if services.pacs is not None and studies else None


def proxied(services: Services, request: Request, url: str) -> str:
    """``url`` through the proxy when it is under the PACS root; any other URL as it is."""
    root = _pacs_root(services)
    if root is None or not re.match(re.escape(root) + _AFTER_ROOT, url):
        return url
    return public_wado_root(request) + url[len(root) :]


def proxied_info(services: Services, request: Request, info: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an image info whose ``RetrieveURL`` goes through the proxy (the stored info is kept)."""
    out = dict(info)
    url = out.get("RetrieveURL")
    if isinstance(url, str):
        out["RetrieveURL"] = proxied(services, request, url)
    return out


def _rewritten(services: Services, request: Request, body: bytes) -> bytes:
    """A JSON body with the PACS root replaced by the proxy's, plain and in its ``\\/`` escaped form."""
    root = _pacs_root(services)
    if root is None:
        return body
    public = public_wado_root(request)
    for old, new in ((root, public), (root.replace("/", "\\/"), public.replace("/", "\\/"))):
        pattern = re.escape(old) + _AFTER_ROOT
        body = re.sub(pattern.encode(), new.encode().replace(b"\\", b"\\\\"), body)
    return body


def _wado_uri_url(services: ServicesDep) -> str:
    settings = services.settings
    if settings.dicomweb.wado_uri_url:
        return settings.dicomweb.wado_uri_url
    studies = (settings.studies or "").rstrip("/")
    if studies.endswith("/dicom-web"):  # Orthanc's layout: WADO-URI beside the DICOMweb root
        return studies[: -len("/dicom-web")] + "/wado"
    raise FeatureDisabledError(
        "WADO-URI needs the PACS's WADO-URI URL "
        "(setting dicomweb.wado_uri_url, LABELLOOP_DICOMWEB__WADO_URI_URL)"
    )


async def _forward(
    services: ServicesDep, request: Request, path: str, *, base: str | None = None
) -> Response:
    settings = services.settings
    if services.pacs is None or not settings.studies:
        raise FeatureDisabledError("The DICOMweb proxy needs a DICOMweb studies URL (--studies http://...)")
    root = (base or settings.studies).rstrip("/")
    target = f"{root}/{path.lstrip('/')}" if path else root
    if request.url.query:  # as the client encoded it (Orthanc's WADO-URI reads "/" but not "%2F")
        target = f"{target}?{request.url.query}"
    headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED_REQUEST}
    body = await request.body() if request.method == "POST" else None
    if body is not None and len(body) > settings.datastore.upload_max_bytes:
        raise PayloadTooLargeError()
    auth = None
    if settings.dicomweb.username:
        auth = httpx.BasicAuth(settings.dicomweb.username, settings.dicomweb.password or "")
    try:
        async with httpx.AsyncClient(timeout=settings.dicomweb.timeout_s, auth=auth) as client:
            answer = await client.request(request.method, target, headers=headers, content=body)
    except httpx.TimeoutException:
        return Response(b'{"detail":"The PACS did not answer in time"}', 504, media_type="application/json")
    except httpx.HTTPError as exc:
        detail = f'{{"detail":"The PACS cannot be reached: {type(exc).__name__}"}}'
        return Response(detail.encode(), 502, media_type="application/json")
    relayed = {k: v for k, v in answer.headers.items() if k.lower() in _RELAYED_RESPONSE}
    relayed.pop("content-length", None)  # the body is re-sent decoded
    relayed.pop("content-encoding", None)
    body = answer.content
    if answer.headers.get("content-type", "").split(";")[0].strip().lower() in _JSON_TYPES:
        body = _rewritten(services, request, body)
    return Response(body, answer.status_code, headers=relayed)


async def _stow(services: ServicesDep, principal: PrincipalDep, request: Request, path: str) -> Response:
    """Relay a STOW-RS; once the PACS has accepted it, its SEGs become label versions at once."""
    answer = await _forward(services, request, path)
    content_type = request.headers.get("content-type", "")
    if 200 <= answer.status_code < 300 and services.pacs is not None and "multipart/related" in content_type:
        body = await request.body()  # read once by _forward; Starlette keeps it
        provenance = client_provenance({}, principal)
        await anyio.to_thread.run_sync(
            save_stowed_segs,
            services.datastore,
            services.activelearning,
            services.pacs,
            body,
            content_type,
            provenance,
        )
    return answer


@router.get("/qido/{path:path}", summary="QIDO-RS (OHIF's qidoRoot)", response_class=Response)
async def proxy_qido(services: ServicesDep, request: Request, path: str) -> Response:
    return await _forward(services, request, path)


@router.get("/wado", summary="WADO-URI (OHIF's wadoUriRoot: ?requestType=WADO&...)", response_class=Response)
async def proxy_wado_uri(services: ServicesDep, request: Request) -> Response:
    return await _forward(services, request, "", base=_wado_uri_url(services))


@router.get("/wado/{path:path}", summary="WADO-RS (OHIF's wadoRoot)", response_class=Response)
async def proxy_wado(services: ServicesDep, request: Request, path: str) -> Response:
    return await _forward(services, request, path)


@router.post(
    "/wado/{path:path}", summary="STOW-RS on the WADO root (how OHIF stores a SEG)", response_class=Response
)
async def proxy_wado_stow(
    services: ServicesDep, principal: PrincipalDep, request: Request, path: str
) -> Response:
    return await _stow(services, principal, request, path)


@router.post("/stow/{path:path}", summary="STOW-RS", response_class=Response)
async def proxy_stow(services: ServicesDep, principal: PrincipalDep, request: Request, path: str) -> Response:
    return await _stow(services, principal, request, path)


@router.get("/{path:path}", summary="Any DICOMweb read", response_class=Response)
async def proxy(services: ServicesDep, request: Request, path: str) -> Response:
    return await _forward(services, request, path)


@router.post("/{path:path}", summary="Any DICOMweb write (STOW-RS on studies/...)", response_class=Response)
async def proxy_post(services: ServicesDep, principal: PrincipalDep, request: Request, path: str) -> Response:
    return await _stow(services, principal, request, path)
