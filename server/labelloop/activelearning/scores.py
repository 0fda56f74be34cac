"""Stored per-image scores, with the model version and image content that produced them."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, insert, select

from labelloop.activelearning.models import scores
from labelloop.db import Database
from labelloop.tasks import Score

__all__ = ["ScoreStore"]


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
    ) -> None:
        with self._db.write() as conn:
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

    def all(self) -> dict[str, dict[str, Score]]:
        """image id -> method -> ``Score``."""
        out: dict[str, dict[str, Score]] = defaultdict(dict)
        with self._db.read() as conn:
            for row in conn.execute(select(scores)).mappings():
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
