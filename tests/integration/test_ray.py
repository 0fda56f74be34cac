"""Jobs on a real two-node Ray cluster (``jobs.runner = "ray"``), through the HTTP API.

The cluster is a head here and a second node in a network namespace of its own (another host on
the network; ``tests/support/ray_cluster.py``), one CPU each. The server starts its own worker
process, which runs each job's process as a Ray driver: training runs under Ray Train's
``TorchTrainer`` with one worker on each node, batch inference and scoring as one Ray task per
image. The job row, its progress, its log lines and stopping behave as with the local runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from labelloop.imaging import read_volume, write_volume
from labelloop.sampledata.synthetic import generate_case
from labelloop.settings import JobSettings, RaySettings, Settings
from tests.support.ray_cluster import RayCluster, start_ray_cluster
from tests.support.servers import APP_DIR, LiveServer, free_port, start_thread_server
from tests.support.weights import write_weights

pytestmark = pytest.mark.slow

#: Small cases (48x48x24 voxels of 3x3x4 mm): a training step takes about a second on a CPU.
SHAPE, SPACING = (48, 48, 24), (3.0, 3.0, 4.0)
QUICK = {"max_epochs": 1, "samples_per_image": 1, "train_batch_size": 1, "val_split": 0.5}
IMAGES, FINALS = 4, 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    started = start_ray_cluster(head_cpus=1, node_cpus=1)
    try:
        yield started
    finally:
        started.stop()
        left = {pid: _name(pid) for pid in started.pids()}
        assert not left, f"every process of the cluster ended: {left}"


@pytest.fixture(scope="module")
def server(cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = Settings(
        app=APP_DIR,
        data_dir=tmp_path_factory.mktemp("data"),
        port=free_port(),
        jobs=JobSettings(
            workers=1,
            runner="ray",
            heartbeat_interval_s=0.5,
            poll_interval_s=0.2,
            cancel_grace_s=15,
            autotrain_after=0,
            rescore=False,
        ),
        ray=RaySettings(address=cluster.address, train_workers=2, torch_threads=1),
    )
    live = start_thread_server(settings)
    cases = tmp_path_factory.mktemp("cases")
    client = MONAILabelClient(live.url, client_id="setup")
    for i in range(IMAGES):
        image, label, affine = generate_case(np.random.default_rng([7, i]), shape=SHAPE, spacing=SPACING)
        write_volume(cases / f"case{i}.nii.gz", image, affine)
        write_volume(cases / f"case{i}_label.nii.gz", label, affine)
        client.upload_image(str(cases / f"case{i}.nii.gz"), f"case{i}")
        if i < FINALS:
            client.save_label(
                f"case{i}", str(cases / f"case{i}_label.nii.gz"), params={"client_id": "annotator"}
            )
    try:
        yield live
    finally:
        live.stop()


def _task(server: LiveServer, kind: str, job_id: str) -> dict[str, Any]:
    tasks = requests.get(f"{server.url}/{kind}/", params={"all": "true"}, timeout=10).json()
    found: dict[str, Any] = next(t for t in tasks if t["id"] == job_id)
    return found


def _wait(
    server: LiveServer, kind: str, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    task = _task(server, kind, job_id)
    while not done(task):
        assert time.monotonic() < deadline, f"timed out; last task: {task}"
        time.sleep(0.25)
        task = _task(server, kind, job_id)
    return task


def _ended(task: dict[str, Any]) -> bool:
    return task["status"] not in ("SUBMITTED", "RUNNING")


def _job_log(server: LiveServer, job_id: str) -> str:
    return (server.data_dir / "jobs" / job_id / "job.log").read_text(errors="replace")


def _name(pid: int) -> str:
    """A process's first command-line word (Ray names its workers ``ray::<what they run>``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def _train_processes(cluster: RayCluster) -> list[int]:
    """The cluster's Ray Train worker processes (``ray::RayTrainWorker...``)."""
    return [pid for pid in cluster.pids() if "RayTrainWorker" in _name(pid)]


def test_training_runs_under_ray_train_on_both_nodes_to_a_promoted_version(
    server: LiveServer, cluster: RayCluster
) -> None:
    started = requests.post(f"{server.url}/train/segmentation", json=QUICK, timeout=30)
    assert started.status_code == 200, started.text
    job_id = started.json()["id"]
    seen: list[dict[str, Any]] = []

    def finished(task: dict[str, Any]) -> bool:
        if task.get("progress"):
            seen.append(task["progress"])
        return _ended(task)

    done = _wait(server, "train", job_id, finished)
    assert done["status"] == "DONE", done
    result = done["result"]
    assert result["model_version"] == 1 and result["promoted"] is True, result
    assert "val_mean_dice" in result["metrics"]
    details = done["details"]
    assert any(line.startswith("training on the Ray cluster at " + cluster.address) for line in details)
    assert any("2 Ray Train worker(s)" in line for line in details), details
    # One Ray Train worker on each node (each has one CPU): rank 0 here, rank 1 on the other host.
    ranks = {line.split(":", 1)[0]: line for line in details if line.startswith("Ray Train worker")}
    assert set(ranks) == {"Ray Train worker 1 of 2", "Ray Train worker 2 of 2"}, details
    nodes = {line.split("node ", 1)[1].split(",")[0] for line in ranks.values()}
    assert nodes == {cluster.head_ip, cluster.node_ip}, ranks
    assert "model segmentation version 1: promoted" in " ".join(details)
    # Rank 0's progress reached the job row while it ran, and its final stats are the task's.
    assert any(p.get("total_epochs") == 1 for p in seen) or done["progress"]["total_epochs"] == 1
    assert done["progress"]["epoch"] == 1
    # Checkpoints and weights where the local runner writes them; the version is what inference uses.
    assert (server.data_dir / "jobs" / job_id / "checkpoint.pt").is_file()
    versions = requests.get(f"{server.url}/model/segmentation/versions", timeout=10).json()
    assert [(v["version"], v["active"]) for v in versions] == [(1, True)]
    recorded = {(r["image"], r["version"]) for r in versions[0]["training_set"]}
    assert recorded == {("case0", 1), ("case1", 1), ("case2", 1)}
    _, params = MONAILabelClient(server.url).infer("segmentation", "case3", {})
    assert params["model_version"] == 1
    # The Ray Train workers' own output reached the job's log file, tagged with their node.
    log = _job_log(server, job_id)
    assert f"ip={cluster.node_ip}" in log or "RayTrainWorker" in log, log[-3000:]
    assert _train_processes(cluster) == [], "the run's Ray Train workers ended with it"


