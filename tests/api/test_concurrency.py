"""Many annotators saving at once: every save becomes a version, nothing is lost, no 5xx."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.support.http import upload
from tests.support.servers import LiveServer


def _save(server: LiveServer, image_id: str, path: Path, tag: str, client: str) -> requests.Response:
    with open(path, "rb") as f:
        return requests.put(
            f"{server.url}/datastore/label",
            params={"image": image_id, "tag": tag},
            files={"label": (path.name, f)},
            data={"params": json.dumps({"client_id": client})},
            timeout=120,
        )


def test_32_annotators_on_32_images_all_saves_land(server: LiveServer, volumes: Callable[..., Path]) -> None:
    image = volumes("img.nii.gz")
    label = volumes("lab.nrrd", kind="label")
    ids = [f"case{i:02d}" for i in range(32)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: upload(server, i, image), ids))
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda i: _save(server, i, label, "final", f"annotator-{i}"), ids))
    assert [r.status_code for r in responses] == [200] * 32, [
        r.text for r in responses if r.status_code != 200
    ]
    stats = requests.get(f"{server.url}/datastore/", timeout=10).json()
    assert stats["completed"] == 32 and stats["label_tags"] == {"final": 32}
    for image_id in ids:
        history = requests.get(
            f"{server.url}/datastore/label/versions", params={"image": image_id, "tag": "final"}, timeout=10
        ).json()
        assert [h["version"] for h in history] == [1]
        assert history[0]["client_id"] == f"annotator-{image_id}"


def test_16_saves_of_the_same_label_make_16_versions(
    server: LiveServer, volumes: Callable[..., Path]
) -> None:
    image = volumes("img.nii.gz")
    labels = [volumes(f"lab{i}.nrrd", kind="label", seed=i) for i in range(16)]
    upload(server, "shared", image)
    with ThreadPoolExecutor(16) as pool:
        responses = list(
            pool.map(lambda i: _save(server, "shared", labels[i], "final", f"reader-{i}"), range(16))
        )
    assert [r.status_code for r in responses] == [200] * 16, [
        r.text for r in responses if r.status_code != 200
    ]
    assert sorted(r.json()["version"] for r in responses) == list(range(1, 17))
    history = requests.get(
        f"{server.url}/datastore/label/versions", params={"image": "shared", "tag": "final"}, timeout=10
    ).json()
    assert sorted(h["version"] for h in history) == list(range(1, 17))
    assert sorted(h["client_id"] for h in history) == sorted(f"reader-{i}" for i in range(16))
    # Each version's bytes are the ones its save sent: nothing overwritten.
    by_client = {h["client_id"]: h["version"] for h in history}
    for i in (0, 7, 15):
        got = requests.get(
            f"{server.url}/datastore/label",
            params={"label": "shared", "tag": "final", "version": by_client[f"reader-{i}"]},
            timeout=10,
        )
        assert got.status_code == 200 and got.content == labels[i].read_bytes()
    # Parent links form one chain: every version but the first points to the one before.
    parents = {h["version"]: h["parent_version"] for h in history}
    assert parents[1] is None and all(parents[v] == v - 1 for v in range(2, 17))


def test_concurrent_if_match_saves_exactly_one_wins(server: LiveServer, volumes: Callable[..., Path]) -> None:
    image = volumes("img.nii.gz")
    labels = [volumes(f"lab{i}.nrrd", kind="label", seed=i) for i in range(8)]
    upload(server, "contested", image)
    first = _save(server, "contested", labels[0], "final", "start")
    etag = first.headers["ETag"]

    def save_if_match(i: int) -> int:
        with open(labels[i], "rb") as f:
            return requests.put(
                f"{server.url}/datastore/label",
                params={"image": "contested", "tag": "final"},
                files={"label": (labels[i].name, f)},
                data={"params": json.dumps({"client_id": f"c{i}"})},
                headers={"If-Match": etag},
                timeout=120,
            ).status_code

    with ThreadPoolExecutor(7) as pool:
        codes = list(pool.map(save_if_match, range(1, 8)))
    assert sorted(codes) == [200] + [409] * 6
    history = requests.get(
        f"{server.url}/datastore/label/versions", params={"image": "contested"}, timeout=10
    ).json()
    assert len(history) == 2
