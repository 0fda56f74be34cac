"""``/info/`` and the path conventions clients depend on (contract sections 1.1, 4, 9)."""

from __future__ import annotations

import requests
from monailabel.client import MONAILabelClient

from tests.support.servers import LiveServer


def test_info_has_the_shape_slicer_and_ohif_need(sqlite_server: LiveServer) -> None:
    info = MONAILabelClient(sqlite_server.url).info()
    assert isinstance(info["labels"], list) and info["labels"][0] == "background"
    assert "liver" in info["labels"]
    for key in ("models", "trainers", "strategies", "scoring", "train_stats"):
        assert isinstance(info[key], dict)
    assert not info.get("config"), "a truthy top-level config makes Slicer abort"
    assert info["datastore"] == {"total": 0, "completed": 0, "label_tags": {}}


def test_non_canonical_paths_redirect_with_307(sqlite_server: LiveServer) -> None:
    response = requests.get(f"{sqlite_server.url}/info", allow_redirects=False, timeout=5)
    assert response.status_code == 307
    assert response.headers["location"] == f"{sqlite_server.url}/info/"
    response = requests.get(f"{sqlite_server.url}/datastore", allow_redirects=False, timeout=5)
    assert response.status_code == 307
    assert response.headers["location"].endswith("/datastore/")


def test_auth_answers_404_while_auth_is_off(sqlite_server: LiveServer) -> None:
    assert requests.get(f"{sqlite_server.url}/auth/", timeout=5).status_code == 404
    assert MONAILabelClient(sqlite_server.url).auth_enabled() is False


def test_wrong_method_is_405_with_detail(sqlite_server: LiveServer) -> None:
    response = requests.get(f"{sqlite_server.url}/session/", timeout=5)
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}


def test_root_serves_the_api_page_for_connectivity_checks(sqlite_server: LiveServer) -> None:
    response = requests.get(f"{sqlite_server.url}/", timeout=5)
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
