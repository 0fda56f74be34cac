"""Inside a job's own process: run the job, heartbeat, honour stop requests, record the outcome."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labelloop.datastore import Datastore
from labelloop.errors import JobLostError
from labelloop.inference import InferenceService
from labelloop.jobs.batch import run_batch_infer
from labelloop.jobs.queue import JobQueue
from labelloop.jobs.records import ClaimState, Job, JobKind, JobStatus
from labelloop.jobs.scoring import run_scoring
from labelloop.jobs.training import run_training
from labelloop.registry import Registry
from labelloop.settings import JobSettings
from labelloop.tasks import App

__all__ = ["execute_job"]

logger = logging.getLogger(__name__)


def _watch_claim(
    queue: JobQueue,
    job: Job,
    interval: float,
    stop: threading.Event,
    lost: threading.Event,
    done: threading.Event,
) -> None:
    """Tell the job when to stop: a stop was asked for, or it was declared lost (then stop at once:
    its writes are refused). Read only: the heartbeat itself comes from the worker (``worker``)."""
    while not done.wait(interval):
        try:
            state = queue.claim_state(job.id, job.claim_token)
        except Exception:
            logger.exception("the claim of job %s could not be read", job.id)
            continue
        if state == ClaimState.LOST:
            logger.warning("job %s was declared lost: stopping; its results would be refused", job.id)
            lost.set()
        if state != ClaimState.HELD:
            stop.set()  # a stop was requested: cooperative first, the worker kills after a grace period


def _progress(queue: JobQueue, job: Job) -> Any:
    """``report(done, total, item)`` for scoring and batch inference: images done of ``total``, the
    last one, percent done and the time left in seconds at the pace so far."""
    started = time.monotonic()

    def report(done: int, total: int, item: str) -> None:
        elapsed = time.monotonic() - started
        left = elapsed / done * (total - done) if done else None
        progress = {
            "done": done,
            "total": total,
            "current": item,
            "unit": "images",
            "percent": round(100.0 * done / total, 1) if total else 100.0,
            "time_left_s": round(left, 1) if left is not None else None,
        }
        queue.report(job.id, claim=job.claim_token, progress=progress)

    return report


def _refused(queue: JobQueue, job: Job, what: str) -> int:
    """The job ended up lost: say so in its log (its status stays what the reaper wrote)."""
    line = f"its process went on after it was declared lost; {what} was refused"
    logger.warning("job %s: %s", job.id, line)
    queue.note(job.id, line)
    return 1


def _priority() -> str:
    """This process's CPU priority as the runner set it (``settings.nice``), for the job's log."""
    parts = [f"niceness {os.nice(0)}"] if hasattr(os, "nice") else []
    try:
        group = Path("/proc/self/autogroup").read_text().split()  # "/autogroup-123 nice 10"
        parts.append(f"scheduling group nice {group[-1]}")
    except (OSError, IndexError):
        pass
    return ", ".join(parts) or "priority unknown"


def execute_job(
    job_id: str,
    *,
    app: App,
    datastore: Datastore,
    registry: Registry,
    inference: InferenceService,
    queue: JobQueue,
    settings: JobSettings,
    jobs_dir: Path,
    batch_infer: Callable[..., dict[str, Any]] = run_batch_infer,
    scoring: Callable[..., dict[str, Any] | None] = run_scoring,
) -> int:
    """Run job ``job_id`` (already claimed by a worker) to a final status; returns the exit code.

    Every write goes under the job's claim: once the reaper declared the job lost, its progress,
    its final status and its model version are refused, and it stops at its next check.
    ``batch_infer`` and ``scoring`` do those jobs' work (``run_batch_infer`` and ``run_scoring``, or
    the Ray runner's, which take the same arguments); training runs the app's trainer, which the Ray
    runner hands in wrapped.
    """
    job = queue.get(job_id)
    if job.status != JobStatus.RUNNING:
        logger.warning("job %s is %s, not running: nothing to do", job.id, job.status.value)
        return 1
    queue.report(
        job.id,
        claim=job.claim_token,
        lines=[f"{job.kind.value} {job.name}: process {os.getpid()}, {_priority()}"],
    )
    stop = threading.Event()
    lost = threading.Event()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    watch = threading.Thread(
        target=_watch_claim,
        args=(queue, job, settings.heartbeat_interval_s, stop, lost, done),
        name="claim-watch",
        daemon=True,
    )
    watch.start()
    try:
        if job.kind == JobKind.TRAIN:
            result = run_training(job, app, datastore, registry, queue, settings, stop, jobs_dir)
        elif job.kind == JobKind.SCORING:
            result = scoring(
                job.name,
                app,
                datastore,
                registry,
                inference.device,
                _progress(queue, job),
                stop,
                log=lambda line: queue.report(job.id, claim=job.claim_token, lines=[line]),
                scores_version=lambda model, version: queue.report(
                    job.id, claim=job.claim_token, metrics={"model": model, "model_version": version}
                ),
            )
        else:
            images = str(job.request.get("images", "all"))
            result = batch_infer(
                job.name,
                images,
                job.config,
                datastore,
                inference,
                job.created_by,
                _progress(queue, job),
                stop,
            )
        claim = job.claim_token
        if stop.is_set() or result is None:
            ended = queue.finish(job.id, JobStatus.STOPPED, claim=claim, line="stopped before it finished")
        else:
            line = f"{job.kind.value} {job.name} done"
            ended = queue.finish(job.id, JobStatus.DONE, claim=claim, result=result, line=line)
        if not ended and queue.claim_state(job.id, claim) == ClaimState.LOST:
            return _refused(queue, job, "its result")
        return 0
    except JobLostError:
        return _refused(queue, job, "its model version")
    except Exception as exc:
        logger.error("job %s failed:\n%s", job.id, traceback.format_exc())
        if lost.is_set():
            return _refused(queue, job, "its outcome")
        queue.finish(
            job.id,
            JobStatus.ERROR,
            claim=job.claim_token,
            error=f"{type(exc).__name__}: {exc}",
            line=f"ERROR: {exc}",
        )
        return 1
    finally:
        done.set()
        inference.close()
