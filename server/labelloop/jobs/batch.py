"""Batch inference jobs: run a model over many images and save the results as labels (``/batch/infer``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.datastore import (
    DEFAULT_TAG,
    ORIGINAL_TAG,
    Datastore,
    ImageRecord,
    LabelFile,
    Provenance,
    validate_tag,
)
from labelloop.imaging import Volume, read_volume, write_volume
from labelloop.inference import ImageSource, InferenceService

__all__ = ["run_batch_infer", "save_batch_label", "select_images"]


def _load(datastore: Datastore, record: ImageRecord) -> Volume:
    return read_volume(datastore.images.file(record))


def select_images(datastore: Datastore, which: str) -> list[str]:
    """Image ids for ``all``, ``labeled`` (with a final label) or ``unlabeled``."""
    ids = [image.id for image in datastore.images.all()]
    if which == "all":
        return ids
    labelled = {label.image_id for label in datastore.labels.current(DEFAULT_TAG)}
    return [i for i in ids if (i in labelled) == (which == "labeled")]


def save_batch_label(
    datastore: Datastore,
    image_id: str,
    tag: str,
    label: npt.NDArray[Any],
    affine: npt.NDArray[np.float64],
    *,
    model: str,
    model_version: int | None,
    user: str,
) -> int:
    """Store a batch result (``(I, J, K)`` class indices on the image's RAS ``affine``) as the next
    version of ``(image_id, tag)``, by ``user`` from ``model``; returns the version number."""
    with datastore.blobs.scratch(".nii.gz") as path:
        write_volume(path, np.asarray(label).astype("uint8"), affine)
        provenance = Provenance(
            author=user,
            source="infer",
            model=model,
            model_version=model_version,
            params={"model": model, "model_version": model_version, "batch": True},
        )
        return datastore.labels.save(image_id, tag, LabelFile(path), provenance).version


def run_batch_infer(
    model: str,
    images: str,
    params: dict[str, Any],
    datastore: Datastore,
    inference: InferenceService,
    user: str,
    progress: Callable[[int, int, str], None],
    stop: threading.Event,
) -> dict[str, Any]:
    """Infer ``model`` on the chosen images; each result becomes a label version (tag ``label_tag``)."""
    tag = validate_tag(params.get("label_tag") or ORIGINAL_TAG)
    ids = select_images(datastore, images)
    results: dict[str, Any] = {}
    for done, image_id in enumerate(ids, start=1):
        if stop.is_set():
            break
        record = datastore.images.get(image_id)
        source = ImageSource(key=record.sha256, load=partial(_load, datastore, record), image_id=image_id)
        result = inference.submit(model, source, params).result()
        entry: dict[str, Any] = {
            "tag": tag,
            "model_version": result.model_version,
            "latencies": result.latencies,
        }
        if params.get("save_label", True):
            entry["label"] = image_id
            entry["version"] = save_batch_label(
                datastore,
                image_id,
                tag,
                result.output.label,
                result.image.geometry.affine,
                model=model,
                model_version=result.model_version,
                user=user,
            )
        results[image_id] = entry
        progress(done, len(ids), image_id)
    return results
