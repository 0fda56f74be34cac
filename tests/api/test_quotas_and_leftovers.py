"""Session quotas, sessions attributed to their user, and start-up removing what a crash left."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import requests

from labelloop.settings import SessionSettings, Settings
from tests.support.servers import APP_DIR, LiveServer, free_port, start_thread_server
from tests.support.volumes import make_image, make_label


def _session(server: LiveServer, path: Path) -> requests.Response:
    with path.open("rb") as f:
        return requests.put(f"{server.url}/session/", files={"files": (path.name, f)}, timeout=60)


def test_sessions_have_a_count_and_a_disk_quota(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    image = tmp_path / "img.nii.gz"
    make_image(image, shape=(16, 16, 8))
    size = image.stat().st_size
    server = make_server(sessions=SessionSettings(max_sessions=3, max_total_bytes=10 * size))
    made = [_session(server, image) for _ in range(3)]
    assert [m.status_code for m in made] == [200, 200, 200]
    refused = _session(server, image)
    assert refused.status_code == 429 and "sessions.max_sessions" in refused.json()["detail"]
    requests.delete(f"{server.url}/session/{made[0].json()['session_id']}", timeout=30)
    assert _session(server, image).status_code == 200

    big = tmp_path / "big.nii.gz"
    make_image(big, shape=(64, 64, 64))
    small_quota = make_server(sessions=SessionSettings(max_total_bytes=big.stat().st_size // 2))
    full = _session(small_quota, big)
    assert full.status_code == 507 and "sessions.max_total_bytes" in full.json()["detail"]
    assert not (small_quota.data_dir / "sessions").exists() or not any(
        (small_quota.data_dir / "sessions").iterdir()
    )


def test_start_up_removes_dead_scratch_and_files_whose_row_never_committed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(app=APP_DIR, data_dir=data, port=free_port())
    server = start_thread_server(settings)
    image, label = tmp_path / "case1.nii.gz", tmp_path / "case1.nrrd"
    make_image(image)
    make_label(label)
    try:
        with image.open("rb") as f:
            assert requests.put(f"{server.url}/datastore/image?image=case1", files={"file": f}, timeout=60).ok
        with label.open("rb") as f:
            assert requests.put(
                f"{server.url}/datastore/label?image=case1&tag=final", files={"label": f}, timeout=60
            ).ok
    finally:
        server.stop()
    kept = [p for kind in ("labels", "images") for p in (data / kind).rglob("*") if p.is_file()]
    assert len(kept) == 2
    # What a process killed mid-save leaves: its scratch files, and blobs stored before their row.
    import socket

    host = socket.gethostname().replace(".", "_")
    dead_pid = 2**22 + 17  # above pid_max's default: no such process
    scratch = data / "tmp" / f"{host}.{dead_pid}.0123abcd.nii.gz"
    scratch.write_bytes(b"half an upload")
    live_scratch = data / "tmp" / f"{host}.{os.getpid()}.4567ef.nii.gz"  # this process is alive
    live_scratch.write_bytes(b"in flight")
    old = time.time() - 3600
    orphans = []
    for kind in ("labels", "images"):
        orphan = data / kind / "ff" / f"{kind}-orphan" / "x.nii.gz"
        orphan.parent.mkdir(parents=True)
        orphan.write_bytes(b"never committed")
        os.utime(orphan, (old, old))
        orphans.append(orphan)
    fresh = data / "labels" / "ee" / "in-flight" / "y.nrrd"  # another server's save of a moment ago
    fresh.parent.mkdir(parents=True)
    fresh.write_bytes(b"row comes next")

    restarted = start_thread_server(settings.model_copy(update={"port": free_port()}))
    try:
        assert not scratch.exists() and live_scratch.exists() and fresh.exists()
        assert not any(o.exists() for o in orphans) and not any(o.parent.exists() for o in orphans)
        assert all(p.exists() for p in kept)
        got = requests.get(f"{restarted.url}/datastore/label?label=case1&tag=final", timeout=30)
        assert got.status_code == 200 and got.content == label.read_bytes()
    finally:
        restarted.stop()
        live_scratch.unlink()
