"""Real uvicorn servers on 127.0.0.1 for the tests: in a thread (fast) or in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import uvicorn

from labelloop.server import create_app
from labelloop.settings import Settings

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "apps" / "radiology"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until_up(url: str, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering")
        try:
            if requests.get(f"{url}/info/", timeout=2).status_code in (200, 401):  # 401: auth on
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server at {url} did not come up in {timeout} s")


@dataclass
class LiveServer:
    """A running server: its base URL, data dir and settings."""

    url: str
    data_dir: Path
    settings: Settings
    _stop: Any = field(repr=False, default=None)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None

    def files(self) -> set[str]:
        """Every file under the data dir except the database and logs (for "nothing written" checks)."""
        out = set()
        for p in self.data_dir.rglob("*"):
            if p.is_file() and not p.name.startswith("labelloop.db") and "logs" not in p.parts:
                out.add(str(p.relative_to(self.data_dir)))
        return out


def start_thread_server(settings: Settings) -> LiveServer:
    """uvicorn serving ``create_app(settings)`` in a daemon thread of the test process."""
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{settings.port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    wait_until_up(url)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=15)

    return LiveServer(url=url, data_dir=settings.data_dir, settings=settings, _stop=stop)


def start_process_server(
    settings: Settings, env: dict[str, str] | None = None
) -> tuple[LiveServer, subprocess.Popen[bytes]]:
    """``labelloop serve`` as a child process (for crash and restart tests)."""
    args = [
        sys.executable,
        "-m",
        "labelloop.cli",
        "serve",
        "--app",
        str(settings.app),
        "--data-dir",
        str(settings.data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.port),
    ]
    if settings.studies:
        args += ["--studies", settings.studies]
    full_env = {**os.environ, **(env or {})}
    if settings.database_url:
        full_env["LABELLOOP_DATABASE_URL"] = settings.database_url
    log = open(settings.data_dir.parent / f"server-{settings.port}.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        args, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{settings.port}"
    try:
        wait_until_up(url, process=process)
    except BaseException:
        process.kill()
        process.wait()
        log.close()
        raise

    def stop() -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()

    return LiveServer(url=url, data_dir=settings.data_dir, settings=settings, _stop=stop), process
