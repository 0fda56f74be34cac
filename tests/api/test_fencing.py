"""Lost jobs and stale scoring over HTTP, with a real worker process and real job processes.

A job's heartbeat comes from its worker, so a job process that stalls (here: SIGSTOP, as a
process starved of CPU or holding its GIL would) is not declared dead. When the worker itself
stalls, the reaper declares the job lost and revokes its claim: the job, still alive, can no longer
publish anything, and the worker kills it once it runs again. And a rollback stops scoring with
the version it replaced: the ranking then follows the active version's scores only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from labelloop.db import Database
from labelloop.imaging import write_volume
from labelloop.jobs import JobQueue
from labelloop.sampledata.synthetic import generate_case
from labelloop.settings import JobSettings
from tests.conftest import ServerFactory
from tests.support.http import publish_weights, upload
from tests.support.processes import ended, frozen, job_pid, proc_stat, until
from tests.support.servers import LiveServer
from tests.support.uncertain import constructed_weights, write_known_images

pytestmark = pytest.mark.slow

#: Beats every half second; four seconds of silence and a job is lost.
JOBS = JobSettings(
    workers=1,
    heartbeat_interval_s=0.5,
    stale_after_s=4.0,
    poll_interval_s=0.2,
    cancel_grace_s=2,
    autotrain_after=0,
)
QUICK = {"max_epochs": 1, "samples_per_image": 1, "train_batch_size": 1, "val_split": 0.5}
LONG = {**QUICK, "max_epochs": 500, "early_stop_patience": -1}


# ---------------------------------------------------------------- training


def _populate(server: LiveServer, folder: Path, count: int = 4, finals: int = 3) -> None:
    client = MONAILabelClient(server.url, client_id="setup")
    for i in range(count):
        image, label, affine = generate_case(
            np.random.default_rng([7, i]), shape=(48, 48, 24), spacing=(3, 3, 4)
        )
        write_volume(folder / f"case{i}.nii.gz", image, affine)
        write_volume(folder / f"case{i}_label.nii.gz", label, affine)
        client.upload_image(str(folder / f"case{i}.nii.gz"), f"case{i}")
        if i < finals:
            client.save_label(
                f"case{i}", str(folder / f"case{i}_label.nii.gz"), params={"client_id": "annotator"}
            )


def _task(server: LiveServer, job_id: str, kind: str = "train") -> dict[str, Any]:
    history = requests.get(f"{server.url}/{kind}/", params={"all": "true"}, timeout=10).json()
    task: dict[str, Any] = next(t for t in history if t["id"] == job_id)
    return task


def _versions(server: LiveServer) -> list[dict[str, Any]]:
    response = requests.get(f"{server.url}/model/segmentation/versions", timeout=10)
    assert response.status_code == 200, response.text
    versions: list[dict[str, Any]] = response.json()
    return versions


@pytest.fixture
def training(make_server: ServerFactory, tmp_path: Path) -> tuple[LiveServer, str, int]:
    """A server whose worker runs a long training job: ``(server, job id, job process id)``.

    On SQLite only: these tests take minutes each, and the fencing writes they exercise are
    checked on both backends by tests/unit/jobs/test_fencing.py.
    """
    server = make_server(jobs=JOBS)
    _populate(server, tmp_path)
    started = requests.post(f"{server.url}/train/segmentation", json=LONG, timeout=10)
    assert started.status_code == 200, started.text
    job_id: str = started.json()["id"]
    until(
        "training progress",
        lambda: _task(server, job_id)["status"] == "RUNNING" and _task(server, job_id).get("progress"),
    )
    pid = until("the job's process", lambda: job_pid(server.data_dir, job_id))
    return server, job_id, pid


def test_a_stalled_job_process_is_not_declared_lost(training: tuple[LiveServer, str, int]) -> None:
    """Its worker beats for it: a job process starved of CPU (or holding its GIL) stays a live job."""
    server, job_id, pid = training
    with frozen(pid):
        time.sleep(2.5 * JOBS.stale_after_s)
        task = _task(server, job_id)
        assert task["status"] == "RUNNING", task
    answer = requests.delete(f"{server.url}/train/", timeout=60).json()
    assert answer["id"] == job_id, answer
    stopped = until("the stop", lambda: (t := _task(server, job_id))["status"] == "STOPPED" and t)
    assert stopped["end_ts"], stopped
    assert _versions(server) == []


def test_a_job_declared_lost_while_alive_publishes_nothing_and_stops(
    training: tuple[LiveServer, str, int],
) -> None:
    server, job_id, pid = training
    state = proc_stat(pid)
    assert state is not None
    worker = state[1]
    with frozen(worker, pid) as thaw:  # the worker first: it must not see anything happen
        lost = until("the reaper", lambda: (t := _task(server, job_id))["status"] != "RUNNING" and t)
        assert lost["status"] == "ERROR" and "no heartbeat" in lost["details"][-1], lost
        thaw(pid)  # the job is alive and goes on, its worker still frozen
        until("the lost job to stop by itself", lambda: ended(pid))
        task = _task(server, job_id)
        assert task["status"] == "ERROR" and "refused" in task["details"][-1], task["details"]
        assert _versions(server) == []
    # The worker goes on with the next job as if nothing happened.
    until("the worker", lambda: proc_stat(pid) is None)
    again = requests.post(f"{server.url}/train/segmentation", json=QUICK, timeout=10).json()
    done = until(
        "the next run",
        lambda: (t := _task(server, again["id"]))["status"] not in ("SUBMITTED", "RUNNING") and t,
        timeout=240,
    )
    assert done["status"] == "DONE" and done["result"]["model_version"] == 1, done
    assert [v["version"] for v in _versions(server)] == [1]
    assert _task(server, job_id)["status"] == "ERROR", "the lost job's status never changes again"


def test_the_worker_kills_a_job_it_finds_declared_lost(training: tuple[LiveServer, str, int]) -> None:
    server, job_id, pid = training
    state = proc_stat(pid)
    assert state is not None
    worker = state[1]
    with frozen(worker, pid) as thaw:
        until("the reaper", lambda: _task(server, job_id)["status"] == "ERROR")
        thaw(worker)  # the job stays frozen: only its worker can end it
        until("the worker to kill the lost job", lambda: proc_stat(pid) is None, timeout=60)
    task = _task(server, job_id)
    assert task["status"] == "ERROR" and "killed" in task["details"][-1], task["details"]
    assert _versions(server) == []


# ---------------------------------------------------------------- scoring and rollback

#: Known images: MC dropout of the constructed network is unsure of the focus only.
UPLOADED = ("slab", "block", "focus")


def _publish(server: LiveServer, weights: Path) -> int:
    version: int = publish_weights(server, weights)["version"]
    return version


def _scoring(server: LiveServer) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = requests.get(
        f"{server.url}/scoring/", params={"all": "true"}, timeout=10
    ).json()
    return history


def _settled(server: LiveServer) -> list[dict[str, Any]]:
    settled: list[dict[str, Any]] = until(
        "scoring to settle",
        lambda: (h := _scoring(server)) and all(t["status"] not in ("SUBMITTED", "RUNNING") for t in h) and h,
    )
    return settled


def _ranking(server: LiveServer) -> list[dict[str, Any]]:
    r = requests.get(f"{server.url}/activelearning/epistemic/ranking", params={"limit": 100}, timeout=30)
    assert r.status_code == 200, r.text
    ranking: list[dict[str, Any]] = r.json()
    return ranking


def test_a_rollback_stops_scoring_with_the_replaced_version_and_ranking_follows_the_active_one(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(
        jobs=JobSettings(workers=1, poll_interval_s=0.1, heartbeat_interval_s=0.5, cancel_grace_s=2),
    )
    images = write_known_images(tmp_path / "images")
    names = list(UPLOADED)
    for name in names:
        upload(server, name, images[name])

    v1 = _publish(server, constructed_weights(tmp_path / "v1.pt", "dropout"))
    first = next(t for t in _settled(server) if t["name"] == "epistemic")["result"]
    assert first["model_version"] == v1 and set(names) <= set(first)

    queue = JobQueue(Database(server.settings.resolved_database_url))
    try:
        v2 = _publish(server, constructed_weights(tmp_path / "v2.pt", "dropout", k=20.0))
        [scoring] = [
            t
            for t in _scoring(server)
            if t["name"] == "epistemic" and t["status"] in ("SUBMITTED", "RUNNING")
        ]
        # The job says which version it scores with when it starts: freeze it right then.
        until(
            "v2 scoring to start",
            lambda: queue.get(scoring["id"]).metrics.get("model_version") == v2,
            timeout=120,
        )
        pid = until("its process", lambda: job_pid(server.data_dir, scoring["id"]))
        with frozen(pid):
            assert (queue.get(scoring["id"]).progress.get("done") or 0) < len(names), "it had not finished"
            rolled = requests.post(f"{server.url}/model/segmentation/versions/{v1}/activate", timeout=30)
            assert rolled.status_code == 200, rolled.text
            assert queue.get(scoring["id"]).cancel_requested, "the rollback asked version 2's scoring to stop"
            ranking = _ranking(server)
            assert {row["model_version"] for row in ranking} <= {v1, None}, "no version-2 score is ranked"
        # Resumed, it must neither go on scoring with version 2 nor store what it scored.
        stopped = until(
            "v2 scoring to end",
            lambda: (
                (t := _task(server, scoring["id"], "scoring"))["status"] not in ("SUBMITTED", "RUNNING") and t
            ),
        )
        assert stopped["status"] == "STOPPED", stopped
        assert "active version is 1" in " ".join(stopped["details"]), stopped["details"]
        ranking = _ranking(server)
        assert {row["model_version"] for row in ranking} <= {v1, None}, ranking
    finally:
        queue._db.dispose()  # noqa: SLF001

    back = next(t for t in _settled(server) if t["name"] == "epistemic")
    assert back["status"] == "DONE" and back["result"]["model_version"] == v1
    ranking = _ranking(server)
    assert {row["image"] for row in ranking} == set(names)
    assert all(
        row["model_version"] == v1 and row["scores"]["epistemic"] == first[row["image"]] for row in ranking
    ), ranking
    assert ranking[0]["image"] == "focus"
