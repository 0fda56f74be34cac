"""Small HTTP helpers the API tests share."""

from __future__ import annotations

from pathlib import Path

import requests

from tests.support.servers import LiveServer


def upload(server: LiveServer, image_id: str, path: Path) -> None:
    """``PUT /datastore/image?image=ID`` with ``path``; fails the test unless it answers 200."""
    with open(path, "rb") as f:
        r = requests.put(
            f"{server.url}/datastore/image",
            params={"image": image_id},
            files={"file": (path.name, f)},
            timeout=120,
        )
    assert r.status_code == 200, r.text
