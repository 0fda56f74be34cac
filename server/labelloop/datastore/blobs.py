"""Files the server owns, under the data directory, written atomically.

A blob is written to a temporary file in the same file system, fsynced, renamed into place
and its directory fsynced, so a crash leaves either the whole file or nothing. Callers
commit the database row only after ``put`` returns.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labelloop.processes import pid_alive

__all__ = ["BlobStore", "pid_alive", "sha256_file"]

_CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_OWNER = socket.gethostname().replace(".", "_") or "host"


class BlobStore:
    """Content under ``root``, addressed by keys like ``labels/3f/<uuid>.nrrd``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file of ``key``; keys are generated here, never taken from clients."""
        return self.root / key

    def new_key(self, kind: str, filename: str) -> str:
        """A fresh key ``<kind>/<xx>/<uuid>/<filename>`` (the basename keeps the real extension)."""
        token = uuid.uuid4().hex
        return f"{kind}/{token[:2]}/{token}/{filename}"

    def new_scratch(self, suffix: str = "") -> Path:
        """A fresh temporary file path under the data directory; the caller removes it.

        Its name starts with this host and process (``<host>.<pid>.``), so a server starting after
        a crash or an out-of-memory kill knows which leftovers no live process of this host owns.
        """
        return self.tmp / f"{_OWNER}.{os.getpid()}.{uuid.uuid4().hex}{suffix}"

    def clean_scratch(self, older_than_s: float) -> int:
        """Remove scratch files whose process on this host is gone, and any older than
        ``older_than_s`` (another host's, sharing the data directory); returns how many."""
        import time

        cutoff = time.time() - older_than_s
        removed = 0
        for path in self.tmp.iterdir():
            owner, _, rest = path.name.partition(".")
            pid = rest.partition(".")[0]
            dead = owner == _OWNER and pid.isdigit() and not pid_alive(int(pid))
            try:
                if dead or path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def keys_under(self, kind: str, older_than_s: float) -> Iterator[str]:
        """Keys of the files under ``<kind>/`` last changed more than ``older_than_s`` ago."""
        import time

        cutoff = time.time() - older_than_s
        base = self.root / kind
        if not base.is_dir():
            return
        for path in base.rglob("*"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    yield str(path.relative_to(self.root))
            except FileNotFoundError:
                continue

    @contextmanager
    def scratch(self, suffix: str = "") -> Iterator[Path]:
        """A temporary file path under the data directory, removed when the block ends."""
        path = self.new_scratch(suffix)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def put(self, key: str, source: Path, *, move: bool = False) -> tuple[str, int]:
        """Store ``source`` at ``key`` atomically; returns ``(sha256, size_bytes)``.

        With ``move``, a scratch file of this store is moved into place (read once for its
        checksum, no second copy); anything else is copied.
        """
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if move and source.parent == self.tmp:
            return self._move(source, target)
        partial = self.new_scratch(".partial")
        digest = hashlib.sha256()
        size = 0
        try:
            with open(source, "rb") as src, open(partial, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(partial, target)
            _fsync_dir(target.parent)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return digest.hexdigest(), size

    def put_bytes(self, key: str, data: bytes) -> tuple[str, int]:
        """Store ``data`` at ``key`` atomically (durably, as ``put``); returns ``(sha256, size_bytes)``."""
        with self.scratch(".partial") as scratch:
            scratch.write_bytes(data)
            return self.put(key, scratch, move=True)

    def _move(self, source: Path, target: Path) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        with open(source, "rb+") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
            os.fsync(f.fileno())
        os.replace(source, target)
        _fsync_dir(target.parent)
        return digest.hexdigest(), size

    def delete(self, key: str) -> None:
        """Remove a blob and the per-blob directory that held it."""
        target = self.path(key)
        target.unlink(missing_ok=True)
        try:
            target.parent.rmdir()  # only succeeds when empty: one directory per blob
        except OSError:
            pass
