"""Inside a job's own process: run the job, heartbeat, honour stop requests, record the outcome."""

from __future__ import annotations

import logging
import os
import signal
import threading
import traceback
from pathlib import Path
from typing import Any

from labelloop.datastore import Datastore
from labelloop.inference import InferenceService
from labelloop.jobs.batch import run_batch_infer
from labelloop.jobs.queue import JobQueue
from labelloop.jobs.records import Job, JobKind, JobStatus
from labelloop.jobs.scoring import run_scoring
from labelloop.jobs.training import run_training
from labelloop.registry import Registry
from labelloop.settings import JobSettings
from labelloop.tasks import App

__all__ = ["execute_job"]

logger = logging.getLogger(__name__)


def _heartbeat(
    queue: JobQueue, job_id: str, interval: float, stop: threading.Event, done: threading.Event
) -> None:
    while not done.wait(interval):
        try:
            if queue.heartbeat(job_id):
                stop.set()  # a stop was requested: cooperative first, the worker kills after a grace period
        except Exception:
            logger.exception("heartbeat of job %s failed", job_id)


def _progress(queue: JobQueue, job: Job) -> Any:
    def report(done: int, total: int, item: str) -> None:
        queue.report(job.id, progress={"done": done, "total": total, "current": item})

    return report


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
) -> int:
    """Run job ``job_id`` (already claimed by a worker) to a final status; returns the exit code."""
    job = queue.get(job_id)
    queue.report(job.id, lines=[f"{job.kind.value} {job.name}: process {os.getpid()}, {_priority()}"])
    stop = threading.Event()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    beat = threading.Thread(
        target=_heartbeat, args=(queue, job.id, settings.heartbeat_interval_s, stop, done), daemon=True
    )
    beat.start()
    try:
        if job.kind == JobKind.TRAIN:
            result = run_training(job, app, datastore, registry, queue, settings, stop, jobs_dir)
        elif job.kind == JobKind.SCORING:
            result = run_scoring(
                job.name, app, datastore, registry, inference.device, _progress(queue, job), stop
            )
        else:
            images = str(job.request.get("images", "all"))
            result = run_batch_infer(
                job.name,
                images,
                job.config,
                datastore,
                inference,
                job.created_by,
                _progress(queue, job),
                stop,
            )
        if stop.is_set() or result is None:
            queue.finish(job.id, JobStatus.STOPPED, line="stopped before it finished")
        else:
            queue.finish(job.id, JobStatus.DONE, result=result, line=f"{job.kind.value} {job.name} done")
        return 0
    except Exception as exc:
        logger.error("job %s failed:\n%s", job.id, traceback.format_exc())
        queue.finish(job.id, JobStatus.ERROR, error=f"{type(exc).__name__}: {exc}", line=f"ERROR: {exc}")
        return 1
    finally:
        done.set()
        inference.close()
