"""Shared helpers for the benchmarks: timing, percentiles, a server in a child process, tables,
CPU time and load of processes, a Python child that answers in JSON.

Every benchmark measures ``labelloop serve`` running as a separate process (as in production),
over HTTP on 127.0.0.1, and cleans up its temporary directories and processes even when it is
interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

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
    "load1",
    "load_average",
    "proc_stat",
    "process_cpu_seconds",
    "proc_cmdline",
    "processes",
    "CpuSampler",
    "environ_without_settings",
    "run_json_child",
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
                if requests.get(f"{url}/info/", timeout=2).status_code in (200, 401):  # 401: auth on
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"labelloop serve did not answer in {startup_timeout_s} s")
            time.sleep(0.1)
        yield server
    finally:
        _stop(process)


def environ_without_settings(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``LABELLOOP_*`` setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    env.update(extra or {})
    return env


def run_json_child(args: Sequence[str], env: Mapping[str, str], timeout_s: float, what: str) -> Any:
    """Run ``args`` (cwd: the repository) and parse the JSON on the last line of its stdout.

    A non-zero exit raises ``RuntimeError`` with the end of the child's stderr.
    """
    out = subprocess.run(
        list(args), env=dict(env), cwd=REPO, capture_output=True, text=True, timeout=timeout_s
    )
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ load and CPU time (Linux /proc)


def load1() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, as ``"0.52 0.31 0.20"``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (``[0]`` is the state, ``[1]`` the ppid)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of every thread of ``pid`` so far (clock ticks); ``None`` if gone."""
    fields = proc_stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces (``""`` if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes() -> Iterator[tuple[int, int]]:
    """``(pid, ppid)`` of every process running now."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = proc_stat(int(entry.name))
        if fields is not None:
            yield int(entry.name), int(fields[1])


class CpuSampler:
    """CPU seconds of named processes, sampled every ``interval`` s by a thread, on the ``time.time``
    clock, while the ``with`` block runs.

    ``pids`` maps a role to a process id. ``discover``, called every ``discover_every_s`` s before a
    sample, may return more roles as their processes appear (it gets the roles known so far).
    CPU time between samples is interpolated (see ``at``), for boundaries known only afterwards.
    """

    def __init__(
        self,
        pids: Mapping[str, int],
        *,
        discover: Callable[[Mapping[str, int]], Mapping[str, int]] | None = None,
        interval: float = 0.1,
        discover_every_s: float = 0.5,
    ) -> None:
        self.interval = interval
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self._pids = dict(pids)
        self._discover = discover
        self._discover_every_s = discover_every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last_scan = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self._discover is not None and now - last_scan >= self._discover_every_s:
                self._pids.update(self._discover(dict(self._pids)))
                last_scan = now
            stamp = time.time()
            for role, pid in list(self._pids.items()):
                value = process_cpu_seconds(pid)
                if value is not None:
                    self.samples.setdefault(role, []).append((stamp, value))
            self._stop.wait(self.interval)

    def at(self, role: str, t: float) -> float | None:
        """CPU seconds of ``role`` at ``t``, interpolated; clamped to the first and last sample."""
        series = self.samples.get(role)
        if not series:
            return None
        if t <= series[0][0]:
            return series[0][1]
        for (t0, v0), (t1, v1) in zip(series, series[1:], strict=False):
            if t0 <= t <= t1:
                return v0 + (v1 - v0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.0)
        return series[-1][1]

    def between(self, role: str, t0: float, t1: float) -> float | None:
        """CPU seconds ``role`` used from ``t0`` to ``t1`` (``None`` without samples)."""
        a, b = self.at(role, t0), self.at(role, t1)
        return None if a is None or b is None else b - a
