"""``/activelearning/``: leases keep annotators apart; expiry, release, saves end leases; double reading."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import requests
from monailabel.client import MONAILabelClient

from labelloop.imaging import read_volume, write_volume
from labelloop.settings import ActiveLearningSettings
from tests.conftest import ServerFactory
from tests.support.servers import LiveServer
from tests.support.volumes import DEFAULT_AFFINE, make_image, make_label

Volumes = Callable[..., Path]


def _upload_many(server: LiveServer, path: Path, count: int) -> list[str]:
    ids = [f"case{i:02d}" for i in range(count)]
    for image_id in ids:
        with open(path, "rb") as f:
            r = requests.put(
                f"{server.url}/datastore/image",
                params={"image": image_id},
                files={"file": (path.name, f)},
                timeout=30,
            )
        assert r.status_code == 200, r.text
    return ids


def _next(server: LiveServer, strategy: str, client: str | None, **extra: Any) -> requests.Response:
    body = {"client_id": client, **extra} if client else extra
    return requests.post(f"{server.url}/activelearning/{strategy}", json=body, timeout=60)


def _save(server: LiveServer, image_id: str, label: Path, client: str, tag: str = "") -> dict[str, Any]:
    with open(label, "rb") as f:
        r = requests.put(
            f"{server.url}/datastore/label",
            params={"image": image_id, **({"tag": tag} if tag else {})},
            files={"label": (label.name, f)},
            data={"params": json.dumps({"client_id": client})},
            timeout=60,
        )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_16_clients_at_once_get_16_different_images(server: LiveServer, volumes: Volumes) -> None:
    _upload_many(server, volumes("ct.nii.gz"), 20)
    for strategy in ("first", "random"):
        clients = [f"{strategy}-annotator-{i}" for i in range(16)]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(partial(_next, server, strategy), clients))
        assert [a.status_code for a in answers] == [200] * 16, [
            a.text for a in answers if a.status_code != 200
        ]
        ids = [a.json()["id"] for a in answers]
        assert len(set(ids)) == 16, f"{strategy} handed one image to two annotators: {ids}"
        for client in clients:  # give them back for the next strategy
            image = next(a.json()["id"] for a in answers if a.json()["lease"]["holder"] == client)
            assert (
                requests.delete(
                    f"{server.url}/activelearning/lease",
                    params={"image": image, "client_id": client},
                    timeout=10,
                ).status_code
                == 200
            )


def test_nothing_left_is_200_empty_and_never_a_5xx(sqlite_server: LiveServer, volumes: Volumes) -> None:
    _upload_many(sqlite_server, volumes("ct.nii.gz"), 3)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: _next(sqlite_server, "random", f"c{i}"), range(12)))
    assert all(a.status_code == 200 for a in answers)
    handed = [a.json()["id"] for a in answers if a.json()]
    assert sorted(handed) == ["case00", "case01", "case02"]
    assert sum(1 for a in answers if a.json() == {}) == 9


def test_the_same_caller_gets_its_current_lease_back(sqlite_server: LiveServer, volumes: Volumes) -> None:
    _upload_many(sqlite_server, volumes("ct.nii.gz"), 4)
    client = MONAILabelClient(sqlite_server.url, client_id="slicer-1")
    first = client.next_sample("random", {})
    again = client.next_sample("random", {})
    assert again["id"] == first["id"] and again["lease"]["renewed"] is True
    for key in ("id", "name", "path", "ts", "checksum"):
        assert key in first
    assert Path(first["path"]).name == first["name"]


def test_a_final_label_ends_the_lease_and_finishes_the_image(
    sqlite_server: LiveServer, volumes: Volumes
) -> None:
    _upload_many(sqlite_server, volumes("ct.nii.gz"), 2)
    label = volumes("lab.nrrd", kind="label")
    got = _next(sqlite_server, "first", "ann").json()
    saved = _save(sqlite_server, got["id"], label, "ann")
    assert saved["lease_ended"] is True
    assert requests.get(f"{sqlite_server.url}/activelearning/leases", timeout=10).json() == []
    following = _next(sqlite_server, "first", "ann").json()
    assert following["id"] != got["id"], "a finished image is not handed out again"
    assert _next(sqlite_server, "first", "other").json() == {}, "the other image is leased to ann"


def test_a_lease_expires_and_its_image_returns_to_the_pool(
    make_server: ServerFactory, volumes: Volumes
) -> None:
    server = make_server(activelearning=ActiveLearningSettings(lease_s=1.0))
    _upload_many(server, volumes("ct.nii.gz"), 1)
    assert _next(server, "first", "a").json()["id"] == "case00"
    assert _next(server, "first", "b").json() == {}
    time.sleep(1.3)
    assert _next(server, "first", "b").json()["id"] == "case00"


def test_release_returns_the_image_and_unknown_release_is_404(
    sqlite_server: LiveServer, volumes: Volumes
) -> None:
    _upload_many(sqlite_server, volumes("ct.nii.gz"), 1)
    assert _next(sqlite_server, "last", "a").json()["id"] == "case00"
    gone = requests.delete(
        f"{sqlite_server.url}/activelearning/lease", params={"image": "case00", "client_id": "b"}, timeout=10
    )
    assert gone.status_code == 404 and "detail" in gone.json()
    ok = requests.delete(
        f"{sqlite_server.url}/activelearning/lease", params={"image": "case00", "client_id": "a"}, timeout=10
    )
    assert ok.status_code == 200
    assert _next(sqlite_server, "last", "b").json()["id"] == "case00"


def test_the_strategy_is_recorded_on_the_image_info(sqlite_server: LiveServer, volumes: Volumes) -> None:
    _upload_many(sqlite_server, volumes("ct.nii.gz"), 1)
    _next(sqlite_server, "first", "rec")
    info = requests.get(
        f"{sqlite_server.url}/datastore/image/info", params={"image": "case00"}, timeout=10
    ).json()
    assert info["strategy"]["first"]["client_id"] == "rec"


def test_unknown_strategy_is_404_and_listed_strategies_work(sqlite_server: LiveServer) -> None:
    r = _next(sqlite_server, "nope", "a")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    strategies = requests.get(f"{sqlite_server.url}/info/", timeout=10).json()["strategies"]
    assert {"random", "first", "last"} <= set(strategies)
    assert all("description" in s for s in strategies.values())
    assert requests.post(f"{sqlite_server.url}/activelearning/", timeout=10).status_code in (404, 405)


def test_double_reading_hands_an_image_to_exactly_n_clients(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(activelearning=ActiveLearningSettings(reads=2))
    image = tmp_path / "ct.nii.gz"
    make_image(image)
    _upload_many(server, image, 1)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: _next(server, "first", f"reader{i}"), range(6)))
    holders = [a.json()["lease"]["holder"] for a in answers if a.json()]
    assert len(holders) == 2 and len(set(holders)) == 2
    # Two readers draw labels that differ in a known way; their consensus becomes the final label.
    truth = make_label(tmp_path / "a.nrrd", seed=1)
    other = truth.copy()
    other[:4] = 0
    write_volume(tmp_path / "b.nrrd", other, DEFAULT_AFFINE)
    first = _save(server, "case00", tmp_path / "a.nrrd", holders[0])
    assert first["tag"] == f"read.{holders[0]}" and "agreement" not in first
    stats = requests.get(f"{server.url}/datastore/", timeout=10).json()
    assert stats["completed"] == 0, "one read of two does not complete the image"
    second = _save(server, "case00", tmp_path / "b.nrrd", holders[1])
    assert second["tag"] == f"read.{holders[1]}"
    assert 0.5 < second["agreement"]["dice"] < 1.0
    stats = requests.get(f"{server.url}/datastore/", timeout=10).json()
    assert stats["completed"] == 1
    agreement = requests.get(
        f"{server.url}/activelearning/agreement", params={"image": "case00"}, timeout=10
    ).json()
    assert sorted(agreement["reads"]) == sorted(f"read.{h}" for h in holders)
    assert agreement["agreement"]["dice"] == second["agreement"]["dice"]
    assert _next(server, "first", "reader-late").json() == {}
    final = requests.get(
        f"{server.url}/datastore/label", params={"label": "case00", "tag": "final"}, timeout=10
    )
    path = tmp_path / "final.nii.gz"
    path.write_bytes(final.content)
    consensus = np.asarray(read_volume(path).array)
    agree = truth == other
    assert np.array_equal(consensus[agree], truth[agree]), "where readers agree, the consensus is their label"


def test_skip_ends_the_lease_with_its_reason_and_hands_out_the_next_case(
    server: LiveServer, volumes: Volumes
) -> None:
    """Issue 17, item 5: one lease no longer blocks every strategy; the client reaches skip too."""
    ids = set(_upload_many(server, volumes("ct.nii.gz"), 3))
    first = _next(server, "first", "ann").json()["id"]
    assert _next(server, "random", "ann").json()["id"] == first, "asking again renews the open lease"

    client = MONAILabelClient(server.url, client_id="ann")
    second = client.next_sample("first", {"skip": True, "skip_reason": "motion artefact"})
    assert second["id"] != first and second["skipped"] == [first]
    assert second["lease"]["renewed"] is False
    # The skipped case goes to someone else, never back to the one who skipped it.
    assert _next(server, "first", "bob").json()["id"] == first
    third = _next(server, "last", "ann", skip=True).json()
    assert third["skipped"] == [second["id"]] and {first, second["id"], third["id"]} == ids
    assert _next(server, "first", "ann", skip=True).json() == {}, "nothing is left that ann did not skip"

    skips = requests.get(f"{server.url}/activelearning/skips", timeout=30).json()
    assert [(s["image"], s["holder"], s["reason"]) for s in skips] == [
        (third["id"], "ann", None),
        (second["id"], "ann", None),
        (first, "ann", "motion artefact"),
    ]
    since = skips[1]["skipped_ts"]
    later = requests.get(f"{server.url}/activelearning/skips", params={"since": since}, timeout=30).json()
    assert [s["image"] for s in later] == [third["id"]]
    leases = requests.get(f"{server.url}/activelearning/leases", timeout=30).json()
    assert [(lease["image"], lease["holder"]) for lease in leases] == [(first, "bob")]


def test_bad_skip_params_are_422_and_change_nothing(sqlite_server: LiveServer, volumes: Volumes) -> None:
    _upload_many(sqlite_server, volumes("ct.nii.gz"), 2)
    held = _next(sqlite_server, "first", "ann").json()["id"]
    for extra in ({"skip": "yes"}, {"skip": True, "skip_reason": "x" * 1025}, {"skip_reason": "why"}):
        r = _next(sqlite_server, "first", "ann", **extra)
        assert r.status_code == 422, (extra, r.text)
        assert "skip" in r.json()["detail"]
    assert _next(sqlite_server, "first", "ann").json()["id"] == held
    assert requests.get(f"{sqlite_server.url}/activelearning/skips", timeout=30).json() == []
    unknown = requests.get(f"{sqlite_server.url}/activelearning/skips", params={"sinse": 1}, timeout=30)
    assert unknown.status_code == 400 and "'sinse'" in unknown.json()["detail"], "ours: strict parameters"
