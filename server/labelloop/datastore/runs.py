"""Inference runs: the last output of each model that each annotator asked for on an image.

The MONAI Label client (what 3D Slicer uses) saves a label without saying which model's output it
corrected. The server knows: the same annotator's last inference on that image. A save that does
not name a model is linked to that run (``workflows.label_save``), and the label version says so.
One row per (image, holder, model), replaced by the next run, so the table stays as small as the
work in progress.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, delete, insert, select

from labelloop.datastore.models import inference_runs
from labelloop.datastore.records import Context

__all__ = ["InferenceRun", "InferenceRuns"]


# Built once: read by every label save (values bound per call).
_c = inference_runs.c
_LAST = (
    select(inference_runs)
    .where(_c.image_id == bindparam("image_id"), _c.holder == bindparam("holder"))
    .order_by(_c.created_at.desc())
    .limit(1)
)
_LAST_AFTER = _LAST.where(_c.created_at > bindparam("after"))


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
        values = {"image_id": image_id, "holder": holder[:256], "after": after}
        with self._ctx.db.read() as conn:
            row = conn.execute(_LAST if after is None else _LAST_AFTER, values).mappings().first()
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
