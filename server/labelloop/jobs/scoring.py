"""Scoring jobs (``/scoring/``): the app's scoring methods, which store per-image scores that
active-learning strategies read, and the built-in ``dice``, the Dice between an image's newest
model output (tag ``original``) and its ``final`` label, written into the label's info: how much
annotators had to change the pre-segmentation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelloop.activelearning import ScoreStore
from labelloop.datastore import DEFAULT_TAG, ORIGINAL_TAG, Datastore, ImageRecord, LabelVersion
from labelloop.imaging import read_volume
from labelloop.jobs.training import mean_dice
from labelloop.registry import ModelVersion, Registry
from labelloop.tasks import App, ScoringMethod

__all__ = [
    "SCORING_METHODS",
    "ScoringPlan",
    "dice_of_files",
    "dice_pairs",
    "plan_scoring",
    "record_dice",
    "run_scoring",
]

#: method -> description, as /info/ lists them
SCORING_METHODS: dict[str, dict[str, Any]] = {
    "dice": {
        "description": "Dice between each image's model output ('original') and its final label",
        "config": {},
    },
}


def dice_of_files(final: Path, original: Path) -> float | None:
    """The mean Dice over the classes of a final label and the model output it started from
    (``None`` when their grids differ)."""
    a = np.asarray(read_volume(final).array)
    b = np.asarray(read_volume(original).array)
    values = sorted(int(v) for v in np.union1d(np.unique(a), np.unique(b)) if v != 0)
    return mean_dice(a, b, values) if a.shape == b.shape else None


def dice_pairs(datastore: Datastore) -> tuple[list[LabelVersion], dict[str, LabelVersion]]:
    """``(final labels with a model output, image id -> that output)``: what ``dice`` scores."""
    originals = {label.image_id: label for label in datastore.labels.current(ORIGINAL_TAG)}
    finals = [label for label in datastore.labels.current(DEFAULT_TAG) if label.image_id in originals]
    return finals, originals


def record_dice(datastore: Datastore, image_id: str, score: float | None, original_version: int) -> None:
    """Write ``dice``'s score into the final label's info."""
    datastore.labels.update_info(
        image_id,
        DEFAULT_TAG,
        {"dice": {"original": score, "original_version": original_version}},
        user="scoring",
    )


def _dice(
    datastore: Datastore, progress: Callable[[int, int, str], None], stop: threading.Event
) -> dict[str, Any]:
    finals, originals = dice_pairs(datastore)
    scores: dict[str, Any] = {}
    for done, final in enumerate(finals, start=1):
        if stop.is_set():
            break
        original = originals[final.image_id]
        score = dice_of_files(final.path, original.path)
        scores[final.image_id] = score
        record_dice(datastore, final.image_id, score, original.version)
        progress(done, len(finals), final.image_id)
    return scores


@dataclass(frozen=True)
class ScoringPlan:
    """What an app method's run scores: with the model's active version, the unfinished images
    whose stored score is not from that version and content (``todo``)."""

    name: str
    model: str
    active: ModelVersion
    store: ScoreStore
    fresh: dict[str, str]
    todo: list[ImageRecord]

    def start(self) -> dict[str, Any]:
        """The run's result before any image: the model, its version, how many were fresh."""
        return {"model": self.model, "model_version": self.active.version, "skipped": len(self.fresh)}

    def keep(
        self, image: ImageRecord, value: Any, details: Mapping[str, Any], log: Callable[[str], object]
    ) -> bool:
        """Store ``image``'s score; ``False`` (logged) once the version is no longer active."""
        kept = self.store.put(
            image.id,
            self.name,
            model=self.model,
            model_version=self.active.version,
            image_sha256=image.sha256,
            value=value,
            details=dict(details),
            only_if_active=True,
        )
        if not kept:
            log(f"{self.model} version {self.active.version} is no longer the active version: stopped")
        return kept


def plan_scoring(
    name: str,
    method: ScoringMethod,
    datastore: Datastore,
    registry: Registry,
    scores_version: Callable[[str, int], object],
) -> ScoringPlan:
    """The images app method ``name`` scores with its model's active version (told to
    ``scores_version``, so that a change of active version stops the job)."""
    model_name = method.spec.model
    active = registry.active(model_name)
    if active is None:
        raise RuntimeError(f"'{name}' needs a trained '{model_name}' model; train it first")
    scores_version(model_name, active.version)  # a change of active version stops this job by it
    store = ScoreStore(datastore.db)
    fresh = store.fresh(name, active.version)
    finals = {label.image_id for label in datastore.labels.current(DEFAULT_TAG)}
    todo = [i for i in datastore.images.all() if i.id not in finals and fresh.get(i.id) != i.sha256]
    return ScoringPlan(name, model_name, active, store, fresh, todo)


def _app_method(
    name: str,
    method: ScoringMethod,
    datastore: Datastore,
    registry: Registry,
    device: Any,
    progress: Callable[[int, int, str], None],
    stop: threading.Event,
    log: Callable[[str], object],
    scores_version: Callable[[str, int], object],
) -> dict[str, Any] | None:
    """Score every unfinished image whose stored score is not from the active version and content.

    Stops (``None``) when that version stops being active meanwhile (a rollback, a promotion): its
    scores are refused from then on, and rescoring with the new version is queued by the change.
    """
    plan = plan_scoring(name, method, datastore, registry, scores_version)
    model = method.load(plan.active.path, device) if plan.todo else None
    results = plan.start()
    for done, image in enumerate(plan.todo, start=1):
        if stop.is_set():
            break
        output = method.score(model, read_volume(datastore.images.file(image)), device)
        if not plan.keep(image, output.value, output.details, log):
            return None
        results[image.id] = output.value
        progress(done, len(plan.todo), image.id)
    return results


def run_scoring(
    name: str,
    app: App,
    datastore: Datastore,
    registry: Registry,
    device: Any,
    progress: Callable[[int, int, str], None],
    stop: threading.Event,
    *,
    log: Callable[[str], object] = lambda _: None,
    scores_version: Callable[[str, int], object] = lambda _model, _version: None,
) -> dict[str, Any] | None:
    """Run scoring method ``name`` (built in, or the app's); returns ``{image_id: score}``, or
    ``None`` when it stopped because the model version it scored with is no longer active.

    ``scores_version(model, version)`` is told which version an app method scores with (the job
    records it, so that a change of active version can stop it); ``log`` gets a line for the job's log.
    """
    if name == "dice":
        return _dice(datastore, progress, stop)
    method = app.scoring.get(name)
    if method is None:
        raise ValueError(f"unknown scoring method {name!r}")
    return _app_method(name, method, datastore, registry, device, progress, stop, log, scores_version)
