"""Small HTTP helpers the API tests share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from tests.support.servers import LiveServer


def upload(
    server: LiveServer,
    image_id: str,
    path: Path,
    *,
    headers: dict[str, str] | None = None,
    info: dict[str, Any] | None = None,
) -> None:
    """``PUT /datastore/image?image=ID`` with ``path`` (and ``info`` as MONAI Label's ``params`` form
    field, ``headers`` such as a bearer token); fails the test unless it answers 200."""
    with open(path, "rb") as f:
        r = requests.put(
            f"{server.url}/datastore/image",
            params={"image": image_id},
            files={"file": (path.name, f)},
            data={"params": json.dumps(info)} if info is not None else None,
            headers=headers,
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
