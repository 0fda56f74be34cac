"""``GET /datastore/label/versions`` as a curator uses it: across images, filtered, paged; and strict
query parameters on our own endpoints, while MONAI Label's keep ignoring what they do not know."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from labelloop.auth import ANNOTATOR, UserStore
from labelloop.db import Database
from labelloop.settings import AuthSettings
from tests.support.http import upload
from tests.support.servers import LiveServer

Volumes = Callable[..., Path]
PASSWORD = "correct horse battery staple"


def _save(
    server: LiveServer,
    image_id: str,
    path: Path,
    tag: str = "final",
    *,
    client_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    params = {"client_id": client_id} if client_id else {}
    with open(path, "rb") as f:
        answer = requests.put(
            f"{server.url}/datastore/label",
            params={"image": image_id, "tag": tag},
            files={"label": (path.name, f)},
            data={"params": json.dumps(params)},
            headers=headers,
            timeout=30,
        )
    assert answer.status_code == 200, answer.text


def _history(server: LiveServer, headers: dict[str, str] | None = None, **params: Any) -> list[Any]:
    answer = requests.get(
        f"{server.url}/datastore/label/versions", params=params, headers=headers, timeout=30
    )
    assert answer.status_code == 200, answer.text
    body: list[Any] = answer.json()
    return body


def _keys(entries: list[Any]) -> list[tuple[str, str, int]]:
    return [(e["image"], e["tag"], e["version"]) for e in entries]


def _error(answer: requests.Response, status: int, *words: str) -> str:
    assert answer.status_code == status, f"{answer.status_code}: {answer.text}"
    body = answer.json()
    assert list(body) == ["detail"], body
    detail = json.dumps(body["detail"])
    for word in words:
        assert word in detail, body
    return detail


@pytest.fixture
def labelled(server: LiveServer, volumes: Volumes) -> tuple[LiveServer, float]:
    """Images a and b; saves by client carol, then (after the returned boundary time) by dave.

    Oldest first: a/final v1 (carol), b/final v1 (carol), a/original v1 (carol), | a/final v2 (dave),
    b/final v2 (dave).
    """
    image, label = volumes("img.nii.gz"), volumes("lab.nrrd", kind="label")
    upload(server, "a", image)
    upload(server, "b", image)
    _save(server, "a", label, client_id="carol")
    _save(server, "b", label, client_id="carol")
    _save(server, "a", label, "original", client_id="carol")
    time.sleep(0.05)
    boundary = time.time()
    time.sleep(0.05)
    _save(server, "a", label, client_id="dave")
    _save(server, "b", label, client_id="dave")
    return server, boundary


ALL = [("b", "final", 2), ("a", "final", 2), ("a", "original", 1), ("b", "final", 1), ("a", "final", 1)]


def test_without_image_the_history_spans_every_image_newest_first(
    labelled: tuple[LiveServer, float],
) -> None:
    server, _ = labelled
    entries = _history(server)
    assert _keys(entries) == ALL
    assert [e["ts"] for e in entries] == sorted((e["ts"] for e in entries), reverse=True)
    assert _keys(_history(server, image="a")) == [k for k in ALL if k[0] == "a"]


def test_tag_client_id_and_since_filter_across_images(labelled: tuple[LiveServer, float]) -> None:
    server, boundary = labelled
    assert _keys(_history(server, tag="final")) == [k for k in ALL if k[1] == "final"]
    assert _keys(_history(server, client_id="dave")) == [("b", "final", 2), ("a", "final", 2)]
    assert _keys(_history(server, client_id="carol", tag="final")) == [("b", "final", 1), ("a", "final", 1)]
    assert _history(server, client_id="nobody") == []
    # since: epoch seconds, or ISO 8601 (UTC when it has no offset); inclusive.
    assert _keys(_history(server, since=boundary)) == ALL[:2]
    iso = datetime.fromtimestamp(boundary, UTC).isoformat()
    assert _keys(_history(server, since=iso)) == ALL[:2]
    assert _keys(_history(server, since=iso.replace("+00:00", ""))) == ALL[:2]
    assert _keys(_history(server, since=iso.replace("+00:00", "Z"), image="b")) == [("b", "final", 2)]
    newest = _history(server)[0]
    assert _keys(_history(server, since=newest["ts"])) == [ALL[0]]  # inclusive of its own time


def test_the_history_comes_in_pages_linked_by_a_cursor_that_saves_do_not_shift(
    labelled: tuple[LiveServer, float], volumes: Volumes
) -> None:
    server, _ = labelled
    first = requests.get(f"{server.url}/datastore/label/versions", params={"limit": 2}, timeout=30)
    assert first.status_code == 200, first.text
    assert _keys(first.json()) == ALL[:2]
    # A save between pages lands before the first page; the next page goes on where this one ended.
    _save(server, "b", volumes("lab.nrrd", kind="label"), client_id="erin")
    seen = first.json()
    link: str | None = first.links["next"]["url"]
    while link:
        page = requests.get(link, timeout=30)
        assert page.status_code == 200, page.text
        assert 1 <= len(page.json()) <= 2
        seen += page.json()
        link = page.links.get("next", {}).get("url")
    assert _keys(seen) == ALL
    # The last page has no Link; a page that ends exactly at the end has none either.
    whole = requests.get(f"{server.url}/datastore/label/versions", params={"limit": 6}, timeout=30)
    assert len(whole.json()) == 6 and "next" not in whole.links


def test_limit_cursor_and_since_are_validated(labelled: tuple[LiveServer, float]) -> None:
    server, _ = labelled
    url = f"{server.url}/datastore/label/versions"
    for limit in (0, 1001, "x"):
        _error(requests.get(url, params={"limit": limit}, timeout=30), 422)
    assert len(_history(server, limit=1000)) == 5
    _error(requests.get(url, params={"cursor": "not-a-cursor"}, timeout=30), 422, "cursor")
    _error(requests.get(url, params={"cursor": "WyJ4IiwxXQ"}, timeout=30), 422, "cursor")  # ["x",1]
    for since in ("yesterday", "nan", "2025-13-01"):
        _error(requests.get(url, params={"since": since}, timeout=30), 422, "since")
    _error(requests.get(url, params={"image": "../x"}, timeout=30), 400)
    _error(requests.get(url, params={"image": "nope"}, timeout=30), 404, "nope")


# ---------------------------------------------------------------- author (auth on)


@pytest.fixture
def auth_server(make_server: Callable[..., LiveServer]) -> Iterator[LiveServer]:
    server = make_server(auth=AuthSettings(enabled=True))
    db = Database(server.settings.resolved_database_url)
    try:
        store = UserStore(db)
        for name in ("alice", "bob"):
            store.add(name, [ANNOTATOR], PASSWORD)
    finally:
        db.dispose()
    yield server


def _bearer(server: LiveServer, name: str) -> dict[str, str]:
    answer = requests.post(
        f"{server.url}/auth/token", data={"username": name, "password": PASSWORD}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_author_filters_by_the_logged_in_user_across_images(
    auth_server: LiveServer, volumes: Volumes
) -> None:
    alice, bob = _bearer(auth_server, "alice"), _bearer(auth_server, "bob")
    image, label = volumes("img.nii.gz"), volumes("lab.nrrd", kind="label")
    upload(auth_server, "a", image, headers=alice)
    upload(auth_server, "b", image, headers=alice)
    _save(auth_server, "a", label, headers=alice)
    _save(auth_server, "b", label, headers=bob, client_id="bobs-slicer")
    _save(auth_server, "a", label, headers=bob)
    by_bob = _history(auth_server, bob, author="bob")
    assert _keys(by_bob) == [("a", "final", 2), ("b", "final", 1)]
    assert {e["author"] for e in by_bob} == {"bob"}
    assert _keys(_history(auth_server, alice, author="alice")) == [("a", "final", 1)]
    assert _keys(_history(auth_server, alice, author="bob", client_id="bobs-slicer")) == [("b", "final", 1)]
    assert _history(auth_server, alice, author="carol") == []


# ---------------------------------------------------------------- strict and lenient query parameters


def test_an_unknown_parameter_on_our_endpoints_is_a_400_that_names_it(
    labelled: tuple[LiveServer, float],
) -> None:
    server, _ = labelled
    url = server.url
    detail = _error(
        requests.get(f"{url}/datastore/label/versions", params={"image": "a", "autor": "x"}, timeout=30),
        400,
        "'autor'",
    )
    assert "author" in detail  # and says what the route takes
    _error(
        requests.get(f"{url}/datastore/label/versions", params={"clientid": "c", "page": "2"}, timeout=30),
        400,
        "'clientid'",
        "'page'",
    )
    # Known parameters pass.
    listed = requests.get(f"{url}/datastore/label/versions", params={"image": "a", "limit": 1}, timeout=30)
    assert listed.status_code == 200


def test_monai_label_endpoints_still_ignore_unknown_parameters(
    labelled: tuple[LiveServer, float], volumes: Volumes
) -> None:
    server, _ = labelled
    url = server.url
    extra = {"foo": "1", "client_id": "carol"}
    for path, params in (
        ("/info/", {}),
        ("/datastore/", {"output": "stats"}),
        ("/datastore/", {"output": "all"}),
        ("/datastore/image/info", {"image": "a"}),
        ("/datastore/label/info", {"label": "a", "tag": "final"}),
        ("/datastore/label", {"label": "a", "tag": "final"}),
        # MONAI Label's export (its only parameter is limit_cases)
        ("/datastore/dataset", {"limit_cases": "1"}),
    ):
        answer = requests.get(f"{url}{path}", params={**params, **extra}, timeout=30)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text}"
    label = volumes("lab.nrrd", kind="label")
    with open(label, "rb") as f:
        saved = requests.put(
            f"{url}/datastore/label",
            params={"image": "a", "tag": "final", "foo": "1"},
            files={"label": (label.name, f)},
            timeout=30,
        )
    assert saved.status_code == 200, saved.text
