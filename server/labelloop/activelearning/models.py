"""Active learning's tables: leases (who annotates which image) and per-image scores.

Changes here need an Alembic migration (``labelloop.db``). Times are float epoch seconds (UTC).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
)

from labelloop.db import ID, metadata

__all__ = ["leases", "scores"]

# Leases: which annotator works on which image, until when. An image is handed to at most
# ``reads`` annotators at once (1 unless double reading is configured).
leases = Table(
    "leases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("image_id", ID, ForeignKey("images.id"), nullable=False),
    Column("holder", String(256), nullable=False),
    Column("strategy", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("end_reason", String(16), nullable=True),
    #: What the holder said when they skipped the image (``end_reason = 'skipped'``).
    Column("note", String(1024), nullable=True),
    CheckConstraint("(ended_at IS NULL) = (end_reason IS NULL)", name="ended"),
    CheckConstraint(
        "end_reason IN ('saved', 'released', 'expired', 'deleted', 'skipped')", name="end_reason"
    ),
)
Index(
    "uq_leases_open_per_holder",
    leases.c.image_id,
    leases.c.holder,
    unique=True,
    sqlite_where=leases.c.ended_at.is_(None),
    postgresql_where=leases.c.ended_at.is_(None),
)
Index(
    "ix_leases_open",
    leases.c.image_id,
    sqlite_where=leases.c.ended_at.is_(None),
    postgresql_where=leases.c.ended_at.is_(None),
)

# Per-image scores of a scoring method, with the model version and image content they came from.
scores = Table(
    "scores",
    metadata,
    Column("image_id", ID, ForeignKey("images.id"), primary_key=True),
    Column("method", String(128), primary_key=True),
    Column("model", String(128), nullable=False),
    Column("model_version", Integer, nullable=True),
    Column("image_sha256", String(64), nullable=False),
    Column("value", Float, nullable=True),
    Column("details", JSON, nullable=False),
    Column("computed_at", Float, nullable=False),
)
