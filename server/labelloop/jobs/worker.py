"""The worker loop: claim a job, run it in its own process, watch it, stop it when asked."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from labelloop.jobs.queue import JobQueue
from labelloop.jobs.records import ClaimState, Job, JobStatus
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


class _Heartbeat(threading.Thread):
    """Beats for the worker and for the job it runs, on a thread of the worker's own.

    The job's heartbeat comes from here, not from the job's process: that process is niced below
    the server, may hold its GIL for seconds in one native call, and takes the database's write lock
    while descheduled under load; the worker sleeps nearly all the time at the server's priority, so
    its beats stay on time on a busy machine. A beat that waits on the database delays only itself.
    """

    def __init__(self, queue: JobQueue, worker_id: str, job: Job, interval_s: float) -> None:
        super().__init__(name=f"heartbeat-{job.id[:8]}", daemon=True)
        self._queue = queue
        self._worker_id = worker_id
        self._job = job
        self._interval_s = interval_s
        self._done = threading.Event()
        self.state = ClaimState.HELD

    def run(self) -> None:
        while True:
            try:
                self._queue.worker_heartbeat(self._worker_id)
                self.state = self._queue.heartbeat(self._job.id, self._job.claim_token)
            except Exception:
                logger.exception("heartbeat of job %s failed", self._job.id)
            if self.state in (ClaimState.ENDED, ClaimState.LOST) or self._done.wait(self._interval_s):
                return

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=self._interval_s + 1)


class Worker:
    """Runs queued jobs one at a time until ``stop`` is set.

    Jobs write their own progress and final status; the worker's part is the process and its
    liveness: it starts it, heartbeats for it, forwards a stop request (SIGTERM, then SIGKILL after
    the grace period), kills it at once when the reaper declared it lost (its claim was revoked: its
    writes are refused anyway), and records an ERROR when the process ends without a final status.
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
        claim = job.claim_token
        try:
            handle = self.runner.start(job)
        except Exception as exc:
            logger.exception("job %s could not start", job.id)
            self.queue.finish(
                job.id, JobStatus.ERROR, claim=claim, error=f"could not start: {exc}", line=f"ERROR: {exc}"
            )
            return
        self.queue.started(job.id, handle.pid, claim)
        beat = _Heartbeat(self.queue, self.worker_id, job, self.settings.heartbeat_interval_s)
        beat.start()
        try:
            self._watch(job, handle)
        finally:
            beat.stop()

    def _watch(self, job: Job, handle: RunHandle) -> None:
        claim = job.claim_token
        kill_at: float | None = None
        killed_lost = False
        last_check = 0.0
        while (code := handle.poll()) is None:
            now = time.monotonic()
            state = ClaimState.HELD
            if now - last_check >= 0.5:  # a stop request or a lost claim is seen within half a second
                state = self.queue.claim_state(job.id, claim)
                last_check = now
            if state == ClaimState.LOST and not killed_lost:
                # Declared lost while it ran (this worker stalled): nothing it does counts any more.
                logger.warning("job %s was declared lost while its process ran: killing it", job.id)
                handle.kill()
                killed_lost = True
                self.queue.note(job.id, f"its process {handle.pid} was still running: killed")
            elif kill_at is None and (self.stop.is_set() or state == ClaimState.STOP):
                handle.terminate()
                kill_at = now + self.settings.cancel_grace_s
            elif kill_at is not None and now >= kill_at:
                handle.kill()
            time.sleep(0.1)
        current = self.queue.get(job.id)
        if not current.active:
            return
        if current.cancel_requested:
            self.queue.finish(job.id, JobStatus.STOPPED, claim=claim, line="stopped; its process was ended")
        elif self.stop.is_set():
            reason = "the worker shut down while it ran; resume it from its last checkpoint"
            self.queue.finish(job.id, JobStatus.ERROR, claim=claim, error=reason, line=f"ERROR: {reason}")
        else:
            tail = _log_tail(self.jobs_dir / job.id / "job.log")
            reason = f"its process exited with code {code} without finishing" + (f": {tail}" if tail else "")
            self.queue.finish(
                job.id, JobStatus.ERROR, claim=claim, error=reason, line=f"ERROR: {reason}"[:500]
            )
