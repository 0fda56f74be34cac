"""File downloads with the headers MONAI Label clients read (``Content-Disposition`` filename)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.background import BackgroundTask
from starlette.responses import FileResponse

from labelloop.errors import NotFoundError

__all__ = ["download"]


def download(
    path: Path,
    filename: str,
    *,
    etag: str | None = None,
    delete_after: bool = False,
) -> FileResponse:
    """Send ``path`` as an attachment named ``filename`` (its real extension kept)."""
    if not path.is_file():
        raise NotFoundError(f"The file of {filename} is missing on the server")
    headers = {"ETag": etag} if etag else None
    return FileResponse(
        path,
        filename=filename,
        media_type=mimetypes.guess_type(filename)[0] or "application/octet-stream",
        headers=headers,
        background=BackgroundTask(path.unlink, missing_ok=True) if delete_after else None,
    )
