"""Runners start a claimed job somewhere and let the worker watch and stop it.

The default runner starts each job in its own OS process (its own process group, so
stopping it stops every process it started). A Ray runner can implement the same two small
protocols later: the worker loop, the queue and the job code stay as they are.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Protocol

from labelloop.jobs.records import Job

__all__ = ["RunHandle", "Runner", "SubprocessRunner", "die_with_parent", "step_back"]


class RunHandle(Protocol):
    """A started job."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None:
        """The exit code once it ended, else ``None``."""
        ...

    def terminate(self) -> None:
        """Ask it to stop (it may save a checkpoint first)."""
        ...

    def kill(self) -> None:
        """Stop it now, with everything it started."""
        ...


class Runner(Protocol):
    def start(self, job: Job) -> RunHandle: ...


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies (no orphaned trainers)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def step_back(nice: int) -> None:
    """Lower this process's CPU priority by ``nice`` (Unix; nothing elsewhere).

    A job process leads its own session (``start_new_session``). On Linux with autogroup
    scheduling every session is a scheduling group of its own, and groups share the CPU equally
    whatever their processes' niceness: so the group is niced too (``/proc/self/autogroup``),
    which only a session leader does (it would renice a caller's whole terminal otherwise).
    """
    if nice <= 0 or not hasattr(os, "nice"):
        return
    niceness = os.nice(nice)
    if os.getsid(0) == os.getpid():
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(niceness))
        except OSError:
            pass  # no autogroup scheduling here: the process's niceness is what counts


class _ProcessHandle:
    def __init__(self, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        self._process = process
        self._log = log

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self) -> int | None:
        code = self._process.poll()
        if code is not None and not self._log.closed:
            self._log.close()
        return code

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self._process.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)


class SubprocessRunner:
    """Runs ``labelloop run-job ID`` in a new session, its output in ``<data>/jobs/<id>/job.log``.

    The process is niced by ``nice`` from its first instruction (imports included), so the
    server's interactive inference gets the CPU first, and dies with the worker.
    """

    def __init__(self, settings_file: Path, jobs_dir: Path, nice: int = 0) -> None:
        self.settings_file = settings_file
        self.jobs_dir = jobs_dir
        self.nice = nice

    def _child_setup(self) -> None:
        """Runs in the child between fork and exec, after ``setsid`` (the worker forks from one thread)."""
        die_with_parent()
        step_back(self.nice)

    def start(self, job: Job) -> RunHandle:
        folder = self.jobs_dir / job.id
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / "job.log", "ab")  # noqa: SIM115 - closed by the handle when the job ends
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labelloop.cli",
                "run-job",
                job.id,
                "--settings-file",
                str(self.settings_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=self._child_setup,  # noqa: PLW1509 - sets the death signal and niceness
        )
        return _ProcessHandle(process, log)
