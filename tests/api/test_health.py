"""``GET /health``: open without a log-in; 503 once a job worker of this server is gone."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import requests

from labelloop.settings import AuthSettings, JobSettings
from tests.support.servers import LiveServer


def _worker_pids(server: LiveServer) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in cmdline and any(str(server.data_dir).encode() in part for part in cmdline):
            pids.append(int(entry.name))
    return pids


def test_health_is_open_and_reports_the_workers(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(
        auth=AuthSettings(enabled=True), jobs=JobSettings(workers=1, heartbeat_interval_s=0.3)
    )
    deadline = time.monotonic() + 60
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        answer = requests.get(f"{server.url}/health", timeout=30)  # no token: it is open
        body = answer.json()
        if answer.status_code == 200 and body["workers"]["live_in_database"] >= 1:  # type: ignore[index]
            break
        time.sleep(0.2)
    assert body["status"] == "ok" and body["database"] is True, body
    assert body["workers"] == {"expected": 1, "running": 1, "live_in_database": 1}
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 401, "only /health is open"

    pids = _worker_pids(server)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = requests.get(f"{server.url}/health", timeout=30)
        if answer.status_code == 503:
            break
        time.sleep(0.2)
    assert answer.status_code == 503
    assert answer.json()["status"] == "unhealthy" and answer.json()["workers"]["running"] == 0
