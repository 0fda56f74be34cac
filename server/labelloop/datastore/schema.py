"""The catalogue's tables (SQLAlchemy Core). Changes here need an Alembic migration.

Times are float epoch seconds (UTC); JSON columns hold client-visible info dicts.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "metadata",
    "images",
    "labels",
    "label_versions",
    "sessions",
    "model_versions",
    "jobs",
    "workers",
    "leases",
    "scores",
    "counters",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(128)

images = Table(
    "images",
    metadata,
    Column("id", ID, primary_key=True),
    # Absolute path for a file registered in place, else a key relative to the data dir.
    Column("location", Text, nullable=False),
    Column("owned", Boolean, nullable=False),
    Column("name", String(160), nullable=False),
    Column("ext", String(16), nullable=False),
    Column("format", String(16), nullable=False),
    Column("geometry", JSON, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=True),
    Column("info", JSON, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("deleted_at", Float, nullable=True),
    Column("deleted_reason", String(32), nullable=True),
    CheckConstraint("format IN ('nifti', 'nrrd', 'dicom')", name="format"),
    CheckConstraint("(deleted_at IS NULL) = (deleted_reason IS NULL)", name="deleted"),
)
Index(
    "ix_images_live",
    images.c.id,
    sqlite_where=images.c.deleted_at.is_(None),
    postgresql_where=images.c.deleted_at.is_(None),
)
Index("ix_images_location", images.c.location)

# The head of each (image, tag): which version is the latest.
labels = Table(
    "labels",
    metadata,
    Column("image_id", ID, ForeignKey("images.id"), primary_key=True),
    Column("tag", ID, primary_key=True),
    Column("head_version", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("deleted_at", Float, nullable=True),
    CheckConstraint("head_version >= 0", name="head_version"),
)
Index(
    "ix_labels_live_tag",
    labels.c.tag,
    sqlite_where=labels.c.deleted_at.is_(None),
    postgresql_where=labels.c.deleted_at.is_(None),
)

# Immutable label versions: file, checksum and provenance never change; ``info`` collects
# later annotations (review status, scores) made through the label-info endpoints.
label_versions = Table(
    "label_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("image_id", ID, nullable=False),
    Column("tag", ID, nullable=False),
    Column("version", Integer, nullable=False),
    Column("location", Text, nullable=False),
    Column("name", String(160), nullable=False),
    Column("ext", String(16), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("image_sha256", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("info", JSON, nullable=False),
    Column("author", String(128), nullable=False),
    Column("client_id", String(256), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("parent_version", Integer, nullable=True),
    Column("model", String(128), nullable=True),
    Column("model_version", Integer, nullable=True),
    Column("source", String(16), nullable=False),
    UniqueConstraint("image_id", "tag", "version", name="uq_label_versions_image_tag_version"),
    ForeignKeyConstraint(
        ["image_id", "tag"], ["labels.image_id", "labels.tag"], name="fk_label_versions_labels"
    ),
    CheckConstraint("version >= 1", name="version"),
    CheckConstraint("source IN ('upload', 'import', 'infer')", name="source"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("image_name", String(255), nullable=False),
    Column("meta", JSON, nullable=False),
    Column("client_id", String(256), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("last_access_at", Float, nullable=False),
    Column("expiry_s", Integer, nullable=False),
    CheckConstraint("expiry_s > 0", name="expiry"),
)
Index("ix_sessions_expires", sessions.c.last_access_at)

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

# Worker processes that claim jobs; a stale heartbeat means the worker died.
workers = Table(
    "workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("stopped_at", Float, nullable=True),
)

# Durable jobs: train, scoring, batch inference. MONAI Label's task objects are views of these rows.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(128), nullable=False),
    Column("request", JSON, nullable=False),
    Column("config", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("progress", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("result", JSON, nullable=True),
    Column("log_tail", JSON, nullable=False),
    Column("error", Text, nullable=True),
    Column("worker_id", String(64), ForeignKey("workers.id"), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("heartbeat_at", Float, nullable=True),
    Column("cancel_requested", Boolean, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("resume_from", String(64), nullable=True),
    CheckConstraint("kind IN ('train', 'scoring', 'batch_infer')", name="kind"),
    CheckConstraint("status IN ('SUBMITTED', 'RUNNING', 'DONE', 'ERROR', 'STOPPED')", name="status"),
    CheckConstraint(
        "(status IN ('SUBMITTED', 'RUNNING')) = (finished_at IS NULL)", name="finished_when_final"
    ),
)
Index("ix_jobs_queue", jobs.c.status, jobs.c.priority, jobs.c.created_at)
Index("ix_jobs_kind_created", jobs.c.kind, jobs.c.created_at)

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
    CheckConstraint("(ended_at IS NULL) = (end_reason IS NULL)", name="ended"),
    CheckConstraint("end_reason IN ('saved', 'released', 'expired', 'deleted')", name="end_reason"),
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

# Running totals kept in the same transactions as the rows they count, so stats cost the
# same with 100 or 100,000 images: "images" (live images) and "labels:<tag>" (live labels).
counters = Table(
    "counters",
    metadata,
    Column("name", String(160), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
