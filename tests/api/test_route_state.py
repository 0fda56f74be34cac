"""Routes are built when the app is created, never by a request.

FastAPI builds an included router's pydantic models on the first request that reaches it; pydantic
then swaps the process's global warning filters (``warnings.catch_warnings``), which is not
thread-safe: two servers of one process answering their first requests at once lost each other's
filter and answered 500 (CI, ``test_two_servers_upload_the_same_new_ids_at_once``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
import requests

from tests.conftest import ServerFactory
from tests.support.http import upload
from tests.support.volumes import make_image


def test_no_request_builds_a_route(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert hasattr(fastapi.routing, "_populate_api_route_state"), "FastAPI builds routes elsewhere now"
    server = make_server()
    built: list[str] = []
    populate = fastapi.routing._populate_api_route_state

    def recorded(route: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        built.append(f"{path} in {threading.current_thread().name}")
        return populate(route, path, *args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "_populate_api_route_state", recorded)
    image = tmp_path / "case.nii.gz"
    make_image(image, seed=1)
    upload(server, "case", image)
    answers = [
        requests.get(f"{server.url}/info/", timeout=10),
        requests.get(f"{server.url}/datastore/", params={"output": "stats"}, timeout=10),
        requests.post(f"{server.url}/activelearning/random", json={}, timeout=10),
        requests.get(f"{server.url}/train/", timeout=10),
        requests.get(f"{server.url}/model/", timeout=10),
        requests.get(f"{server.url}/session/nothing", timeout=10),
    ]
    assert [a.status_code < 500 for a in answers] == [True] * len(answers), [a.text for a in answers]
    assert built == [], f"requests built routes: {built}"
