"""``GET /metrics``: Prometheus metrics of requests, inference stages, caches, jobs and leases."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from labelloop.auth import ADMIN, ANNOTATOR
from labelloop.db import Database
from labelloop.jobs import JobKind, JobQueue, JobStatus
from labelloop.settings import AuthSettings
from tests.conftest import ServerFactory
from tests.support.http import upload
from tests.support.servers import LiveServer
from tests.support.volumes import make_image
from tests.support.weights import write_weights

PASSWORD = "a long enough password"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(server: LiveServer, headers: dict[str, str] | None = None) -> Samples:
    answer = requests.get(f"{server.url}/metrics", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_inference_caches_jobs_and_leases_are_measured(
    server: LiveServer, tmp_path: Path, database_url: str | None
) -> None:
    image = tmp_path / "ct.nii.gz"
    make_image(image, seed=3)
    upload(server, "ct", image)
    weights = write_weights(tmp_path / "w.pt", "segmentation", winner=1)
    with open(weights, "rb") as f:
        assert requests.put(f"{server.url}/model/segmentation", files={"file": ("w.pt", f)}, timeout=60).ok
    before = _scrape(server)

    for _ in range(3):
        assert requests.get(f"{server.url}/info/", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/model/info/segmentation", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/no/such/path", timeout=10).status_code == 404
    for _ in range(2):
        answer = requests.post(
            f"{server.url}/infer/segmentation", params={"image": "ct", "output": "json"}, timeout=120
        )
        assert answer.status_code == 200, answer.text
    leased = requests.post(f"{server.url}/activelearning/random", json={"client_id": "grey"}, timeout=30)
    assert leased.json()["id"] == "ct"

    # A job that ran two minutes, through the jobs' own API on the server's database.
    now = [1_000.0]
    db = Database(server.settings.resolved_database_url)
    try:
        queue = JobQueue(db, clock=lambda: now[0])
        job = queue.submit(JobKind.TRAIN, "segmentation", request={}, config={}, user="test")
        worker = queue.register_worker()
        claimed = queue.claim(worker, (JobKind.TRAIN,))
        assert claimed is not None and claimed.id == job.id
        now[0] += 120.0
        assert queue.finish(job.id, JobStatus.DONE, claim=claimed.claim_token)
    finally:
        db.dispose()

    after = _scrape(server)
    count = "labelloop_http_request_duration_seconds_count"

    def grown(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grown(count, method="GET", route="/info/", status="200") == 3
    # Route templates, never the raw path (their values stay bounded).
    assert grown(count, method="GET", route="/model/info/{model}", status="200") == 1
    assert grown(count, method="GET", route="unmatched", status="404") == 1
    assert grown(count, method="POST", route="/infer/{model}", status="200") == 2
    assert not any("segmentation" in dict(labels).get("route", "") for _, labels in after), "a raw path"

    stage = "labelloop_inference_stage_seconds_count"
    for name in ("pre", "infer", "post", "total", "write"):
        assert grown(stage, model="segmentation", stage=name) == 2, name
    assert _value(after, "labelloop_inference_stage_seconds_sum", model="segmentation", stage="total") > 0

    # The second inference found the image and its preprocessing in the caches.
    lookups = "labelloop_inference_cache_lookups_total"
    assert grown(lookups, cache="image", result="miss") == 1
    assert grown(lookups, cache="image", result="hit") == 1
    assert grown(lookups, cache="prepared", result="hit") == 1
    assert _value(after, "labelloop_inference_cache_bytes", cache="image") > 0

    # The model's upload queued its rescoring jobs, which no worker runs here.
    db = Database(server.settings.resolved_database_url)
    try:
        queued = JobQueue(db).active(JobKind.SCORING)
    finally:
        db.dispose()
    assert queued and all(job.status == JobStatus.SUBMITTED for job in queued)
    assert _value(after, "labelloop_jobs", kind="scoring", status="SUBMITTED") == len(queued)
    assert _value(after, "labelloop_jobs", kind="train", status="DONE") == 1
    duration = "labelloop_job_duration_seconds"
    assert _value(after, f"{duration}_count", kind="train", status="DONE") == 1
    assert _value(after, f"{duration}_sum", kind="train", status="DONE") == pytest.approx(120.0)
    assert _value(after, f"{duration}_bucket", kind="train", status="DONE", le="60.0") == 0
    assert _value(after, f"{duration}_bucket", kind="train", status="DONE", le="300.0") == 1
    assert _value(after, "labelloop_leases_open", strategy="random") == 1


def test_with_auth_on_only_admins_read_the_metrics(
    make_server: ServerFactory, users_of: Callable[[LiveServer], object]
) -> None:
    server = make_server(auth=AuthSettings(enabled=True))
    users = users_of(server)
    users.add("boss", [ADMIN], PASSWORD)  # type: ignore[attr-defined]
    users.add("grey", [ANNOTATOR], PASSWORD)  # type: ignore[attr-defined]

    def bearer(name: str) -> dict[str, str]:
        answer = requests.post(
            f"{server.url}/auth/token", data={"username": name, "password": PASSWORD}, timeout=30
        )
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    anonymous = requests.get(f"{server.url}/metrics", timeout=10)
    assert anonymous.status_code == 401 and "detail" in anonymous.json()
    refused = requests.get(f"{server.url}/metrics", headers=bearer("grey"), timeout=10)
    assert refused.status_code == 403 and "detail" in refused.json()
    samples = _scrape(server, bearer("boss"))
    # The refusals were measured too, before any route ran (the 401) and by the route (the 403).
    count = "labelloop_http_request_duration_seconds_count"
    assert _value(samples, count, method="GET", route="unmatched", status="401") >= 1
    assert _value(samples, count, method="GET", route="/metrics", status="403") == 1
