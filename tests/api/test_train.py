"""Background retraining through HTTP: jobs in worker processes, model versions, stop, crash, rollback.

Every server here starts a real worker process; each training job runs in its own process.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from labelloop.imaging import read_volume, write_volume
from labelloop.jobs import STOP_ANSWER_S
from labelloop.sampledata.synthetic import generate_case
from labelloop.settings import JobSettings, Settings
from tests.conftest import ServerFactory
from tests.support.processes import job_processes
from tests.support.servers import APP_DIR, LiveServer, free_port, start_process_server
from tests.support.weights import write_weights

#: Small cases (48x48x24 voxels of 3x3x4 mm) so a training step takes about a second on a CPU.
SHAPE, SPACING = (48, 48, 24), (3.0, 3.0, 4.0)
#: One quick epoch: the point is the machinery, not the Dice.
QUICK = {"max_epochs": 1, "samples_per_image": 1, "train_batch_size": 1, "val_split": 0.5}
JOBS = JobSettings(
    workers=1, heartbeat_interval_s=0.5, poll_interval_s=0.2, cancel_grace_s=5, autotrain_after=0
)


def _write_case(folder: Path, index: int) -> tuple[Path, Path]:
    image, label, affine = generate_case(np.random.default_rng([7, index]), shape=SHAPE, spacing=SPACING)
    image_path, label_path = folder / f"case{index}.nii.gz", folder / f"case{index}_label.nii.gz"
    write_volume(image_path, image, affine)
    write_volume(label_path, label, affine)
    return image_path, label_path


def _populate(server: LiveServer, folder: Path, count: int, finals: int) -> list[str]:
    ids = []
    for i in range(count):
        image, label = _write_case(folder, i)
        client = MONAILabelClient(server.url, client_id="setup")
        client.upload_image(str(image), f"case{i}")
        if i < finals:
            client.save_label(f"case{i}", str(label), params={"client_id": "annotator"})
        ids.append(f"case{i}")
    return ids


def _wait(
    server: LiveServer, predicate: Callable[[dict[str, Any]], bool], timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = requests.get(f"{server.url}/train/", timeout=10)
        if response.status_code == 200:
            task = response.json()
            if predicate(task):
                return task
        time.sleep(0.25)
    raise AssertionError(f"timed out; last task: {task}")


def _stopped(server: LiveServer, answer: dict[str, Any]) -> dict[str, Any]:
    """The task ``DELETE /train/`` answered with, once it reports STOPPED (a slow step may end later)."""
    if answer["status"] == "STOPPED":
        return answer
    history = lambda: requests.get(f"{server.url}/train/", params={"all": "true"}, timeout=10).json()  # noqa: E731
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        task: dict[str, Any] = next(t for t in history() if t["id"] == answer["id"])
        if task["status"] == "STOPPED":
            return task
        time.sleep(0.2)
    raise AssertionError(f"task {answer['id']} never stopped")


def _versions(server: LiveServer, model: str = "segmentation") -> list[dict[str, Any]]:
    response = requests.get(f"{server.url}/model/{model}/versions", timeout=10)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


@pytest.fixture
def trainer_server(make_server: ServerFactory, tmp_path: Path) -> LiveServer:
    server = make_server(jobs=JOBS)
    _populate(server, tmp_path, count=4, finals=3)
    return server


def test_train_to_done_publishes_a_version_that_infer_then_uses(trainer_server: LiveServer) -> None:
    server = trainer_server
    client = MONAILabelClient(server.url, client_id="ml-staff")
    started = client.train_start("segmentation", dict(QUICK))
    assert started["status"] == "SUBMITTED" and started["id"] and started["start_ts"]
    assert client.train_status(check_if_running=True) is True, "a queued task counts as running"
    done = _wait(server, lambda t: t["status"] not in ("SUBMITTED", "RUNNING"))
    assert done["status"] == "DONE", done
    assert done["id"] == started["id"] and done["details"] and done["end_ts"]
    start = next(line for line in done["details"] if line.startswith("training segmentation"))
    assert "from scratch: no version of segmentation is active yet" in start, "pretrained=true says why"
    result = done["result"]
    assert result["model_version"] == 1 and result["promoted"] is True
    versions = _versions(server)
    assert [v["version"] for v in versions] == [1] and versions[0]["active"]
    assert "val_mean_dice" in versions[0]["metrics"]
    recorded = {(r["image"], r["version"]) for r in versions[0]["training_set"]}
    assert recorded == {("case0", 1), ("case1", 1), ("case2", 1)}, "the exact label versions trained on"
    assert all(len(r["sha256"]) == 64 for r in versions[0]["training_set"])
    info = client.info()
    stats = info["train_stats"]["segmentation"]
    assert stats["total_epochs"] == 1 and "best_metric" in stats
    assert (
        info["models"]["segmentation"]["state"] == "ready" and info["models"]["segmentation"]["version"] == 1
    )
    _, params = client.infer("segmentation", "case3", {})
    assert params["model_version"] == 1
    assert client.train_status(check_if_running=True) is False


def test_a_second_train_while_one_is_queued_is_429_unless_enqueued(trainer_server: LiveServer) -> None:
    server = trainer_server
    first = requests.post(f"{server.url}/train/segmentation", json=QUICK, timeout=10)
    assert first.status_code == 200
    second = requests.post(f"{server.url}/train/segmentation", json=QUICK, timeout=10)
    assert second.status_code == 429
    detail = second.json()["detail"]
    # MONAI Label's words first (its clients match them), then which job holds the slot and how to free it.
    assert detail.startswith("++++++++++ Train Task is Already Running: train job ")
    assert first.json()["id"] in detail and "asked for by" in detail
    assert "DELETE /train/" in detail and "enqueue=true" in detail
    queued = requests.post(f"{server.url}/train/deepedit", params={"enqueue": "true"}, json=QUICK, timeout=10)
    assert queued.status_code == 200 and queued.json()["status"] == "SUBMITTED"
    history = requests.get(f"{server.url}/train/", params={"all": "true"}, timeout=10).json()
    assert {t["id"] for t in history} >= {first.json()["id"], queued.json()["id"]}
    stopped = _stopped(server, requests.delete(f"{server.url}/train/", timeout=60).json())
    assert stopped["status"] == "STOPPED" and stopped["details"] and stopped["end_ts"]
    queued_now = next(
        t
        for t in requests.get(f"{server.url}/train/", params={"all": "true"}, timeout=10).json()
        if t["id"] == queued.json()["id"]
    )
    assert queued_now["status"] == "STOPPED", "DELETE /train/ also cancels queued tasks"
    assert (
        requests.get(f"{server.url}/train/", params={"check_if_running": "true"}, timeout=10).status_code
        == 404
    )


def test_bad_train_options_are_refused_before_a_job_exists(trainer_server: LiveServer) -> None:
    server = trainer_server
    bad = requests.post(f"{server.url}/train/segmentation", json={"max_epochs": -3}, timeout=10)
    assert bad.status_code == 422 and "max_epochs" in bad.json()["detail"]
    typo = requests.post(f"{server.url}/train/segmentation", json={"max_epoch": 3}, timeout=10)
    assert typo.status_code == 422 and "max_epochs" in typo.json()["detail"]
    assert requests.post(f"{server.url}/train/nope", json={}, timeout=10).status_code == 404
    assert requests.post(f"{server.url}/train/segmentation", data="x=1", timeout=10).status_code == 422
    assert requests.get(f"{server.url}/train/", timeout=10).status_code == 404, "no task was created"


def test_stop_a_running_job_and_no_version_is_published(trainer_server: LiveServer) -> None:
    server = trainer_server
    long = {**QUICK, "max_epochs": 200, "early_stop_patience": -1}
    requests.post(f"{server.url}/train/segmentation", json=long, timeout=10).raise_for_status()
    _wait(server, lambda t: t["status"] == "RUNNING" and bool(t.get("progress")))
    asked = time.monotonic()
    answer = MONAILabelClient(server.url).train_stop()
    took = time.monotonic() - asked
    # It answers at once (not after the worker's grace period) and says the stop is under way.
    assert took < STOP_ANSWER_S + 3, took
    assert answer["details"][-1], "Slicer reads details[-1]: never empty"
    assert answer["status"] == "STOPPED" or answer["details"][-1].startswith("stop requested by")
    stopped = _stopped(server, answer)
    assert stopped["status"] == "STOPPED" and stopped["end_ts"]
    assert _versions(server) == []
    time.sleep(1.0)
    assert requests.get(f"{server.url}/train/", timeout=10).json()["status"] == "STOPPED"


def test_info_and_infer_keep_answering_during_training(trainer_server: LiveServer, tmp_path: Path) -> None:
    server = trainer_server
    weights = write_weights(tmp_path / "w.pt", "segmentation", winner=1)
    with open(weights, "rb") as f:
        requests.put(
            f"{server.url}/model/segmentation", files={"file": ("w.pt", f)}, timeout=60
        ).raise_for_status()
    long = {**QUICK, "max_epochs": 200, "early_stop_patience": -1}
    requests.post(f"{server.url}/train/segmentation", json=long, timeout=10).raise_for_status()
    _wait(server, lambda t: t["status"] == "RUNNING" and bool(t.get("progress")))
    latencies = []
    for _ in range(40):
        started = time.perf_counter()
        assert requests.get(f"{server.url}/info/", timeout=10).status_code == 200
        latencies.append(time.perf_counter() - started)
    infer = requests.post(
        f"{server.url}/infer/segmentation", params={"image": "case3", "output": "json"}, timeout=60
    )
    assert infer.status_code == 200 and infer.json()["model_version"] == 1
    assert requests.get(f"{server.url}/train/", timeout=10).json()["status"] == "RUNNING"
    assert statistics.median(latencies) < 0.25, f"/info/ median {statistics.median(latencies):.3f} s"
    requests.delete(f"{server.url}/train/", timeout=60)


def test_rollback_changes_the_active_version_and_the_next_inference(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server()
    _populate(server, tmp_path, count=1, finals=0)
    for winner in (1, 2):
        path = write_weights(tmp_path / f"w{winner}.pt", "segmentation", winner=winner)
        with open(path, "rb") as f:
            requests.put(f"{server.url}/model/segmentation", files={"file": ("w.pt", f)}, timeout=60)

    def infer_values() -> tuple[int, set[int]]:
        path, params = MONAILabelClient(server.url).infer(
            "segmentation", "case0", {"result_extension": ".nrrd"}
        )
        return params["model_version"], set(np.unique(read_volume(Path(path)).array).tolist())

    assert infer_values() == (2, {2})
    rolled = requests.post(f"{server.url}/model/segmentation/versions/1/activate", timeout=10)
    assert rolled.status_code == 200 and rolled.json()["active"] is True
    assert infer_values() == (1, {1})
    assert [v["active"] for v in _versions(server)] == [False, True]


@pytest.fixture
def process_server(tmp_path: Path) -> Iterator[tuple[Settings, dict[str, str]]]:
    data = tmp_path / "data"
    data.mkdir()
    settings = Settings(app=APP_DIR, data_dir=data, port=free_port())
    env = {
        "LABELLOOP_JOBS__WORKERS": "1",
        "LABELLOOP_JOBS__HEARTBEAT_INTERVAL_S": "0.5",
        "LABELLOOP_JOBS__POLL_INTERVAL_S": "0.2",
        "LABELLOOP_JOBS__AUTOTRAIN_AFTER": "0",
        "LABELLOOP_INFERENCE__WARMUP": "false",
    }
    yield settings, env


def test_kill_9_during_training_leaves_no_running_job_and_no_half_version(
    process_server: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, env = process_server
    server, process = start_process_server(settings, env=env)
    try:
        _populate(server, tmp_path, count=3, finals=3)
        long = {**QUICK, "max_epochs": 200, "early_stop_patience": -1}
        task = requests.post(f"{server.url}/train/segmentation", json=long, timeout=10).json()
        _wait(server, lambda t: t["status"] == "RUNNING" and bool(t.get("progress")))
        os.kill(process.pid, signal.SIGKILL)  # the server only; its worker and job must die with it
        process.wait(timeout=10)
    finally:
        server.stop()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive_job_processes(settings.data_dir):
        time.sleep(0.2)
    assert not _alive_job_processes(settings.data_dir), "the job's process outlived its server"
    server, process = start_process_server(settings, env=env)
    try:
        after = requests.get(f"{server.url}/train/", params={"all": "true"}, timeout=10).json()
        mine = next(t for t in after if t["id"] == task["id"])
        assert mine["status"] == "ERROR" and "worker" in mine["details"][-1].lower()
        assert _versions(server) == [], "no version from a run that never finished"
        models = (
            list((settings.data_dir / "models").rglob("*.pt"))
            if (settings.data_dir / "models").exists()
            else []
        )
        assert models == [], "no weights file without its version row"
        assert requests.get(f"{server.url}/info/", timeout=10).json()["train_stats"]["segmentation"], (
            "train_stats survive the restart"
        )
    finally:
        server.stop()


def _alive_job_processes(data_dir: Path) -> list[int]:
    """Processes whose command line runs a job of this data dir's server."""
    return job_processes(data_dir)


