"""Scoring jobs (``/scoring/``): the app's scoring methods, which store per-image scores that
active-learning strategies read, and the built-in ``dice``, the Dice between an image's newest
model output (tag ``original``) and its ``final`` label, written into the label's info: how much
annotators had to change the pre-segmentation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from labelloop.activelearning import ScoreStore
from labelloop.datastore import DEFAULT_TAG, ORIGINAL_TAG, Datastore
from labelloop.imaging import read_volume
from labelloop.jobs.training import mean_dice
from labelloop.registry import Registry
from labelloop.tasks import App, ScoringMethod

__all__ = ["SCORING_METHODS", "run_scoring"]

#: method -> description, as /info/ lists them
SCORING_METHODS: dict[str, dict[str, Any]] = {
    "dice": {
        "description": "Dice between each image's model output ('original') and its final label",
        "config": {},
    },
}


def _dice(
    datastore: Datastore, progress: Callable[[int, int, str], None], stop: threading.Event
) -> dict[str, Any]:
    originals = {label.image_id: label for label in datastore.labels.current(ORIGINAL_TAG)}
    finals = [label for label in datastore.labels.current(DEFAULT_TAG) if label.image_id in originals]
    scores: dict[str, Any] = {}
    for done, final in enumerate(finals, start=1):
        if stop.is_set():
            break
        original = originals[final.image_id]
        a = np.asarray(read_volume(final.path).array)
        b = np.asarray(read_volume(original.path).array)
        values = sorted(int(v) for v in np.union1d(np.unique(a), np.unique(b)) if v != 0)
        score = mean_dice(a, b, values) if a.shape == b.shape else None
        scores[final.image_id] = score
        datastore.labels.update_info(
            final.image_id,
            DEFAULT_TAG,
            {"dice": {"original": score, "original_version": original.version}},
            user="scoring",
        )
        progress(done, len(finals), final.image_id)
    return scores


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
    model_name = method.spec.model
    active = registry.active(model_name)
    if active is None:
        raise RuntimeError(f"'{name}' needs a trained '{model_name}' model; train it first")
    scores_version(model_name, active.version)  # a change of active version stops this job by it
    store = ScoreStore(datastore.db)
    fresh = store.fresh(name, active.version)
    finals = {label.image_id for label in datastore.labels.current(DEFAULT_TAG)}
    todo = [i for i in datastore.images.all() if i.id not in finals and fresh.get(i.id) != i.sha256]
    model = method.load(active.path, device) if todo else None
    results: dict[str, Any] = {
        "model": method.spec.model,
        "model_version": active.version,
        "skipped": len(fresh),
    }
    for done, image in enumerate(todo, start=1):
        if stop.is_set():
            break
        output = method.score(model, read_volume(datastore.images.file(image)), device)
        kept = store.put(
            image.id,
            name,
            model=model_name,
            model_version=active.version,
            image_sha256=image.sha256,
            value=output.value,
            details=output.details,
            only_if_active=True,
        )
        if not kept:
            log(f"{model_name} version {active.version} is no longer the active version: stopped")
            return None
        results[image.id] = output.value
        progress(done, len(todo), image.id)
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
