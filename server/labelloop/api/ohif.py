"""The OHIF viewer at ``/ohif/``: OHIF's own prebuilt site, with a DICOMweb data source that is
this server's proxy (``/proxy/dicom/``), so a PACS's studies open in OHIF with no plugin to build.

``make ohif`` (``web/ohif/install.py``) puts the pinned ``@ohif/app`` release, rebased to
``/ohif/``, in the package's ``web/ohif/`` folder. The server writes ``/ohif/app-config.js``
itself (OHIF's data source on this origin's proxy, ``routerBasename`` ``/ohif/``); every other
path is a file of the site, and a path that names no file is one of OHIF's own pages (the study
list, ``/ohif/viewer?StudyInstanceUIDs=...``), answered with its ``index.html``. Files are looked
up by name inside the folder only; OHIF's codecs get ``application/wasm``.

The site holds no data: it opens without a log-in, like the dashboard. With auth on, the proxy's
answers need a log-in, and OHIF (which has no log-in page for it) sends what the browser holds:
the ``labelloop_session`` cookie that ``POST /auth/token`` sets (``api/permissions.py``).
OHIF's pages send a browser that holds no valid one to the dashboard's log-in first
(``/?next=/ohif/...``), which comes back once logged in.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import anyio
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

__all__ = ["OHIF_PREFIX", "mount_ohif", "ohif_dir"]

OHIF_PREFIX = "/ohif/"
_INDEX = "index.html"
#: By suffix; anything else is served as bytes.
_MEDIA_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".xml": "application/xml",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".txt": "text/plain; charset=utf-8",
    ".jsonc": "application/json",
}
#: OHIF names its bundles with their content hash: they can be kept a day; pages are asked again.
_CACHE = "public, max-age=86400"

_NOT_INSTALLED = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>OHIF is not installed</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>OHIF is not installed</h1>
<p>The OHIF viewer is installed with the web pages: run <code>make ohif</code> (or <code>make serve</code>)
in the repository and reload this page.</p>
</body></html>
"""


def ohif_dir() -> Path:
    """The installed OHIF site in the package (``make ohif``; it may not exist)."""
    return Path(str(importlib.resources.files("labelloop") / "web" / "ohif"))


def app_config(root: str) -> str:
    """OHIF's ``window.config`` for this server, with the proxy under ``root`` (the ASGI root path).

    The roots are absolute URLs on the page's own origin (OHIF's web workers resolve them too).
    Orthanc's DICOMweb plugin answers 404 to ``/thumbnail``, so thumbnails are rendered from frames.
    """
    proxy = f"{root.rstrip('/')}/proxy/dicom"
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "labelloop",
        "configuration": {
            "friendlyName": "labelloop: the PACS through its DICOMweb proxy",
            "name": "labelloop",
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": OHIF_PREFIX.rstrip("/"),
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "defaultDataSourceName": "labelloop",
        "dataSources": [source],
    }
    return (
        "// Written by labelloop (labelloop.api.ohif): OHIF's data source is this server's DICOMweb proxy.\n"
        f"window.config = {json.dumps(config, indent=2)};\n"
        "(function (origin) {\n"
        "  const source = window.config.dataSources[0].configuration;\n"
        f"  source.qidoRoot = origin + {json.dumps(proxy + '/qido')};\n"
        f"  source.wadoRoot = origin + {json.dumps(proxy + '/wado')};\n"
        f"  source.wadoUriRoot = origin + {json.dumps(proxy + '/wado')};\n"
        "})(window.location.origin);\n"
    )


def _file(folder: Path, path: str) -> Path | None:
    """The site's file at URL ``path`` (relative to ``/ohif/``), or None; nothing outside ``folder``."""
    parts = [part for part in path.split("/") if part]
    if not parts or any(part in (".", "..") or "\\" in part or part.startswith(".") for part in parts):
        return None
    candidate = folder.joinpath(*parts)
    try:
        resolved = candidate.resolve(strict=True)
    except (FileNotFoundError, OSError):
        return None
    if not resolved.is_file() or folder.resolve() not in resolved.parents:
        return None
    return resolved


def mount_ohif(
    app: FastAPI,
    *,
    auth_enabled: bool,
    signed_in: Callable[[Request], Awaitable[bool]] | None = None,
    folder: Path | None = None,
) -> None:
    """Serve OHIF's site at ``/ohif/`` (``folder``: the installed site, default ``ohif_dir()``).

    ``signed_in(request) -> bool`` says whether a browser holds a log-in the proxy accepts; with
    auth on, ``/ohif/`` and OHIF's pages send one that does not to the dashboard to log in.
    """
    site = folder or ohif_dir()

    async def index(request: Request) -> Response:
        path = site / _INDEX
        if not await anyio.Path(path).is_file():
            return HTMLResponse(_NOT_INSTALLED, status_code=404, headers={"Cache-Control": "no-cache"})
        if auth_enabled and signed_in is not None and not await signed_in(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            # The dashboard asks for a log-in (which sets the cookie), then comes back here.
            return RedirectResponse(f"/?next={quote(target, safe='')}", status_code=303)
        return FileResponse(path, media_type=_MEDIA_TYPES[".html"], headers={"Cache-Control": "no-cache"})

    async def config(request: Request) -> Response:
        text = app_config(request.scope.get("root_path", ""))
        return Response(text, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    async def serve(request: Request) -> Response:
        path = request.path_params["path"]
        found = await anyio.to_thread.run_sync(_file, site, path)
        if found is not None and found.name != _INDEX:
            media_type = _MEDIA_TYPES.get(found.suffix, "application/octet-stream")
            headers = {"Cache-Control": _CACHE, "X-Content-Type-Options": "nosniff"}
            return FileResponse(found, media_type=media_type, headers=headers)
        last = path.rsplit("/", 1)[-1]
        if "." in last and found is None:  # a file that the site does not have
            return Response(
                json.dumps({"detail": f"OHIF has no file {path!r}"}), 404, media_type="application/json"
            )
        return await index(request)  # one of OHIF's pages (its router reads the path)

    async def to_index(_request: Request) -> RedirectResponse:
        return RedirectResponse(OHIF_PREFIX, status_code=308)

    app.add_route(OHIF_PREFIX.rstrip("/"), to_index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route(OHIF_PREFIX, index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route(OHIF_PREFIX + "app-config.js", config, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route(OHIF_PREFIX + "{path:path}", serve, methods=["GET", "HEAD"], include_in_schema=False)
