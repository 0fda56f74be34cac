"""The keys this server signs its access tokens with (HS256), kept 0600 under the data directory.

The file is made on first start (two servers starting at once agree on one: the first to create it
wins). ``rotate`` adds a new key that signs from then on and keeps the one before it, so tokens
signed before a rotation stay valid until they expire; a second rotation retires them. Servers
reread the file when it changes, so a rotation reaches running replicas without a restart.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SigningKey", "SigningKeys"]

_KEEP = 2


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes
    created_at: float


class SigningKeys:
    """The signing keys in ``path`` (JSON, readable by this user only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime_ns = -1
        self._keys: list[SigningKey] = []

    def _load(self) -> list[SigningKey]:
        with self._lock:
            if not self.path.exists():
                self._write_new([self._new_key()], exclusive=True)
            mtime = self.path.stat().st_mtime_ns
            if mtime != self._mtime_ns:
                raw = json.loads(self.path.read_text())
                self._keys = [
                    SigningKey(k["kid"], base64.b64decode(k["secret"]), float(k["created_at"]))
                    for k in raw["keys"]
                ]
                self._mtime_ns = mtime
            return self._keys

    @staticmethod
    def _new_key() -> SigningKey:
        return SigningKey(secrets.token_hex(8), secrets.token_bytes(32), time.time())

    def _write_new(self, keys: list[SigningKey], *, exclusive: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = {
            "keys": [
                {"kid": k.kid, "secret": base64.b64encode(k.secret).decode(), "created_at": k.created_at}
                for k in keys
            ]
        }
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, self.path)  # fails if another process made the file first
            except FileExistsError:
                pass
            tmp.unlink()
        else:
            os.replace(tmp, self.path)

    @property
    def current(self) -> SigningKey:
        """The key new tokens are signed with."""
        return self._load()[0]

    def find(self, kid: str) -> SigningKey | None:
        """The key a token names, if it is still kept."""
        return next((k for k in self._load() if k.kid == kid), None)

    def rotate(self) -> SigningKey:
        """Sign with a new key from now on; keep the previous one for the tokens it signed."""
        keys = self._load()
        with self._lock:
            new = self._new_key()
            self._write_new([new, *keys][:_KEEP], exclusive=False)
        return new
