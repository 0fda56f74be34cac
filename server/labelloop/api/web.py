"""The web pages: the curators' dashboard at ``/``, the annotator at ``/annotate/``, and their
scripts and style sheets at ``/web/{name}``.

The page is built from ``web/`` at the repository root (``make web``: ``npm ci``, then esbuild)
into the package's ``web/static/`` folder, which the wheel includes; the server never needs npm
or a CDN. Its files are served from a fixed list (no path from the URL reaches the file system)
and open without a log-in: they hold no data, which the pages read from the JSON API with the
user's bearer token. Without a build ``/`` still answers 200 (MONAI Label's clients check that
the server answers there) with a page that says to run ``make web``; so does ``/annotate/``.
"""

from __future__ import annotations

import html
import importlib.resources
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

__all__ = ["ASSETS", "PAGES", "WEB_PATHS", "mount_web", "static_dir"]

ROOT_PATH = "/"
ANNOTATE_PATH = "/annotate/"
ASSET_PREFIX = "/web/"
INDEX = "index.html"
#: URL path -> the built page it serves (``web/build.mjs`` writes them).
PAGES: dict[str, str] = {ROOT_PATH: INDEX, ANNOTATE_PATH: "annotate.html"}
#: Where the page says whether auth is on, so that it asks for a log-in without first calling
#: ``GET /auth/`` (a 404 there, with auth off, is an error in the browser's console).
AUTH_MARK = 'name="labelloop-auth" content=""'

#: URL name -> media type: the bundle's files (``web/build.mjs`` writes exactly these).
ASSETS: dict[str, str] = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "annotate.js": "text/javascript",
    "annotate.css": "text/css",
}

#: Every path this module answers: open without a log-in (``/annotate`` redirects to ``/annotate/``).
WEB_PATHS: frozenset[str] = frozenset(
    set(PAGES) | {ANNOTATE_PATH.rstrip("/")} | {ASSET_PREFIX + name for name in ASSETS}
)

#: A day: ``index.html`` names the files with their content hash in the query string.
_CACHE = "public, max-age=86400"
#: The pages load nothing from elsewhere and run no inline script; uPlot and NiiVue set inline styles.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>labelloop</title><link rel="icon" href="data:,"></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>labelloop {version}</h1>
<p>The server runs. The web pages (the dashboard and the annotator) have not been built: run
<code>make web</code> in the repository (it needs npm) and reload this page.</p>
<p>The API explorer is at <a href="/docs">/docs</a>.</p>
</body></html>
"""


def static_dir() -> Path:
    """The built pages' folder in the installed package (it may not exist: ``make web``)."""
    return Path(str(importlib.resources.files("labelloop") / "web" / "static"))


def mount_web(app: FastAPI, *, auth_enabled: bool, static: Path | None = None) -> None:
    """Add the pages and their files to ``app``; ``auth_enabled`` tells the pages to ask for a log-in.

    ``static`` is the built folder (default: the package's, ``static_dir()``).
    """
    static = static or static_dir()
    mark = AUTH_MARK.replace('content=""', f'content="{"on" if auth_enabled else "off"}"')

    def page(name: str) -> Callable[[Request], Awaitable[HTMLResponse]]:
        async def serve(_request: Request) -> HTMLResponse:
            path = static / name
            if not await anyio.Path(path).is_file():
                text = _NOT_BUILT.format(version=html.escape(app.version))
                return HTMLResponse(text, headers={"Cache-Control": "no-cache"})
            text = (await anyio.Path(path).read_text(encoding="utf-8")).replace(AUTH_MARK, mark)
            return HTMLResponse(text, headers={"Cache-Control": "no-cache", "Content-Security-Policy": _CSP})

        return serve

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        path = static / name
        if name not in ASSETS or not await anyio.Path(path).is_file():
            return JSONResponse({"detail": f"No file {name!r} in the web pages"}, status_code=404)
        return FileResponse(path, media_type=ASSETS[name], headers={"Cache-Control": _CACHE})

    async def to_annotate(_request: Request) -> RedirectResponse:
        return RedirectResponse(ANNOTATE_PATH, status_code=308)

    for url_path, name in PAGES.items():
        app.add_route(url_path, page(name), methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route(ANNOTATE_PATH.rstrip("/"), to_annotate, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route(ASSET_PREFIX + "{name}", asset, methods=["GET", "HEAD"], include_in_schema=False)
