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

__all__ = ["RunHandle", "Runner", "SubprocessRunner", "die_with_parent"]


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
    """Runs ``labelloop run-job ID`` in a new process group, its output in ``<data>/jobs/<id>/job.log``."""

    def __init__(self, settings_file: Path, jobs_dir: Path) -> None:
        self.settings_file = settings_file
        self.jobs_dir = jobs_dir

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
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only sets the death signal
        )
        return _ProcessHandle(process, log)
