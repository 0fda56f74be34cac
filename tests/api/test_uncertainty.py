"""Uncertainty scoring and the strategies that read it, over HTTP with a real job worker process.

The weights are the hand-built "dropout" network of ``tests/support/uncertain.py``: Monte
Carlo dropout changes its decisions on the small bright focus and on nothing else, so
``epistemic`` must hand out the focus image first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import requests
from monailabel.client import MONAILabelClient

from labelloop.settings import JobSettings
from tests.conftest import ServerFactory
from tests.support.http import publish_weights, upload
from tests.support.servers import LiveServer
from tests.support.uncertain import constructed_weights, write_known_images

UPLOADED = ("slab", "block", "focus")


def _publish(server: LiveServer, weights: Path) -> int:
    version: int = publish_weights(server, weights)["version"]
    return version


def _score(server: LiveServer) -> dict[str, Any]:
    r = requests.post(f"{server.url}/scoring/epistemic", params={"run_sync": "true"}, json={}, timeout=120)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    assert result.get("model") == "segmentation", result  # a task object instead means the job failed
    return result


def _automatic_scores(server: LiveServer, method: str = "epistemic") -> dict[str, Any]:
    """Wait for the scoring jobs a new active version queued by itself; the newest ``method`` result."""
    deadline = time.monotonic() + 120
    while True:
        history = requests.get(f"{server.url}/scoring/", params={"all": "true"}, timeout=10).json()
        if history and all(task["status"] not in ("SUBMITTED", "RUNNING") for task in history):
            break
        assert time.monotonic() < deadline, history
        time.sleep(0.2)
    newest = next(task for task in history if task["name"] == method)
    assert newest["status"] == "DONE", newest
    result: dict[str, Any] = newest["result"]
    return result


def _ranking(server: LiveServer, strategy: str = "epistemic") -> list[dict[str, Any]]:
    r = requests.get(f"{server.url}/activelearning/{strategy}/ranking", params={"limit": 10}, timeout=30)
    assert r.status_code == 200, r.text
    ranking: list[dict[str, Any]] = r.json()
    return ranking


def test_epistemic_scores_incrementally_and_hands_out_the_known_uncertain_image(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(jobs=JobSettings(workers=1, poll_interval_s=0.1))
    images = write_known_images(tmp_path / "images")
    for name in UPLOADED:
        upload(server, name, images[name])

    info = requests.get(f"{server.url}/info/", timeout=10).json()
    for name in ("epistemic", "tta", "diverse"):
        assert info["strategies"][name]["description"]
    assert info["strategies"]["diverse"]["config"] == {"diversity": 0.5}
    assert {m: info["scoring"][m]["model"] for m in ("epistemic", "tta")} == {
        "epistemic": "segmentation",
        "tta": "segmentation",
    }
    before = _ranking(server)
    assert len(before) == 3 and all("no trained model" in row["reason"] for row in before)

    version = _publish(server, constructed_weights(tmp_path / "v1.pt", "dropout"))
    first = _automatic_scores(server)  # a new active version queues its rescoring itself
    assert (first["model_version"], first["skipped"]) == (version, 0)
    assert _automatic_scores(server, "tta")["model_version"] == version
    assert max(UPLOADED, key=lambda n: first[n]) == "focus" and first["focus"] > 0.1

    ranking = _ranking(server)
    assert [row["image"] for row in ranking][0] == "focus"
    assert all(
        row["model_version"] == version and row["scores"]["epistemic"] == first[row["image"]]
        for row in ranking
    )
    assert f"segmentation v{version}" in ranking[0]["reason"] and "#1" in ranking[0]["reason"]

    # Slicer's way: the MONAI Label client's next_sample, its client_id as the lease holder.
    handed = MONAILabelClient(server.url, client_id="reader-1").next_sample("epistemic", {})
    assert handed["id"] == "focus", handed
    assert handed["score"] == first["focus"] and "mutual information" in handed["reason"]
    other = requests.post(f"{server.url}/activelearning/diverse", json={"client_id": "reader-2"}, timeout=30)
    assert other.status_code == 200 and other.json()["id"] in ("slab", "block"), other.text

    again = _score(server)  # same version, same images: nothing to do
    assert again["skipped"] == 3 and not set(UPLOADED) & set(again)

    newer = _publish(server, constructed_weights(tmp_path / "v2.pt", "dropout", k=20.0))
    rescored = _automatic_scores(server)
    assert rescored["model_version"] == newer > version and set(UPLOADED) <= set(rescored)
    for image, holder in (("focus", "reader-1"), (other.json()["id"], "reader-2")):
        requests.delete(
            f"{server.url}/activelearning/lease", params={"image": image, "client_id": holder}, timeout=10
        ).raise_for_status()
    ranking = _ranking(server)
    assert ranking[0]["image"] == "focus" and {row["model_version"] for row in ranking} == {newer}

    # Rolling back is a change of active version too: the old version's scores come back.
    r = requests.post(f"{server.url}/model/segmentation/versions/{version}/activate", timeout=30)
    assert r.status_code == 200, r.text
    back = _automatic_scores(server)
    assert back["model_version"] == version and set(UPLOADED) <= set(back)
    assert back["focus"] == first["focus"], "seeded scoring: the same weights give the same score"


def test_a_new_active_version_queues_rescoring_once_unless_turned_off(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    weights = constructed_weights(tmp_path / "w.pt", "dropout")
    server = make_server(jobs=JobSettings(workers=0))  # nothing runs: we see what was queued
    first = _publish(server, weights)
    _publish(server, weights)  # the queued jobs will read the newest version: no second set
    r = requests.post(f"{server.url}/model/segmentation/versions/{first}/activate", timeout=30)
    assert r.status_code == 200, r.text
    queued = requests.get(f"{server.url}/scoring/", params={"all": "true"}, timeout=10).json()
    assert sorted(task["name"] for task in queued) == ["epistemic", "tta"]
    assert all(task["status"] == "SUBMITTED" and task["request"]["after"] == "upload" for task in queued)

    quiet = make_server(jobs=JobSettings(workers=0, rescore=False))
    _publish(quiet, weights)
    assert requests.get(f"{quiet.url}/scoring/", params={"all": "true"}, timeout=10).json() == []
