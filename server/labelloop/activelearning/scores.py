"""Stored per-image scores, with the model version and image content that produced them.

Only the active model version's scores count: scores made by a version that is no longer active
(after a rollback, or the promotion of another) are not comparable with the active one's and are
left out of what strategies see, and a score of a version that is not active is refused when it
is stored (a scoring job that outlived its version). This reads the registry's active versions,
which is why active learning depends on the registry.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, insert, select

from labelloop.activelearning.models import scores
from labelloop.db import Database
from labelloop.registry import active_versions_in, model_lock
from labelloop.tasks import Score

__all__ = ["ScoreStore"]


def _current(model: str, model_version: int | None, active: dict[str, int | None]) -> bool:
    """Whether a score by ``model_version`` of ``model`` is the active version's: a model the
    registry has no version of (one that takes no weights) has only unversioned scores, all current."""
    if model not in active:
        return True
    return model_version is not None and model_version == active[model]


class ScoreStore:
    """``scores`` rows: one per (image, method); rewritten when the model version or image changes."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def put(
        self,
        image_id: str,
        method: str,
        *,
        model: str,
        model_version: int | None,
        image_sha256: str,
        value: float | None,
        details: dict[str, Any],
        only_if_active: bool = False,
    ) -> bool:
        """Store a score; with ``only_if_active``, only while ``model_version`` is the model's active
        version (checked under the model's lock, so no activation slips in before the commit).
        Returns whether it was stored."""
        with self._db.write() as conn:
            if only_if_active:
                self._db.lock(conn, model_lock(model))
                if not _current(model, model_version, active_versions_in(conn, [model])):
                    return False
            conn.execute(delete(scores).where(scores.c.image_id == image_id, scores.c.method == method))
            conn.execute(
                insert(scores).values(
                    image_id=image_id,
                    method=method,
                    model=model,
                    model_version=model_version,
                    image_sha256=image_sha256,
                    value=value,
                    details=details,
                    computed_at=self._clock(),
                )
            )
        return True

    def all(self) -> dict[str, dict[str, Score]]:
        """image id -> method -> ``Score``, of the active model versions only (see the module docstring)."""
        out: dict[str, dict[str, Score]] = defaultdict(dict)
        with self._db.read() as conn:
            active = active_versions_in(conn)
            for row in conn.execute(select(scores)).mappings():
                if not _current(row["model"], row["model_version"], active):
                    continue
                out[row["image_id"]][row["method"]] = Score(
                    method=row["method"],
                    value=row["value"],
                    model=row["model"],
                    model_version=row["model_version"],
                    details=dict(row["details"] or {}),
                )
        return dict(out)

    def fresh(self, method: str, model_version: int | None) -> dict[str, str]:
        """image id -> image sha256 of scores of ``method`` already made by ``model_version``."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(scores.c.image_id, scores.c.image_sha256).where(
                    scores.c.method == method, scores.c.model_version == model_version
                )
            ).all()
        return {r.image_id: r.image_sha256 for r in rows}
