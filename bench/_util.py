"""Shared helpers for the benchmarks: timing, percentiles, a server in a child process, tables.

Every benchmark measures ``labelloop serve`` running as a separate process (as in production),
over HTTP on 127.0.0.1, and cleans up its temporary directories and processes even when it is
interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import requests

__all__ = [
    "REPO",
    "APP_DIR",
    "Stats",
    "summarize",
    "measure",
    "free_port",
    "ServerProcess",
    "serve",
    "scratch_dir",
    "interrupt_on_sigterm",
    "render_table",
    "ms",
]

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "apps" / "radiology"


# ------------------------------------------------------------------ statistics


@dataclass(frozen=True)
class Stats:
    """Summary of one series of timings, in seconds."""

    n: int
    p50: float
    p95: float
    mean: float
    min: float
    max: float


def _nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method: always an observed value."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summarize(seconds: Sequence[float]) -> Stats:
    """Median, p95 (nearest rank), mean, min and max of ``seconds``."""
    if not seconds:
        raise ValueError("no samples")
    ordered = sorted(seconds)
    return Stats(
        n=len(ordered),
        p50=statistics.median(ordered),
        p95=_nearest_rank(ordered, 0.95),
        mean=statistics.fmean(ordered),
        min=ordered[0],
        max=ordered[-1],
    )


def measure(
    call: Callable[[int], object],
    *,
    samples: int,
    warmup: int = 0,
    budget_s: float | None = None,
    min_samples: int = 3,
) -> list[float]:
    """Time ``call(i)`` ``samples`` times (after ``warmup`` untimed calls); seconds per call.

    With ``budget_s`` the loop stops early once that much time was spent on timed calls and
    at least ``min_samples`` were taken (for operations that take seconds each). ``i`` counts
    from 0 over warm-up and timed calls together, so callers can pick a fresh item per call.
    """
    for i in range(warmup):
        call(i)
    times: list[float] = []
    spent = 0.0
    for k in range(samples):
        start = time.perf_counter()
        call(warmup + k)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
        if budget_s is not None and spent >= budget_s and len(times) >= min_samples:
            break
    return times


def ms(seconds: float) -> str:
    """Seconds as milliseconds, with precision that suits the magnitude."""
    value = seconds * 1000
    if value < 10:
        return f"{value:.2f}"
    if value < 1000:
        return f"{value:.1f}"
    return f"{value:.0f}"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, right-aligned, with a rule under the header."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [" | ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for row in rows:
        lines.append(" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


# ------------------------------------------------------------------ processes and files


def interrupt_on_sigterm() -> None:
    """Make SIGTERM behave like Ctrl-C, so ``finally`` blocks and context managers clean up."""

    def _raise(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory, removed when the block ends (also on Ctrl-C)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A running ``labelloop serve``: its base URL, process and log file."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it runs in its own session), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


@contextmanager
def serve(
    data_dir: Path,
    *,
    app: Path = APP_DIR,
    database_url: str | None = None,
    log_level: str = "INFO",
    env: dict[str, str] | None = None,
    startup_timeout_s: float = 120.0,
) -> Iterator[ServerProcess]:
    """``labelloop serve`` on a free port of 127.0.0.1, in a child process of its own session.

    The server's output goes to ``<data_dir>/../server-<port>.log``. It is stopped when the
    block ends, including on Ctrl-C (the child is in its own session, so the terminal's
    SIGINT does not reach it first; we stop it ourselves).
    """
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "labelloop.cli",
        "serve",
        "--app",
        str(app),
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        log_level,
    ]
    if database_url:
        args += ["--database-url", database_url]
    # A studies folder or database from the caller's environment must not leak in.
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LABELLOOP_STUDIES", "LABELLOOP_DATABASE_URL", "LABELLOOP_DATA_DIR")
    }
    full_env.update(env or {})
    log_path = data_dir.parent / f"server-{port}.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            args, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
        )
    server = ServerProcess(url=url, process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"labelloop serve exited with {process.returncode}; its log:\n{server.log_tail()}"
                )
            try:
                if requests.get(f"{url}/info/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"labelloop serve did not answer in {startup_timeout_s} s")
            time.sleep(0.1)
        yield server
    finally:
        _stop(process)
