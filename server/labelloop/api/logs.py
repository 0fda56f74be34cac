"""``/logs/``: the tail of the server log, as text or a self-refreshing page (§2.10)."""

from __future__ import annotations

import html
import os
import shutil
import subprocess
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from labelloop.api import schemas
from labelloop.api.deps import ServicesDep
from labelloop.api.schemas import errors
from labelloop.errors import NotFoundError

__all__ = ["router", "tail"]

router = APIRouter(prefix="/logs", tags=["logs"], responses=schemas.AUTH_ERRORS)

_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_PAGE = {"text/html": {"schema": {"type": "string"}}}


def tail(path: Path, lines: int, block: int = 64 * 1024) -> str:
    """The last ``lines`` lines of ``path``, read backwards from the end (not the whole file)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= lines:
            start = max(0, end - block)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:]) + ("\n" if text.endswith("\n") else "")


@router.get(
    "/",
    summary="Server log: an HTML viewer, or plain text with text=true",
    response_class=Response,
    responses={
        200: {
            "description": "The viewer page, or the log's last lines as text",
            "content": {**_PAGE, **_TEXT},
        },
        **errors(404, 422, 503),
    },
)
def logs(
    services: ServicesDep,
    lines: Annotated[
        int, Query(le=1_000_000, description="The last this many lines; 0 or less: the whole log")
    ] = 300,
    html_: Annotated[bool, Query(alias="html")] = True,
    text: Annotated[bool, Query()] = False,
    refresh: Annotated[int, Query(ge=0, le=86_400, description="Reload every N s (at least 3)")] = 0,
) -> Response:
    path = services.settings.log_file
    if not path.is_file():
        raise NotFoundError(f"Log File {path.name} NOT Found")
    if lines <= 0:
        return PlainTextResponse(path.read_text(encoding="utf-8", errors="replace"))
    content = tail(path, lines)
    if not html_ or text:
        return PlainTextResponse(content)
    refresh_s = max(3, refresh) if refresh else 0
    meta = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'>{meta}<title>labelloop log</title>"
        "<style>body{background:#111;color:#ddd;font:12px monospace}pre{white-space:pre-wrap}</style>"
        f"</head><body><pre>{html.escape(content)}</pre>"
        "<script>window.scrollTo(0, document.body.scrollHeight)</script></body></html>"
    )
    return HTMLResponse(page)


@router.get(
    "/gpu",
    summary="nvidia-smi output",
    response_class=Response,
    responses={200: {"description": "What nvidia-smi printed", "content": _TEXT}, **errors(404)},
)
def gpu() -> PlainTextResponse:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise NotFoundError("nvidia-smi is not available on this server (no NVIDIA GPU)")
    result = subprocess.run([exe], capture_output=True, text=True, timeout=10, check=False)
    return PlainTextResponse(result.stdout or result.stderr)
