"""What the API asks of the jobs machinery: submit, wait, stop, list, and train stats."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from labelloop.datastore import DEFAULT_TAG, Datastore
from labelloop.errors import InvalidParamsError, ModelNotFoundError
from labelloop.jobs.queue import JobQueue
from labelloop.jobs.records import Job, JobKind, JobStatus
from labelloop.jobs.rescore import RESCORE_PRIORITY, queue_rescoring_in, stop_stale_scoring_in
from labelloop.jobs.scoring import SCORING_METHODS
from labelloop.settings import JobSettings
from labelloop.tasks import App, validate_options

__all__ = ["JobService"]

logger = logging.getLogger(__name__)

#: What people ask for runs before the rescoring a new model version queues by itself.
_PRIORITY = {JobKind.TRAIN: 0, JobKind.BATCH_INFER: 0, JobKind.SCORING: 0}

#: Who automatic training runs are created by (``created_by`` of their task).
AUTOTRAIN_USER = "autotrain"

#: How long ``DELETE /train/`` waits for the job to end before it answers with the job as it is
#: (a job stops at its next step; the task says STOPPED once it has).
STOP_ANSWER_S = 2.0


class JobService:
    """Jobs as MONAI Label's ``/train``, ``/scoring`` and ``/batch/infer`` see them."""

    def __init__(self, queue: JobQueue, app: App, datastore: Datastore, settings: JobSettings) -> None:
        self.queue = queue
        self.app = app
        self.datastore = datastore
        self.settings = settings
        #: Trainer -> the options automatic runs use, validated now: a typo stops the server's start.
        self.autotrain_runs: dict[str, dict[str, Any]] = self._autotrain_runs()

    # ------------------------------------------------------------ what exists

    def trainers(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "description": task.spec.description,
                "config": dict(task.spec.config),
                "model": task.model,
            }
            for name, task in self.app.train_tasks.items()
        }

    def scoring_methods(self) -> dict[str, dict[str, Any]]:
        """Built-in and the app's scoring methods, as ``/info/`` lists them."""
        methods = {name: dict(spec) for name, spec in SCORING_METHODS.items()}
        for name, method in self.app.scoring.items():
            methods[name] = {
                "description": method.spec.description,
                "config": dict(method.spec.config),
                "model": method.spec.model,
            }
        return methods

    def train_stats(self) -> dict[str, Any]:
        """Per trainer, the stats of its newest run that reported any (kept in the database)."""
        return self.queue.latest_progress(JobKind.TRAIN, list(self.app.train_tasks))

    # ------------------------------------------------------------ submitting

    def _config(self, trainer: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The run's options validated into the trainer's config model, as stored with the job."""
        task = self.app.train_tasks.get(trainer)
        if task is None:
            raise ModelNotFoundError(f"Trainer '{trainer}' not found; /info/ lists the trainers")
        config: dict[str, Any] = validate_options(task.config_model, params).model_dump(mode="json")
        return config

    def submit_train(
        self, trainer: str, params: Mapping[str, Any], user: str, *, enqueue: bool = False
    ) -> Job:
        """Queue a training run; refused (429) while one is queued or running, unless ``enqueue``."""
        config = self._config(trainer, params)
        resume = params.get("resume_from")
        if resume is not None:
            if not isinstance(resume, str):
                raise InvalidParamsError("'resume_from' must be the id of an earlier train task")
            earlier = self.queue.get(resume)
            if earlier.kind != JobKind.TRAIN or earlier.name != trainer:
                raise InvalidParamsError(f"Task {resume} is not a '{trainer}' training run")
        job = self.queue.submit(
            JobKind.TRAIN,
            trainer,
            request={**params, "model": trainer},
            config=config,
            user=user,
            priority=_PRIORITY[JobKind.TRAIN],
            exclusive=not enqueue,
            resume_from=resume,
            # A person's request takes the place of automatic runs that have not started yet.
            replaces=None if user == AUTOTRAIN_USER else (lambda queued: queued.created_by == AUTOTRAIN_USER),
        )
        self._make_room(job)
        return job

    def _make_room(self, job: Job) -> Job | None:
        """Background rescoring yields to ``job``, which a person asked for, when it holds every
        live worker: it is stopped and queued again (scoring is incremental, so the new job goes on
        from the first image without a fresh score). With a worker free, both run side by side.
        Returns the requeued job, if any."""
        if job.priority <= RESCORE_PRIORITY:
            return None
        stale = self.settings.stale_after_s
        requeued = self.queue.preempt(job, below=_PRIORITY[job.kind], stale_after_s=stale)
        if requeued is not None:
            logger.info("background job yielded to %s %s; requeued as %s", job.kind, job.id, requeued.id)
        return requeued

    def submit_all_trainers(self, body: Mapping[str, Any], user: str) -> dict[str, Job]:
        """``POST /train/``: one queued run per trainer; ``body[trainer]`` holds that trainer's options.

        Unlike MONAI Label, a top-level ``model`` key does not redirect every run (its bug 13).
        """
        jobs = {}
        shared = {k: v for k, v in body.items() if k not in self.app.train_tasks and k != "model"}
        for trainer in self.app.train_tasks:
            own = body.get(trainer)
            params = {**shared, **(own if isinstance(own, Mapping) else {})}
            jobs[trainer] = self.submit_train(trainer, params, user, enqueue=True)
        return jobs

    def submit_scoring(
        self, method: str, params: Mapping[str, Any], user: str, *, exclusive: bool = True
    ) -> Job:
        """Queue ``method`` (429 while that method is queued or running; other methods, such as
        the rescoring a new model version queues by itself, do not block it)."""
        if method not in SCORING_METHODS and method not in self.app.scoring:
            raise ModelNotFoundError(f"Scoring method '{method}' not found; /info/ lists them")
        job = self.queue.submit(
            JobKind.SCORING,
            method,
            request={**params, "method": method},
            config=dict(params),
            user=user,
            priority=_PRIORITY[JobKind.SCORING],
            exclusive=exclusive,
            exclusive_per_name=True,
        )
        self._make_room(job)
        return job

    def rescore_in(self, conn: Connection, model: str, user: str, cause: str) -> list[Job]:
        """Queue the app's scoring methods that read ``model`` after its active version changed, in
        ``conn``'s write transaction (nothing when ``settings.rescore`` is off)."""
        if not self.settings.rescore:
            return []
        return queue_rescoring_in(conn, self.queue, self.app, model, user, cause)

    def version_changed_in(
        self, conn: Connection, model: str, version: int | None, user: str, cause: str
    ) -> list[Job]:
        """``model``'s active version is now ``version``, in ``conn``'s write transaction: stop the
        scoring jobs that still score with another version, and queue rescoring (``rescore_in``)."""
        stop_stale_scoring_in(conn, self.queue, self.app, model, version, user)
        return self.rescore_in(conn, model, user, cause)

    def submit_batch_infer(
        self, model: str, images: str, params: Mapping[str, Any], user: str, known_models: list[str]
    ) -> Job:
        if model not in known_models:
            raise ModelNotFoundError(f"Model '{model}' not found; /info/ lists the models")
        job = self.queue.submit(
            JobKind.BATCH_INFER,
            model,
            request={**params, "model": model, "images": images},
            config=dict(params),
            user=user,
            priority=_PRIORITY[JobKind.BATCH_INFER],
            exclusive=True,
        )
        self._make_room(job)
        return job

    # ------------------------------------------------------------ following

    async def wait(self, job_id: str, timeout_s: float | None = None) -> Job:
        """Wait (without blocking the event loop) until the job reaches a final status."""
        deadline = time.monotonic() + (timeout_s or self.settings.run_sync_timeout_s)
        while True:
            job = await asyncio.to_thread(self.queue.get, job_id)
            if not job.active:
                return job
            if time.monotonic() > deadline:
                return job
            await asyncio.sleep(0.2)

    def latest(self, kind: JobKind) -> Job | None:
        return self.queue.newest(kind)

    def history(self, kind: JobKind) -> list[Job]:
        return self.queue.recent(kind)

    def running(self, kind: JobKind) -> Job | None:
        """The running job of ``kind``, else the oldest queued one (a queued job counts as running)."""
        active = self.queue.active(kind)
        for job in active:
            if job.status == JobStatus.RUNNING:
                return job
        return active[0] if active else None

    def get(self, job_id: str) -> Job:
        return self.queue.get(job_id)

    def stop(self, kind: JobKind, user: str, wait_s: float = STOP_ANSWER_S) -> Job | None:
        """Stop the running job of ``kind`` and cancel queued ones; returns the job, if any.

        Waits up to ``wait_s`` for the worker to end the job's process (a job stops at its next
        step; its worker kills it after the grace period): a quick stop is answered ``STOPPED``
        with an ``end_ts``, a slow one with the job still RUNNING and ``stop requested`` in its log,
        and the task reports ``STOPPED`` once it has stopped.
        """
        running, queued = self.queue.cancel(kind, user)
        target = running[0] if running else (queued[0] if queued else None)
        if target is None:
            return None
        deadline = time.monotonic() + wait_s
        job = self.queue.get(target.id)
        while job.active and time.monotonic() < deadline:
            time.sleep(0.1)
            job = self.queue.get(target.id)
        return job

    # ------------------------------------------------------------ automatic retraining

    def _autotrain_runs(self) -> dict[str, dict[str, Any]]:
        names = self.settings.autotrain_models
        if names is None:
            names = list(self.app.train_tasks)
        unknown = sorted(set(names) - set(self.app.train_tasks))
        if unknown:
            raise InvalidParamsError(
                f"jobs.autotrain_models names trainers this app does not have: {unknown}; "
                f"it has {sorted(self.app.train_tasks)}"
            )
        options = dict(self.settings.autotrain_options)
        try:
            return {name: self._config(name, options) for name in names}
        except InvalidParamsError as exc:
            raise InvalidParamsError(f"jobs.autotrain_options: {exc.message}") from exc

    def _new_final_labels(self) -> tuple[int, float]:
        """``(final labels people saved since the last training run, that run's creation time)``.

        Only saves by people count (``source = upload``): imported studies' labels and
        inference outputs do not.
        """
        last = self.latest(JobKind.TRAIN)
        since = last.created_at if last is not None else 0.0
        return self.datastore.labels.count_saves(DEFAULT_TAG, since, sources=("upload",)), since

    def autotrain_plan(self) -> dict[str, Any]:
        """What automatic training does and how close it is (``/info/``'s ``autotrain``)."""
        new, since = self._new_final_labels() if self.settings.autotrain_after > 0 else (0, 0.0)
        return {
            "after": self.settings.autotrain_after,
            "enabled": self.settings.autotrain_after > 0 and bool(self.autotrain_runs),
            "counts": "final labels saved by people since the last training run (imports do not count)",
            "new_final_labels": new,
            "since_ts": since,
            "models": list(self.autotrain_runs),
            "options": self.autotrain_runs,
        }

    def autotrain(self) -> list[Job]:
        """Queue the autotrain trainers once ``autotrain_after`` final labels were saved by people
        since the last training run."""
        k = self.settings.autotrain_after
        if k <= 0 or not self.autotrain_runs:
            return []
        new, _ = self._new_final_labels()
        if new < k:
            return []
        if self.queue.active(JobKind.TRAIN):
            return []
        queued = []
        for trainer, config in self.autotrain_runs.items():
            try:
                queued.append(self.submit_train(trainer, config, AUTOTRAIN_USER, enqueue=True))
            except Exception:
                logger.exception("automatic training of %s could not be queued", trainer)
        logger.info("%d new final labels: queued training for %s", new, [j.name for j in queued])
        return queued
