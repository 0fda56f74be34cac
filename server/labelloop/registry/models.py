"""The registry's table: model versions.

Changes here need an Alembic migration (``labelloop.db``). Times are float epoch seconds (UTC).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from labelloop.db import ID, metadata

__all__ = ["model_versions"]

# Model versions: weights files with their metrics and the training set they came from.
# At most one version per model is active (the one inference uses).
model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", ID, nullable=False),
    Column("version", Integer, nullable=False),
    Column("location", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("source", String(16), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("params", JSON, nullable=False),
    Column("training_set", JSON, nullable=False),
    Column("train_stats", JSON, nullable=False),
    Column("duration_s", Float, nullable=True),
    Column("active", Boolean, nullable=False),
    Column("activated_at", Float, nullable=True),
    Column("deleted_at", Float, nullable=True),
    UniqueConstraint("model", "version", name="uq_model_versions_model_version"),
    CheckConstraint("version >= 1", name="version"),
    CheckConstraint("source IN ('upload', 'train', 'import')", name="source"),
    CheckConstraint("NOT (active AND deleted_at IS NOT NULL)", name="active_not_deleted"),
)
Index(
    "uq_model_versions_one_active",
    model_versions.c.model,
    unique=True,
    sqlite_where=model_versions.c.active,
    postgresql_where=model_versions.c.active,
)
