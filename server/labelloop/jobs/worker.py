"""The worker loop: claim a job, run it in its own process, watch it, stop it when asked."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from labelloop.jobs.queue import JobQueue
from labelloop.jobs.records import Job, JobStatus
from labelloop.jobs.runner import RunHandle, Runner
from labelloop.settings import JobSettings

__all__ = ["Worker"]

logger = logging.getLogger(__name__)


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


class Worker:
    """Runs queued jobs one at a time until ``stop`` is set.

    Jobs write their own progress, heartbeats and final status; the worker's part is the
    process: it starts it, forwards a stop request (SIGTERM, then SIGKILL after the grace
    period), and records an ERROR when the process ends without a final status.
    """

    def __init__(self, queue: JobQueue, runner: Runner, settings: JobSettings, jobs_dir: Path) -> None:
        self.queue = queue
        self.runner = runner
        self.settings = settings
        self.jobs_dir = jobs_dir
        self.stop = threading.Event()
        self.worker_id = ""

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())

    def run_forever(self) -> None:
        self.worker_id = self.queue.register_worker()
        logger.info("worker %s ready", self.worker_id)
        last_beat = 0.0
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if now - last_beat >= self.settings.heartbeat_interval_s:
                    self.queue.worker_heartbeat(self.worker_id)
                    self.queue.reap(self.settings.stale_after_s)
                    last_beat = now
                job = self.queue.claim(self.worker_id)
                if job is None:
                    self.stop.wait(self.settings.poll_interval_s)
                    continue
                self.run_job(job)
        finally:
            self.queue.worker_stopped(self.worker_id)
            logger.info("worker %s stopped", self.worker_id)

    def run_job(self, job: Job) -> None:
        logger.info("worker %s runs job %s (%s %s)", self.worker_id, job.id, job.kind.value, job.name)
        try:
            handle = self.runner.start(job)
        except Exception as exc:
            logger.exception("job %s could not start", job.id)
            self.queue.finish(job.id, JobStatus.ERROR, error=f"could not start: {exc}", line=f"ERROR: {exc}")
            return
        self.queue.started(job.id, handle.pid)
        self._watch(job, handle)

    def _watch(self, job: Job, handle: RunHandle) -> None:
        kill_at: float | None = None
        last_beat = last_check = 0.0
        while (code := handle.poll()) is None:
            now = time.monotonic()
            if now - last_beat >= self.settings.heartbeat_interval_s:
                self.queue.worker_heartbeat(self.worker_id)
                last_beat = now
            asked = False
            if kill_at is None and now - last_check >= 0.5:  # a stop request is seen within half a second
                asked = self.stop.is_set() or self.queue.cancel_requested(job.id)
                last_check = now
            if asked:
                handle.terminate()
                kill_at = now + self.settings.cancel_grace_s
            elif kill_at is not None and now >= kill_at:
                handle.kill()
            time.sleep(0.1)
        current = self.queue.get(job.id)
        if not current.active:
            return
        if current.cancel_requested:
            self.queue.finish(job.id, JobStatus.STOPPED, line="stopped; its process was ended")
        elif self.stop.is_set():
            reason = "the worker shut down while it ran; resume it from its last checkpoint"
            self.queue.finish(job.id, JobStatus.ERROR, error=reason, line=f"ERROR: {reason}")
        else:
            tail = _log_tail(self.jobs_dir / job.id / "job.log")
            reason = f"its process exited with code {code} without finishing" + (f": {tail}" if tail else "")
            self.queue.finish(job.id, JobStatus.ERROR, error=reason, line=f"ERROR: {reason}"[:500])