def test_run_sync_answers_with_stats_and_is_listed(trainer_server: LiveServer) -> None:
    server = trainer_server
    response = requests.post(
        f"{server.url}/train/segmentation", params={"run_sync": "true"}, json=QUICK, timeout=300
    )
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["total_epochs"] == 1 and "best_metric" in stats
    listed = requests.get(f"{server.url}/train/", params={"all": "true"}, timeout=10).json()
    assert len(listed) == 1 and listed[0]["status"] == "DONE"


def test_final_labels_queue_training_automatically(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(jobs=JobSettings(workers=0, heartbeat_interval_s=0.3, autotrain_after=3))
    _populate(server, tmp_path, count=3, finals=2)
    time.sleep(1.0)
    assert requests.get(f"{server.url}/train/", timeout=10).status_code == 404, "two labels are not enough"
    image, label = _write_case(tmp_path, 9)
    MONAILabelClient(server.url).upload_image(str(image), "case9")
    MONAILabelClient(server.url).save_label("case9", str(label))
    task = _wait(server, lambda t: t["status"] == "SUBMITTED", timeout=10)
    assert task["request"]["model"] in ("segmentation", "deepedit")
    time.sleep(1.0)
    queued = requests.get(f"{server.url}/train/", params={"all": "true"}, timeout=10).json()
    assert len(queued) == 2, "one run per trainer, queued once"


def test_batch_infer_and_dice_scoring_run_as_jobs(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(jobs=JOBS)
    _populate(server, tmp_path, count=3, finals=1)
    weights = write_weights(tmp_path / "w.pt", "segmentation", winner=1)
    with open(weights, "rb") as f:
        requests.put(
            f"{server.url}/model/segmentation", files={"file": ("w.pt", f)}, timeout=60
        ).raise_for_status()
    batch = requests.post(
        f"{server.url}/batch/infer/segmentation",
        params={"images": "all", "run_sync": "true"},
        json={},
        timeout=300,
    )
    assert batch.status_code == 200, batch.text
    assert set(batch.json()) == {"case0", "case1", "case2"}
    stats = requests.get(f"{server.url}/datastore/", timeout=10).json()
    assert stats["label_tags"]["original"] == 3
    scoring = requests.post(f"{server.url}/scoring/dice", params={"run_sync": "true"}, json={}, timeout=300)
    assert scoring.status_code == 200 and set(scoring.json()) == {"case0"}
    info = requests.get(
        f"{server.url}/datastore/label/info", params={"label": "case0", "tag": "final"}, timeout=10
    ).json()
    assert 0.0 <= info["dice"]["original"] <= 1.0
    task = requests.get(f"{server.url}/scoring/", timeout=10).json()
    assert task["status"] == "DONE"
    # Jobs run niced below the server (which has this test process's niceness), so interactive
    # inference wins the CPU.
    niceness = min(19, os.nice(0) + 10)
    assert f"niceness {niceness}" in task["details"][0], task["details"]
    if Path("/proc/self/autogroup").exists():  # Linux autogroups: the job's own group is niced too
        assert f"scheduling group nice {niceness}" in task["details"][0], task["details"]
    assert requests.get(f"{server.url}/batch/infer", timeout=10).json()["status"] == "DONE"
    assert json.loads(json.dumps(requests.get(f"{server.url}/info/", timeout=10).json()["scoring"]))["dice"]


def test_status_shows_the_running_task_before_a_queued_one(trainer_server: LiveServer) -> None:
    server = trainer_server
    long = {**QUICK, "max_epochs": 200, "early_stop_patience": -1}
    running = requests.post(f"{server.url}/train/segmentation", json=long, timeout=10).json()
    _wait(server, lambda t: t["id"] == running["id"] and t["status"] == "RUNNING")
    queued = requests.post(f"{server.url}/train/deepedit", params={"enqueue": "true"}, json=QUICK, timeout=10)
    assert queued.json()["status"] == "SUBMITTED"
    shown = requests.get(f"{server.url}/train/", timeout=10).json()
    assert (shown["id"], shown["status"]) == (running["id"], "RUNNING"), "the queued one was shown"
    requests.delete(f"{server.url}/train/", timeout=60)
