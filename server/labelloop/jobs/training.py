"""A train job: gather the exact training set, run the app's trainer, publish and maybe promote."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection

from labelloop.datastore import DEFAULT_TAG, Datastore
from labelloop.errors import JobLostError
from labelloop.imaging import read_volume
from labelloop.inference import resolve_device
from labelloop.jobs.queue import JobQueue
from labelloop.jobs.records import Job, JobStatus
from labelloop.jobs.rescore import queue_rescoring_in, stop_stale_scoring_in
from labelloop.registry import ModelVersion, Registry, decide_promotion
from labelloop.settings import JobSettings
from labelloop.tasks import App, InferRequest, InferTask, TrainItem, TrainTask, split_items

__all__ = [
    "JobTrainContext",
    "evaluate",
    "gather_training_set",
    "mean_dice",
    "run_training",
    "starting_point",
]

logger = logging.getLogger(__name__)


class JobTrainContext:
    """The ``TrainContext`` of a job: progress and log lines go to the job's row."""

    def __init__(
        self,
        job: Job,
        queue: JobQueue,
        workdir: Path,
        device: Any,
        stop: threading.Event,
        resume: Path | None,
    ) -> None:
        self._job = job
        self._queue = queue
        self._workdir = workdir
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._device = device
        self._stop = stop
        self._resume = resume
        self._last_report = 0.0
        self.last_stats: dict[str, Any] = {}

    @property
    def device(self) -> Any:
        return self._device

    @property
    def workdir(self) -> Path:
        return self._workdir

    def report(self, stats: Mapping[str, Any]) -> None:
        self.last_stats = dict(stats)
        now = time.monotonic()
        # At most two writes a second; an epoch's end always gets through.
        if now - self._last_report >= 0.5 or "total_time" in stats or stats.get("final"):
            self._queue.report(self._job.id, claim=self._job.claim_token, progress=self.last_stats)
            self._last_report = now

    def log(self, message: str) -> None:
        logger.info("%s", message)
        self._queue.report(self._job.id, claim=self._job.claim_token, lines=[message])

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def resume_checkpoint(self) -> Path | None:
        return self._resume


def starting_point(model: str, active_version: int | None, pretrained: bool) -> str:
    """Where a run starts, for its log: ``pretrained`` fine-tunes the active version when there is one."""
    if active_version is not None and pretrained:
        return f"fine-tuning version {active_version} (pretrained=true)"
    if active_version is not None:
        return f"from scratch (pretrained=false; version {active_version} is active)"
    if pretrained:
        return (
            f"from scratch: no version of {model} is active yet "
            "(pretrained=true fine-tunes the active version once there is one)"
        )
    return "from scratch (pretrained=false)"


def gather_training_set(datastore: Datastore) -> list[TrainItem]:
    """The current ``final`` label version of every live image, exactly (version and checksum)."""
    images = {image.id: image for image in datastore.images.all()}
    items = []
    for label in datastore.labels.current(DEFAULT_TAG):
        image = images.get(label.image_id)
        if image is None or label.image_sha256 != image.sha256:
            continue  # the image was replaced after this label was drawn on it
        items.append(
            TrainItem(
                image_id=image.id,
                image=datastore.images.file(image),
                label=label.path,
                label_version=label.version,
                label_sha256=label.sha256,
            )
        )
    return items


def mean_dice(prediction: np.ndarray, truth: np.ndarray, values: list[int]) -> float | None:
    """Mean Dice over the label ``values`` present in either map; ``None`` if none is."""
    scores = []
    for value in values:
        p, t = prediction == value, truth == value
        total = int(p.sum()) + int(t.sum())
        if total:
            scores.append(2.0 * int(np.logical_and(p, t).sum()) / total)
    return float(np.mean(scores)) if scores else None


def evaluate(task: InferTask, weights: Path, items: list[TrainItem], device: Any) -> float | None:
    """Mean Dice of ``weights`` on ``items`` through the inference path itself (no clicks)."""
    model = task.load(weights, device)
    values = [v for v in task.spec.labels.values() if v != 0]
    scores = []
    for item in items:
        image = read_volume(item.image)
        prepared = task.preprocess(image, device)
        output = task.infer(model, prepared, InferRequest(params={}, image=image, device=device))
        score = mean_dice(np.asarray(output.label), np.asarray(read_volume(item.label).array), values)
        if score is not None:
            scores.append(score)
    return float(np.mean(scores)) if scores else None


