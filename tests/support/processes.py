"""Job processes of a test server: find them, freeze and thaw them (SIGSTOP/SIGCONT), wait on them."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["ended", "frozen", "job_pid", "job_processes", "proc_stat", "until"]


def job_processes(data_dir: Path, job_id: str | None = None) -> list[int]:
    """Processes running a job (``job_id``, else any) of this data dir's server (``labelloop run-job``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"run-job {job_id or ''}" in cmdline and str(data_dir) in cmdline:
            found.append(int(entry.name))
    return found


def job_pid(data_dir: Path, job_id: str) -> int | None:
    """The process running job ``job_id`` of this data dir's server."""
    found = job_processes(data_dir, job_id)
    return found[0] if found else None


def proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, parent pid)`` of a process, ``None`` once it is gone (reaped by its parent)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def ended(pid: int) -> bool:
    """Gone, or a zombie its stopped parent has not reaped yet."""
    stat = proc_stat(pid)
    return stat is None or stat[0] in ("Z", "X")


@contextmanager
def frozen(*pids: int) -> Iterator[Callable[[int], None]]:
    """SIGSTOP ``pids`` (in that order); ``thaw(pid)`` resumes one; all are resumed at the end."""
    stopped: list[int] = []

    def thaw(pid: int) -> None:
        if pid in stopped:
            stopped.remove(pid)
            os.kill(pid, signal.SIGCONT)

    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield thaw
    finally:
        for pid in list(stopped):
            try:
                thaw(pid)
            except ProcessLookupError:
                pass


def until(what: str, check: Callable[[], Any], timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
