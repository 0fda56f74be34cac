"""Inference runs: the last output of each model that each annotator asked for on an image.

The MONAI Label client (what 3D Slicer uses) saves a label without saying which model's output it
corrected. The server knows: the same annotator's last inference on that image. A save that does
not name a model is linked to that run (``workflows.label_save``), and the label version says so.
One row per (image, holder, model), replaced by the next run, so the table stays as small as the
work in progress.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, select

from labelloop.datastore.models import inference_runs
from labelloop.datastore.records import Context

__all__ = ["InferenceRun", "InferenceRuns"]


@dataclass(frozen=True)
class InferenceRun:
    """``holder`` ran ``model`` (version ``model_version``; ``None`` for models without versions)
    on ``image_id`` at ``created_at`` (epoch seconds)."""

    image_id: str
    holder: str
    model: str
    model_version: int | None
    created_at: float


class InferenceRuns:
    """Record runs and find the one a save started from."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def record(self, image_id: str, holder: str, model: str, model_version: int | None) -> InferenceRun:
        """Note that ``holder`` ran ``model`` on ``image_id`` now (replacing their previous run of it)."""
        run = InferenceRun(image_id, holder[:256], model[:128], model_version, self._ctx.clock())
        c = inference_runs.c
        with self._ctx.db.write() as conn:
            conn.execute(
                delete(inference_runs).where(
                    c.image_id == run.image_id, c.holder == run.holder, c.model == run.model
                )
            )
            conn.execute(
                insert(inference_runs).values(
                    image_id=run.image_id,
                    holder=run.holder,
                    model=run.model,
                    model_version=run.model_version,
                    created_at=run.created_at,
                )
            )
        return run

    def last(self, image_id: str, holder: str, after: float | None = None) -> InferenceRun | None:
        """``holder``'s newest run on ``image_id`` of any model, later than ``after`` when given."""
        c = inference_runs.c
        query = select(inference_runs).where(c.image_id == image_id, c.holder == holder[:256])
        if after is not None:
            query = query.where(c.created_at > after)
        with self._ctx.db.read() as conn:
            row = conn.execute(query.order_by(c.created_at.desc()).limit(1)).mappings().first()
        if row is None:
            return None
        version = row["model_version"]
        return InferenceRun(
            row["image_id"],
            row["holder"],
            row["model"],
            int(version) if version is not None else None,
            float(row["created_at"]),
        )