def test_batch_inference_and_scoring_run_as_ray_tasks_over_the_images(
    server: LiveServer, cluster: RayCluster, tmp_path: Path
) -> None:
    weights = write_weights(tmp_path / "w.pt", "segmentation", winner=1)
    with open(weights, "rb") as f:
        put = requests.put(f"{server.url}/model/segmentation", files={"file": ("w.pt", f)}, timeout=60)
    assert put.status_code == 200, put.text
    version = max(v["version"] for v in requests.get(f"{server.url}/model/segmentation/versions").json())
    started = requests.post(
        f"{server.url}/batch/infer/segmentation", params={"images": "all"}, json={}, timeout=30
    )
    assert started.status_code == 200, started.text
    job_id = started.json()["id"]
    done = _wait(server, "batch/infer", job_id, _ended)
    assert done["status"] == "DONE", done
    result = done["result"]
    assert set(result) == {f"case{i}" for i in range(IMAGES)}
    assert {entry["model_version"] for entry in result.values()} == {version}
    # One task per image, spread over both nodes (one CPU each, tasks in flight together).
    assert {entry["node"] for entry in result.values()} == {cluster.head_ip, cluster.node_ip}, result
    progress = done["progress"]
    assert progress["done"] == progress["total"] == IMAGES and progress["unit"] == "images"
    # The saved labels are the network's output: class 1 on every voxel.
    for image_id in result:
        label = requests.get(
            f"{server.url}/datastore/label", params={"label": image_id, "tag": "original"}, timeout=30
        )
        assert label.status_code == 200
        path = tmp_path / f"{image_id}.nii.gz"
        path.write_bytes(label.content)
        assert np.all(np.asarray(read_volume(path).array) == 1), image_id

    dice = requests.post(f"{server.url}/scoring/dice", json={}, timeout=30).json()
    scored = _wait(server, "scoring", dice["id"], _ended)
    assert scored["status"] == "DONE", scored
    assert set(scored["result"]) == {f"case{i}" for i in range(FINALS)}
    assert all(0.0 <= value <= 1.0 for value in scored["result"].values())
    info = requests.get(
        f"{server.url}/datastore/label/info", params={"label": "case0", "tag": "final"}, timeout=10
    ).json()
    assert info["dice"]["original"] == pytest.approx(scored["result"]["case0"])

    # An app scoring method: the active version scores each unfinished image in a Ray task.
    epistemic = requests.post(f"{server.url}/scoring/epistemic", json={}, timeout=30).json()
    scored = _wait(server, "scoring", epistemic["id"], _ended)
    assert scored["status"] == "DONE", scored
    assert scored["result"]["model_version"] == version
    assert isinstance(scored["result"]["case3"], float), scored["result"]


def test_stop_a_training_from_the_api_ends_its_ray_train_workers(
    server: LiveServer, cluster: RayCluster
) -> None:
    before = [v["version"] for v in requests.get(f"{server.url}/model/segmentation/versions").json()]
    long = {**QUICK, "max_epochs": 200, "early_stop_patience": -1}
    started = requests.post(f"{server.url}/train/segmentation", json=long, timeout=30)
    assert started.status_code == 200, started.text
    job_id = started.json()["id"]
    running = _wait(server, "train", job_id, lambda t: t["status"] == "RUNNING" and bool(t.get("progress")))
    assert running["progress"]["total_epochs"] == 200, "rank 0's progress reaches the job row"
    assert len(_train_processes(cluster)) == 2, "a Ray Train worker on each node"
    answer = MONAILabelClient(server.url).train_stop()
    assert answer["id"] == job_id and answer["details"][-1]
    stopped = _wait(server, "train", job_id, _ended, timeout=60)
    assert stopped["status"] == "STOPPED", stopped
    assert stopped["end_ts"]
    assert "the last checkpoint is kept for resuming" in " ".join(stopped["details"]), stopped["details"]
    after = [v["version"] for v in requests.get(f"{server.url}/model/segmentation/versions").json()]
    assert after == before, "a stopped run publishes no version"
    deadline = time.monotonic() + 30
    while _train_processes(cluster):
        assert time.monotonic() < deadline, "the Ray Train workers outlived the stopped job"
        time.sleep(0.2)
