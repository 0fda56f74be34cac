"""An idle ``labelloop worker`` holds only the queue and the runner: no torch, MONAI, SciPy,
scikit-image, NumPy or app until it runs a job (each job runs in a process of its own).

Each test starts a real worker (standalone, or the one a real ``labelloop serve`` starts) and reads
its memory map from ``/proc``: a native library of one of those packages mapped into it means the
package was imported. Its resident memory must also stay far below what ``import torch`` alone takes
(about 250 MB).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelloop.jobs import write_settings_file
from labelloop.settings import Settings
from tests.support.processes import until
from tests.support.servers import APP_DIR, free_port, start_process_server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

#: Native libraries that show a package was imported: torch (and so MONAI and the app, which import
#: it), SciPy, scikit-image, NumPy.
HEAVY = re.compile(r"/(torch|scipy|skimage|numpy)/[^ ]*\.so|libtorch")
#: Resident memory an idle worker may hold, bytes (it holds ~70 MB; ``import torch`` alone ~250 MB).
RSS_LIMIT = 150 * 1024**2
#: The worker heartbeats and reaps at this interval: within a second it has run its whole idle loop.
FAST = {"LABELLOOP_JOBS__POLL_INTERVAL_S": "0.1", "LABELLOOP_JOBS__HEARTBEAT_INTERVAL_S": "0.2"}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    return {**env, **FAST, **extra}


def heavy_libraries(pid: int) -> set[str]:
    """The native libraries of ``HEAVY`` packages mapped into ``pid``."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.split()[-1] for line in maps.splitlines() if HEAVY.search(line)}


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ready(log: Path) -> bool:
    return log.is_file() and re.search(r"worker \S+ ready", log.read_text(errors="replace")) is not None


def assert_idle_and_light(pid: int, log: Path) -> None:
    until("the worker registered", lambda: ready(log), timeout=60)
    time.sleep(1.0)  # several rounds of claim, heartbeat and reap
    assert Path(f"/proc/{pid}").exists(), log.read_text(errors="replace")[-2000:]
    assert heavy_libraries(pid) == set()
    assert rss_bytes(pid) < RSS_LIMIT


@pytest.fixture
def stopped_at_end() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_worker(args: list[str], log: Path, processes: list[subprocess.Popen[bytes]]) -> int:
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "labelloop.cli", "worker", *args],
            env=_env({}),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    processes.append(process)
    return process.pid


def test_a_standalone_worker_imports_no_torch_while_idle(
    tmp_path: Path, stopped_at_end: list[subprocess.Popen[bytes]]
) -> None:
    data = tmp_path / "data"
    log = tmp_path / "worker.log"
    pid = start_worker(["--app", str(APP_DIR), "--data-dir", str(data)], log, stopped_at_end)
    assert_idle_and_light(pid, log)


def test_a_worker_given_a_settings_file_imports_no_torch_while_idle(
    tmp_path: Path, stopped_at_end: list[subprocess.Popen[bytes]]
) -> None:
    """The way a server starts its workers (its settings file; the server migrated first)."""
    data = tmp_path / "data"
    migrated = subprocess.run(
        [sys.executable, "-m", "labelloop.cli", "migrate", "--data-dir", str(data)],
        env=_env({}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    settings_file = write_settings_file(Settings(app=APP_DIR, data_dir=data))
    log = tmp_path / "worker.log"
    pid = start_worker(["--settings-file", str(settings_file)], log, stopped_at_end)
    assert_idle_and_light(pid, log)


def test_the_worker_a_server_starts_imports_no_torch_while_idle(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    settings = Settings(app=APP_DIR, data_dir=data, port=free_port())
    server, process = start_process_server(settings, env={**FAST, "LABELLOOP_INFERENCE__WARMUP": "false"})
    try:
        workers: list[int] = []

        def found() -> bool:
            workers[:] = [pid for pid in _children(process.pid) if " worker " in _cmdline(pid)]
            return bool(workers)

        until("the server started its worker", found, timeout=60)
        assert_idle_and_light(workers[0], settings.log_file)
    finally:
        server.stop()


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent
            ):
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace") + " "
    except OSError:
        return ""