def run_training(
    job: Job,
    app: App,
    datastore: Datastore,
    registry: Registry,
    queue: JobQueue,
    settings: JobSettings,
    stop: threading.Event,
    jobs_dir: Path,
) -> dict[str, Any] | None:
    """Run train job ``job``; returns its result, or ``None`` when it was stopped.

    With a result the job is already DONE: the transaction that publishes its model version finishes
    it, and refuses the version (``JobLostError``) if the job no longer runs under its claim.
    """
    trainer: TrainTask[Any] = app.train_tasks[job.name]
    infer_task = app.infer_tasks[trainer.model]
    # Validated at submission; rebuilt from the stored JSON into the trainer's own config model.
    config = trainer.config_model.model_validate(job.config)
    device = resolve_device(config.device)
    items = gather_training_set(datastore)
    if not items:
        raise RuntimeError("No image has a final label yet: there is nothing to train on")
    data = split_items(items, config.val_split)
    active = registry.active(trainer.model)
    init = active.path if active is not None and config.pretrained else None
    resume = None
    if job.resume_from:
        candidate = jobs_dir / job.resume_from / "checkpoint.pt"
        resume = candidate if candidate.is_file() else None
    ctx = JobTrainContext(job, queue, jobs_dir / job.id, device, stop, resume)
    ctx.log(
        f"training {trainer.model} on {len(data.train)} images, validating on {len(data.val)}, "
        + starting_point(trainer.model, active.version if active is not None else None, config.pretrained)
        + (f", resuming job {job.resume_from}" if resume else "")
    )
    started = time.monotonic()
    result = trainer.train(ctx, data, config, init)
    if stop.is_set() or result.weights is None:
        ctx.log("stopped before finishing; the last checkpoint is kept for resuming")
        return None
    new_dice = evaluate(infer_task, result.weights, data.val, device) if data.val else None
    old_dice = (
        evaluate(infer_task, active.path, data.val, device) if data.val and active is not None else None
    )
    promote, why = decide_promotion(settings.promotion, new_dice, old_dice, has_active=active is not None)
    metrics = {**result.metrics}
    if new_dice is not None:
        metrics["val_mean_dice"] = new_dice
    if old_dice is not None:
        metrics["previous_val_mean_dice"] = old_dice
    stats = {**ctx.last_stats, **result.stats}
    if stop.is_set():
        return None

    outcome = "promoted" if promote else "not promoted"

    def result_of(version: ModelVersion) -> dict[str, Any]:
        return {
            "model": trainer.model,
            "model_version": version.version,
            "promoted": promote,
            "reason": why,
            "metrics": metrics,
            "train_stats": stats,
        }

    def finish(conn: Connection, version: ModelVersion) -> None:
        # Fencing: the version exists only if this job still runs under its claim, and the job is
        # DONE in the same transaction, so the reaper cannot call it lost after it published.
        done = queue.finish_in(
            conn,
            job.id,
            JobStatus.DONE,
            claim=job.claim_token,
            result=result_of(version),
            progress=stats,
            metrics=metrics,
            lines=[
                f"model {trainer.model} version {version.version}: {outcome} ({why})",
                f"train {job.name} done",
            ],
        )
        if not done:
            raise JobLostError(f"Task {job.id} was declared lost: model version {version.version} refused")
        if promote:
            stop_stale_scoring_in(conn, queue, app, trainer.model, version.version, job.created_by)
            if settings.rescore:
                # Scores from the previous version are stale now: rescore, below interactive work.
                queue_rescoring_in(conn, queue, app, trainer.model, job.created_by, cause=job.id)

    version = registry.publish(
        trainer.model,
        result.weights,
        source="train",
        user=job.created_by,
        activate=promote,
        metrics=metrics,
        params={**config.model_dump(mode="json"), "job": job.id, "trainer": job.name},
        training_set=data.records,
        train_stats=stats,
        duration_s=time.monotonic() - started,
        in_transaction=finish,
    )
    logger.info("model %s version %d: %s (%s)", trainer.model, version.version, outcome, why)
    return result_of(version)
