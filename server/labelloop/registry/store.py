"""Model versions: weights files under the data directory, their metrics, and which one is active."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, desc, func, insert, select, update

from labelloop.datastore import BlobStore, validate_id
from labelloop.db import Database
from labelloop.errors import ModelNotFoundError
from labelloop.registry.models import model_versions

__all__ = ["ModelVersion", "Registry", "active_versions_in", "model_lock"]

# Built once: read on every /info/ and inference (the model bound per call).
_ACTIVE = select(model_versions).where(
    model_versions.c.model == bindparam("model"), model_versions.c.active.is_(True)
)

logger = logging.getLogger(__name__)


def model_lock(model: str) -> str:
    """The name (``Database.lock``) that serialises changes of ``model``'s active version: a writer that
    must see the active version stay put until it commits (a score of that version) takes it too."""
    return f"model:{model}"


def active_versions_in(conn: Connection, models: Iterable[str] | None = None) -> dict[str, int | None]:
    """Every model the registry has versions of (or only ``models``), with its active version:
    ``None`` when none is active (retired, or never promoted). A model missing from the answer has no
    version at all (an untrained model, or one that takes no weights from the registry)."""
    query = select(model_versions.c.model, model_versions.c.version, model_versions.c.active)
    if models is not None:
        query = query.where(model_versions.c.model.in_(list(models)))
    out: dict[str, int | None] = {}
    for model, version, active in conn.execute(query):
        if active:
            out[model] = int(version)
        else:
            out.setdefault(model, None)
    return out


@dataclass(frozen=True)
class ModelVersion:
    """One published set of weights of a model.

    Attributes:
        path: the weights file (a PyTorch ``state_dict`` or checkpoint), never rewritten.
        metrics: validation metrics, e.g. ``{"val_mean_dice": 0.81}``.
        training_set: ``[{"image", "version", "sha256"}, ...]``: the label versions trained on.
        train_stats: MONAI Label-style training statistics (``/info/`` ``train_stats``).
    """

    model: str
    version: int
    path: Path
    sha256: str
    size_bytes: int
    source: str
    created_by: str
    created_at: float
    metrics: dict[str, Any]
    params: dict[str, Any]
    training_set: list[dict[str, Any]]
    train_stats: dict[str, Any]
    duration_s: float | None
    active: bool
    activated_at: float | None
    retired_at: float | None = None

    @property
    def checksum(self) -> str:
        return f"SHA256:{self.sha256}"


class Registry:
    """Publish, list, activate and retire model versions (SQLite or PostgreSQL plus blob files)."""

    def __init__(self, db: Database, blobs: BlobStore, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._blobs = blobs
        self._clock = clock

    def _record(self, row: RowMapping) -> ModelVersion:
        return ModelVersion(
            model=row["model"],
            version=int(row["version"]),
            path=self._blobs.path(row["location"]),
            sha256=row["sha256"],
            size_bytes=int(row["size_bytes"]),
            source=row["source"],
            created_by=row["created_by"],
            created_at=float(row["created_at"]),
            metrics=dict(row["metrics"] or {}),
            params=dict(row["params"] or {}),
            training_set=list(row["training_set"] or []),
            train_stats=dict(row["train_stats"] or {}),
            duration_s=row["duration_s"],
            active=bool(row["active"]),
            activated_at=row["activated_at"],
            retired_at=row["deleted_at"],
        )

    def publish(
        self,
        model: str,
        weights: Path,
        *,
        source: str,
        user: str,
        activate: bool,
        metrics: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        training_set: list[dict[str, Any]] | None = None,
        train_stats: dict[str, Any] | None = None,
        duration_s: float | None = None,
        in_transaction: Callable[[Connection, ModelVersion], object] | None = None,
    ) -> ModelVersion:
        """Store ``weights`` as the model's next version; the row is committed only after the file exists.

        ``in_transaction`` runs in the transaction that inserts the version (queueing rescoring for
        an activated version, say), so its writes commit with the version or not at all.
        """
        validate_id(model, "model name")
        key = self._blobs.new_key("models", f"{model}.pt")
        sha256, size = self._blobs.put(key, weights)
        try:
            with self._db.write() as conn:
                self._db.lock(conn, model_lock(model))
                latest = conn.execute(
                    select(func.max(model_versions.c.version)).where(model_versions.c.model == model)
                ).scalar_one_or_none()
                version = int(latest or 0) + 1
                now = self._clock()
                if activate:
                    self._deactivate(conn, model)
                conn.execute(
                    insert(model_versions).values(
                        model=model,
                        version=version,
                        location=key,
                        sha256=sha256,
                        size_bytes=size,
                        source=source,
                        created_by=user,
                        created_at=now,
                        metrics=metrics or {},
                        params=params or {},
                        training_set=training_set or [],
                        train_stats=train_stats or {},
                        duration_s=duration_s,
                        active=activate,
                        activated_at=now if activate else None,
                    )
                )
                record = self._get_in(conn, model, version)
                if in_transaction is not None:
                    in_transaction(conn, record)
        except BaseException:
            self._blobs.delete(key)
            raise
        logger.info(
            "model %s version %d published (%s)%s", model, version, source, " and activated" * activate
        )
        return record

    @staticmethod
    def _deactivate(conn: Connection, model: str) -> None:
        conn.execute(
            update(model_versions)
            .where(model_versions.c.model == model, model_versions.c.active.is_(True))
            .values(active=False)
        )

    def _get_in(self, conn: Connection, model: str, version: int, *, retired: bool = False) -> ModelVersion:
        """A live version (with ``retired``: a retired one too)."""
        query = select(model_versions).where(
            model_versions.c.model == model, model_versions.c.version == version
        )
        if not retired:
            query = query.where(model_versions.c.deleted_at.is_(None))
        row = conn.execute(query).mappings().first()
        if row is None:
            raise ModelNotFoundError(f"Model '{model}' has no version {version}")
        return self._record(row)

    def get(self, model: str, version: int) -> ModelVersion:
        with self._db.read() as conn:
            return self._get_in(conn, model, version)

    def active(self, model: str) -> ModelVersion | None:
        """The version inference uses, or ``None`` if the model has none (untrained)."""
        with self._db.read() as conn:
            row = conn.execute(_ACTIVE, {"model": model}).mappings().first()
        return self._record(row) if row is not None else None

    def versions(self, model: str) -> list[ModelVersion]:
        """Every version of ``model`` (retired ones too, with ``retired_at``), newest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(model_versions)
                .where(model_versions.c.model == model)
                .order_by(desc(model_versions.c.version))
            ).mappings()
            return [self._record(r) for r in rows]

    def activate(
        self,
        model: str,
        version: int,
        *,
        in_transaction: Callable[[Connection, ModelVersion], object] | None = None,
    ) -> ModelVersion:
        """Make ``version`` the one inference uses (promotion or rollback); ``in_transaction`` as in
        ``publish``."""
        with self._db.write() as conn:
            self._db.lock(conn, model_lock(model))
            self._get_in(conn, model, version, retired=True)  # a retired version may come back
            self._deactivate(conn, model)
            conn.execute(
                update(model_versions)
                .where(model_versions.c.model == model, model_versions.c.version == version)
                .values(active=True, activated_at=self._clock(), deleted_at=None)
            )
            record = self._get_in(conn, model, version)
            if in_transaction is not None:
                in_transaction(conn, record)
        logger.info("model %s version %d activated", model, version)
        return record

    def retire_active(self, model: str) -> ModelVersion | None:
        """Take the active version out of service; it stays in the history and can be activated again.

        Returns the version as retired (``active`` false, ``retired_at`` set), or ``None`` if the model
        had no active version."""
        with self._db.write() as conn:
            self._db.lock(conn, model_lock(model))
            row = (
                conn.execute(
                    select(model_versions).where(
                        model_versions.c.model == model, model_versions.c.active.is_(True)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            conn.execute(
                update(model_versions)
                .where(model_versions.c.id == row["id"])
                .values(active=False, deleted_at=self._clock())
            )
            return self._get_in(conn, model, int(row["version"]), retired=True)
