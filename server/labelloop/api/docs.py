"""The API explorer (Swagger UI at ``/docs``, ReDoc at ``/redoc``) served with no CDN.

``/`` is the dashboard's (``api/web.py``).

FastAPI's own pages load their JavaScript from jsDelivr, so on a hospital network without
internet they stay blank. The same pages here load Swagger UI and ReDoc from the files that the
``fastapi-offline`` wheel ships, served by this server from a fixed list (no path from the URL
reaches the file system).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

__all__ = ["ASSETS", "DOCS_PATHS", "mount_docs"]

SWAGGER_PATH = "/docs"
REDOC_PATH = "/redoc"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
ASSET_PREFIX = "/docs/assets/"

#: URL name -> (file in the fastapi_offline package's ``static`` folder, media type).
ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": ("swagger-ui.css", "text/css"),
    "redoc.standalone.js": ("redoc.standalone.js", "text/javascript"),
    "favicon.png": ("favicon.png", "image/png"),
}

#: Every path this module answers: open without a log-in (they hold no data; the schema they
#: show is ``/openapi.json``, open too).
DOCS_PATHS: frozenset[str] = frozenset(
    {SWAGGER_PATH, REDOC_PATH, OAUTH2_REDIRECT_PATH} | {ASSET_PREFIX + name for name in ASSETS}
)

#: A day: the files change only with the package, and the version is in the page's URL.
_CACHE = "public, max-age=86400"

#: The pages may load nothing from elsewhere: ReDoc's footer logo (cdn.redoc.ly) is refused by the
#: browser, not fetched. Both pages start their scripts inline, as FastAPI writes them.
_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def _static_dir() -> Path:
    return Path(str(importlib.resources.files("fastapi_offline") / "static"))


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _CSP
    return page


def mount_docs(app: FastAPI) -> None:
    """Add the explorer's pages and files to ``app`` (created with ``docs_url=None, redoc_url=None``)."""
    assert app.openapi_url is not None
    openapi_url = app.openapi_url
    title = app.title
    static = _static_dir()
    missing = [file for file, _ in ASSETS.values() if not (static / file).is_file()]
    if missing:
        raise RuntimeError(f"the API explorer's files are missing from {static}: {missing}")

    def asset_url(name: str) -> str:
        # The version in the query string makes a browser fetch the files again after an upgrade.
        return f"{ASSET_PREFIX}{name}?v={app.version}"

    async def swagger(_request: Request) -> HTMLResponse:
        return _offline(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{title} - API",
                swagger_js_url=asset_url("swagger-ui-bundle.js"),
                swagger_css_url=asset_url("swagger-ui.css"),
                swagger_favicon_url=asset_url("favicon.png"),
                oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
            )
        )

    async def redoc(_request: Request) -> HTMLResponse:
        return _offline(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{title} - API reference",
                redoc_js_url=asset_url("redoc.standalone.js"),
                redoc_favicon_url=asset_url("favicon.png"),
                with_google_fonts=False,
            )
        )

    async def oauth2_redirect(_request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return JSONResponse({"detail": f"No file {name!r} in the API explorer"}, status_code=404)
        file, media_type = ASSETS[name]
        return FileResponse(static / file, media_type=media_type, headers={"Cache-Control": _CACHE})

    app.add_route(SWAGGER_PATH, swagger, include_in_schema=False)
    app.add_route(REDOC_PATH, redoc, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_PATH, oauth2_redirect, include_in_schema=False)
    app.add_route(ASSET_PREFIX + "{name}", asset, include_in_schema=False)
