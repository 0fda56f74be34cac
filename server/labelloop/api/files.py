"""File downloads with the headers MONAI Label clients read (``Content-Disposition`` filename)."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from starlette.responses import FileResponse, Response, StreamingResponse

from labelloop.errors import NotFoundError

__all__ = ["download"]

_CHUNK = 1024 * 1024


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    with file:
        while chunk := file.read(_CHUNK):
            yield chunk


def _disposition(filename: str) -> str:
    """``attachment`` with the name as Starlette's ``FileResponse`` writes it (RFC 6266 for non-ASCII)."""
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'


def download(
    path: Path,
    filename: str,
    *,
    etag: str | None = None,
    delete_after: bool = False,
) -> Response:
    """Send ``path`` as an attachment named ``filename`` (its real extension kept).

    ``delete_after``: ``path`` is a scratch file made for this answer. It is opened and unlinked
    before the answer starts, so it is gone whether or not the client reads the whole body.
    """
    if not path.is_file():
        raise NotFoundError(f"The file of {filename} is missing on the server")
    media_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    headers = {"ETag": etag} if etag else {}
    if not delete_after:
        return FileResponse(path, filename=filename, media_type=media_type, headers=headers or None)
    file = open(path, "rb")  # closed by _chunks once the body is sent
    path.unlink()
    headers["Content-Length"] = str(os.fstat(file.fileno()).st_size)
    headers["Content-Disposition"] = _disposition(filename)
    return StreamingResponse(_chunks(file), media_type=media_type, headers=headers)
