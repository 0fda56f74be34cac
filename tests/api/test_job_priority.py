"""Work a person asks for comes first (issue 17, items 1 and 2).

A person's training takes the place of an automatic run that has not started; a busy slot is a
429 that says which job holds it; and background rescoring, when it holds the only worker, stops
and queues itself again for a person's job (scoring is incremental: the requeued job goes on from
the first image without a fresh score), reporting images done of total and the time left.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from monailabel.client import MONAILabelClient

from labelloop.db import Database
from labelloop.jobs import AUTOTRAIN_USER, JobQueue
from labelloop.settings import JobSettings
from tests.support.http import upload
from tests.support.processes import frozen, job_pid, until
from tests.support.servers import LiveServer
from tests.support.uncertain import constructed_weights, write_known_images
from tests.support.volumes import make_image, make_label


def _tasks(server: LiveServer, kind: str) -> list[dict[str, Any]]:
    r = requests.get(f"{server.url}/{kind}/", params={"all": "true"}, timeout=10)
    return [] if r.status_code == 404 else list(r.json())


def test_a_persons_training_takes_the_place_of_a_queued_automatic_run(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    jobs = JobSettings(
        workers=0, heartbeat_interval_s=0.2, autotrain_after=1, autotrain_models=["segmentation"]
    )
    server = make_server(jobs=jobs)
    image, label = tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz"
    make_image(image)
    make_label(label)
    client = MONAILabelClient(server.url, client_id="ann")
    client.upload_image(str(image), "case0")
    client.save_label("case0", str(label))
    auto = until("the automatic run", lambda: _tasks(server, "train"), timeout=20)[0]
    assert (auto["created_by"], auto["status"]) == (AUTOTRAIN_USER, "SUBMITTED")

    mine = requests.post(f"{server.url}/train/segmentation", json={"max_epochs": 2}, timeout=10)
    assert mine.status_code == 200, "a queued automatic run no longer blocks a person's request"
    tasks = {t["id"]: t for t in _tasks(server, "train")}
    assert tasks[auto["id"]]["status"] == "STOPPED"
    assert f"replaced by job {mine.json()['id']}" in tasks[auto["id"]]["details"][-1]
    assert tasks[mine.json()["id"]]["request"]["max_epochs"] == 2

    # A person's queued run is not replaced: the 429 says whose it is and how to free the slot.
    again = requests.post(f"{server.url}/train/segmentation", json={"max_epochs": 3}, timeout=10)
    assert again.status_code == 429
    detail = again.json()["detail"]
    assert detail.startswith("++++++++++ Train Task is Already Running: train job " + mine.json()["id"])
    assert "queued at" in detail and "DELETE /train/" in detail


@pytest.mark.slow
def test_background_rescoring_yields_the_only_worker_and_requeues_itself(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = make_server(
        jobs=JobSettings(workers=1, poll_interval_s=0.1, heartbeat_interval_s=0.5, cancel_grace_s=2)
    )
    images = write_known_images(tmp_path / "images")
    for name in ("slab", "block", "focus"):
        upload(server, name, images[name])
    with open(constructed_weights(tmp_path / "v1.pt", "dropout"), "rb") as f:
        assert requests.put(f"{server.url}/model/segmentation", files={"file": ("w.pt", f)}, timeout=60).ok
    # The new version queued rescoring by itself; take the first scoring job once it runs.
    scoring = until(
        "rescoring to run",
        lambda: next((t for t in _tasks(server, "scoring") if t["status"] == "RUNNING"), None),
        timeout=120,
    )
    pid = until("its process", lambda: job_pid(server.data_dir, scoring["id"]), timeout=60)
    db = Database(server.settings.resolved_database_url)
    queue = JobQueue(db)
    try:
        with frozen(pid):  # mid-way: it would hold the only worker for minutes on a real cohort
            batch = requests.post(
                f"{server.url}/batch/infer/segmentation", params={"images": "all"}, json={}, timeout=30
            )
            assert batch.status_code == 200, batch.text
            yielded = queue.get(scoring["id"])
            assert yielded.cancel_requested
            line = yielded.log_tail[-1]
            assert line.startswith(f"yielded to batch_infer job {batch.json()['id']}"), line
            requeued_id = line.rsplit("requeued as job ", 1)[1]
        stopped = until("the yielding job to end", lambda: (j := queue.get(scoring["id"])).finished_at and j)
        assert stopped.status.value == "STOPPED"
        again = until(
            "the requeued job", lambda: (j := queue.get(requeued_id)).finished_at and j, timeout=240
        )
        done = queue.get(batch.json()["id"])
        assert done.status.value == "DONE" and again.status.value == "DONE", (done, again)
        assert again.name == scoring["name"] and again.priority == yielded.priority
        assert done.started_at is not None and again.started_at is not None
        assert done.started_at < again.started_at, "the person's job ran first"
        progress = again.progress
        assert progress["unit"] == "images" and progress["percent"] == 100.0, progress
        assert progress["done"] == progress["total"] and progress["time_left_s"] == 0.0
    finally:
        db.dispose()
    assert [t for t in _tasks(server, "scoring") if t["status"] in ("SUBMITTED", "RUNNING")] == []
