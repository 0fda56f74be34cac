"""The curators' dashboard at ``/`` in headless Chromium (issue 16, item 1).

The pages read the JSON API as any client does; these tests load them offline (every request off
loopback aborted) and fail on any console or page error. They check that the figures on the page are
the API's, log in through the form, start, watch, stop and re-run a training as an admin (a job
worker is played by the test through the job queue, so no training runs on these CPUs), roll a model
back and promote it again, and that a reviewer sees no admin button while the API refuses them
anyway. Each page's screenshot goes to ``$PYTEST_OUTPUT/screenshots`` (else ``tests/web/screenshots``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import requests
from fastapi import FastAPI

from labelloop.api.web import mount_web
from labelloop.auth import UserStore
from labelloop.datastore import BlobStore
from labelloop.db import Database
from labelloop.jobs import JobQueue, JobStatus
from labelloop.registry import Registry
from labelloop.settings import AuthSettings
from tests.support.http import upload
from tests.support.servers import LiveServer
from tests.support.weights import write_weights
from tests.web.conftest import (
    PASSWORD,
    DashboardFactory,
    bearer,
    next_case,
    save_label,
)

Volumes = Callable[..., Path]
Users = Callable[[LiveServer], UserStore]


def _get(server: LiveServer, path: str, headers: dict[str, str] | None = None) -> Any:
    answer = requests.get(f"{server.url}{path}", headers=headers, timeout=60)
    assert answer.status_code == 200, (path, answer.status_code, answer.text)
    return answer.json()


def _put_model(server: LiveServer, weights: Path, headers: dict[str, str] | None = None) -> int:
    with weights.open("rb") as f:
        answer = requests.put(
            f"{server.url}/model/segmentation",
            files={"file": (weights.name, f)},
            headers=headers,
            timeout=120,
        )
    assert answer.status_code == 200, answer.text
    version: int = answer.json()["version"]
    return version


def _active(server: LiveServer, headers: dict[str, str] | None = None) -> int | None:
    versions = _get(server, "/model/segmentation/versions", headers)
    return next((v["version"] for v in versions if v["active"]), None)


def _train_tasks(server: LiveServer, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = _get(server, "/train/?all=true", headers)
    return tasks


def test_the_progress_page_shows_what_the_api_says(
    sqlite_server: LiveServer, dashboard: DashboardFactory, volumes: Volumes
) -> None:
    server = sqlite_server
    image, label = volumes("ct.nii.gz"), volumes("label.nii.gz", kind="label")
    other = volumes("label2.nii.gz", kind="label", seed=3)
    for i in range(5):
        upload(server, f"case{i:02d}", image)
    # With auth off, annotators are told apart by their client's id: grey finishes two cases (one of
    # them twice), blue holds one and saves a draft of another.
    first = next_case(server, "grey")
    save_label(server, first, label, "grey")
    second = next_case(server, "grey")
    save_label(server, second, label, "grey")
    save_label(server, first, other, "grey")
    held = next_case(server, "blue")
    save_label(server, "case04", label, "blue", tag="draft")

    board = dashboard(server)
    board.open()
    stats = _get(server, "/datastore/?output=stats")
    progress = _get(server, "/datastore/progress")
    assert (stats["total"], stats["completed"], progress["labelled"]) == (5, 2, 3)
    assert board.text('[data-testid="images"]') == str(stats["total"]) == str(progress["images"])
    assert board.text('[data-testid="final"]') == str(stats["completed"]) == str(progress["final"])
    assert board.text('[data-testid="labelled"]') == str(progress["labelled"])
    assert stats["label_tags"] == progress["label_tags"] == {"draft": 1, "final": 2}
    for tag, count in stats["label_tags"].items():
        assert board.text(f'[data-tag="{tag}"]') == str(count)
    rows = {a["name"]: a for a in progress["annotators"]}
    assert rows["grey"]["labels_saved"] == 3 and rows["grey"]["final_labels"] == 3
    assert rows["grey"]["saved_leases"] == 2 and rows["grey"]["median_handout_to_save_s"] is not None
    assert rows["blue"]["labels_saved"] == 1 and rows["blue"]["holding"] == 1
    for name, row in rows.items():
        line = board.page.locator("tr", has=board.page.locator(f'[data-annotator="{name}"]'))
        for field in ("labels_saved", "final_labels", "holding"):
            assert line.locator(f'[data-field="{field}"]').inner_text() == str(row[field]), (name, field)
    leases = _get(server, "/activelearning/leases")
    assert [lease["image"] for lease in leases] == [held]
    assert board.page.locator('[data-section="cases-held-now"]').locator("tbody tr").count() == 1
    # The chart of final labels over time is uPlot's canvas.
    assert board.page.locator('[data-section="final-labels-over-time"]').locator(".uplot canvas").count()
    for visit in ("first visit", "reload"):
        if visit == "reload":
            board.page.reload()
            board.ready()
        paint = board.page.evaluate(
            """() => ({
                fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime,
                ready: performance.getEntriesByName('labelloop:overview:ready')[0]?.startTime,
            })"""
        )
        assert paint["fcp"] is not None and paint["ready"] is not None
        print(  # noqa: T201 - the issue asks for the number
            f"dashboard first contentful paint ({visit}): {paint['fcp']:.0f} ms; "
            f"its figures on screen: {paint['ready']:.0f} ms after navigation"
        )
    board.shot("progress")

    # The image's page: every version with its provenance, and a download of an older one.
    board.open(f"#/image/{first}")
    versions = _get(server, f"/datastore/label/versions?image={first}")
    assert len(versions) == 2
    table = board.page.locator('[data-section="label-versions"]').locator("tbody tr")
    assert table.count() == len(versions)
    newest = table.nth(0).locator("td")
    assert [newest.nth(i).inner_text() for i in (0, 1, 2, 3, 5)] == ["final", "2", "admin", "grey", "1"]
    with board.page.expect_download() as download:
        board.page.click('button[data-action="download"][data-version="1"]')
    saved = Path(download.value.path())
    original = requests.get(f"{server.url}/datastore/label?label={first}&tag=final&version=1", timeout=30)
    assert saved.read_bytes() == original.content
    assert download.value.suggested_filename.endswith(".nii.gz")
    leased = board.page.locator('[data-section="leases"]')
    assert "Nobody holds this image now" in leased.inner_text()
    board.shot("image")


def test_an_admin_logs_in_trains_from_the_page_and_rolls_a_model_back(
    make_server: Callable[..., LiveServer],
    dashboard: DashboardFactory,
    users_of: Users,
    tmp_path: Path,
) -> None:
    server = make_server(auth=AuthSettings(enabled=True))
    users_of(server).add("boss", ["monailabel-admin"], PASSWORD)
    admin = bearer(server, "boss")
    board = dashboard(server)
    board.page.goto(f"{server.url}/")
    board.page.wait_for_selector("form.login")
    board.shot("login")
    board.login("boss")
    assert board.text('[data-testid="user"]') == "boss"

    # Start a training from the page; it is queued (this server starts no worker).
    board.open("#/jobs")
    board.page.fill("textarea[name=params]", json.dumps({"max_epochs": 2}))
    board.page.click('button[data-action="start"]')
    board.page.wait_for_selector('.job[data-task] [data-testid="status"]:text("queued")')
    [queued] = _train_tasks(server, admin)
    assert queued["status"] == "SUBMITTED" and queued["created_by"] == "boss"
    assert queued["request"] == {"max_epochs": 2, "model": "segmentation"}

    # The test plays the job worker: it claims the job and reports progress, as a training does.
    db = Database(server.settings.resolved_database_url)
    try:
        queue = JobQueue(db)
        job = queue.claim(queue.register_worker())
        assert job is not None and job.id == queued["id"]
        for iteration, loss, dice in ((2, 0.92, 0.21), (4, 0.71, 0.38), (6, 0.55, 0.47)):
            percent = round(100 * iteration / 8, 1)
            assert queue.report(job.id, claim=job.claim_token, progress=_progress(iteration, loss, dice))
            board.page.wait_for_selector(f'.job .bar[aria-valuenow="{percent:g}"]')
        facts = board.text('.job [data-testid="facts"]')
        assert "epoch 2 / 2" in facts and "iteration 2 / 4" in facts
        assert "loss 0.55" in facts and "validation Dice 0.47" in facts
        assert board.page.locator(".job .curves .uplot canvas").count() == 1
        board.shot("jobs-running")
        queue.finish(
            job.id, JobStatus.DONE, claim=job.claim_token, result={"train_stats": {"best_metric": 0.47}}
        )
    finally:
        db.dispose()
    history = board.page.locator('[data-testid="job-history"] tbody tr')
    history.first.wait_for()
    assert "DONE" in history.first.inner_text() and "best metric 0.47" in history.first.inner_text()
    board.page.wait_for_selector('[data-testid="active-jobs"] p.muted')

    # Re-run with the same parameters, then stop the queued run.
    board.page.click('button[data-action="rerun"]')
    board.page.wait_for_selector('.job[data-task] [data-testid="status"]:text("queued")')
    rerun = next(t for t in _train_tasks(server, admin) if t["status"] == "SUBMITTED")
    assert rerun["id"] != queued["id"] and rerun["request"] == queued["request"]
    board.page.click('.job button[data-action="stop"]')
    board.page.wait_for_selector('[data-testid="active-jobs"] p.muted')
    assert [t["status"] for t in _train_tasks(server, admin)] == ["STOPPED", "DONE"]
    assert board.page.locator('[data-testid="job-history"] tbody tr').count() == 2
    board.shot("jobs")

    # Models: two uploaded versions, then a trained one with metrics; roll back, promote again.
    for seed in (1, 2):
        _put_model(server, write_weights(tmp_path / f"v{seed}.pt", seed=seed), admin)
    _publish_trained(server, tmp_path, {"val_mean_dice": 0.61, "previous_val_mean_dice": 0.4})
    assert _active(server, admin) == 3
    board.open("#/models")
    assert board.text('[data-testid="active-segmentation"]') == "version 3"
    assert board.page.locator(".metrics-chart .uplot canvas").count() == 1
    board.shot("models")
    board.page.click('button[data-action="rollback"]')
    board.page.wait_for_selector('[data-testid="active-segmentation"]:text("version 2")')
    assert _active(server, admin) == 2
    board.page.click('button[data-action="activate"][data-version="3"]')
    board.page.wait_for_selector('[data-testid="active-segmentation"]:text("version 3")')
    assert _active(server, admin) == 3
    assert "Promoted" in board.text('[data-testid="models-message"]')


def test_a_reviewer_sees_no_admin_buttons_and_the_api_refuses_them_anyway(
    make_server: Callable[..., LiveServer],
    dashboard: DashboardFactory,
    users_of: Users,
    tmp_path: Path,
    volumes: Volumes,
) -> None:
    server = make_server(auth=AuthSettings(enabled=True))
    store = users_of(server)
    store.add("boss", ["monailabel-admin"], PASSWORD)
    store.add("curator", ["monailabel-reviewer"], PASSWORD)
    store.add("grey", ["monailabel-annotator"], PASSWORD)
    store.add("viewer", ["monailabel-user"], PASSWORD)
    admin, grey = bearer(server, "boss"), bearer(server, "grey")
    for i in range(3):
        upload(server, f"case{i}", volumes("ct.nii.gz"), headers=grey)
    case = next_case(server, "slicer", grey)
    save_label(server, case, volumes("label.nii.gz", kind="label"), "slicer", headers=grey)
    next_case(server, "slicer", grey)
    for seed in (1, 2):
        _put_model(server, write_weights(tmp_path / f"v{seed}.pt", seed=seed), admin)
    started = requests.post(f"{server.url}/train/segmentation", json={}, headers=admin, timeout=60)
    assert started.status_code == 200, started.text

    board = dashboard(server)
    board.login("curator")
    # A reviewer sees everyone's work: the logged-in annotator is one row, holding one case.
    line = board.page.locator("tr", has=board.page.locator('[data-annotator="grey"]'))
    assert line.locator('[data-field="final_labels"]').inner_text() == "1"
    assert line.locator('[data-field="holding"]').inner_text() == "1"
    board.open("#/jobs")
    board.page.wait_for_selector(".job[data-task]")
    board.shot("jobs-reviewer")
    board.open("#/models")
    assert board.text('[data-testid="active-segmentation"]') == "version 2"
    assert board.page.locator("button[data-action]").count() == 0
    board.open("#/jobs")
    assert board.page.locator("button[data-action]").count() == 0
    assert board.page.locator("textarea[name=params]").count() == 0

    curator = bearer(server, "curator")
    refused = [
        requests.post(f"{server.url}/train/segmentation", json={}, headers=curator, timeout=30),
        requests.delete(f"{server.url}/train/", headers=curator, timeout=30),
        requests.post(f"{server.url}/model/segmentation/versions/1/activate", headers=curator, timeout=30),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert _active(server, admin) == 2 and _train_tasks(server, admin)[0]["status"] == "SUBMITTED"

    # A plain user sees the totals but nobody's work (that needs a reviewer), and no error.
    viewer = dashboard(server)
    viewer.login("viewer")
    assert viewer.text('[data-testid="images"]') == "3" and viewer.text('[data-testid="final"]') == "1"
    assert viewer.text('[data-testid="labelled"]') == "–"
    assert viewer.page.locator("[data-annotator]").count() == 0
    viewer.shot("progress-user")


def test_root_answers_200_with_or_without_a_build_and_files_come_from_a_fixed_list(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    # Not built: MONAI Label's clients (and the Slicer reviewer's check) still get a 200 at /.
    bare = FastAPI(version="9.9")
    mount_web(bare, auth_enabled=False, static=tmp_path / "not-built")

    async def ask(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://x") as c:
            return await c.get(path)

    # In a thread of its own: Playwright's event loop runs in this one.
    with ThreadPoolExecutor(1) as pool:
        fallback = pool.submit(asyncio.run, ask("/")).result()
        assert fallback.status_code == 200 and "make web" in fallback.text
        assert pool.submit(asyncio.run, ask("/web/dashboard.js")).result().status_code == 404

    server = make_server(auth=AuthSettings(enabled=True))
    page = requests.get(f"{server.url}/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<meta name="labelloop-auth" content="on">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name, media_type in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        assert re.search(rf"/web/{name}\?v=[0-9a-f]{{12}}", page.text)
        asset = requests.get(f"{server.url}/web/{name}", timeout=30)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media_type)
        assert "max-age" in asset.headers["cache-control"]
    # Nothing but the listed files, and those need no log-in; everything else does.
    for name in ("index.html", "..%2F..%2Fapi%2Fweb.py", "%2e%2e%2f%2e%2e%2fserver.py", "dashboard.js.map"):
        assert requests.get(f"{server.url}/web/{name}", timeout=30).status_code in (401, 404), name
    assert requests.get(f"{server.url}/datastore/progress", timeout=30).status_code == 401
    assert requests.get(f"{server.url}/docs", timeout=30).status_code == 200


def _progress(iteration: int, loss: float, dice: float) -> dict[str, Any]:
    """What the radiology trainer reports (``train_stats``), 2 epochs of 4 steps."""
    return {
        "current_epoch": (iteration - 1) // 4 + 1,
        "total_epochs": 2,
        "current_iteration": (iteration - 1) % 4 + 1,
        "total_iterations": 4,
        "iteration": iteration,
        "iterations_total": 8,
        "percent": round(100 * iteration / 8, 1),
        "time_left_s": 4.0 * (8 - iteration),
        "train": {"metrics": {"train_loss": loss}},
        "eval": {"metrics": {"val_mean_dice": dice}},
    }


def _publish_trained(server: LiveServer, tmp_path: Path, metrics: dict[str, float]) -> None:
    """A version as a finished training publishes it (with metrics), through the registry."""
    db = Database(server.settings.resolved_database_url)
    try:
        registry = Registry(db, BlobStore(server.data_dir))
        weights = write_weights(tmp_path / "trained.pt", seed=3)
        registry.publish("segmentation", weights, source="train", user="boss", activate=True, metrics=metrics)
    finally:
        db.dispose()
