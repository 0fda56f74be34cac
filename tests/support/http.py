"""Small HTTP helpers the API tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def publish_weights(server: LiveServer, weights: Path, model: str = "segmentation") -> dict[str, Any]:
    """``PUT /model/{model}`` with a weights file; fails the test unless it answers 200. The new
    version's record (``version``, ``active`` ...)."""
    with open(weights, "rb") as f:
        r = requests.put(f"{server.url}/model/{model}", files={"file": (weights.name, f)}, timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body
