"""The datastore's tables: images, labels (the head of each tag), label versions, sessions, counters.

Changes here need an Alembic migration (``labelloop.db``). Times are float epoch seconds (UTC); JSON
columns hold client-visible info dicts.
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
    String,
    Table,
    Text,
    UniqueConstraint,
)

from labelloop.db import ID, metadata

__all__ = [
    "counters",
    "images",
    "inference_runs",
    "label_versions",
    "labels",
    "pacs_segs",
    "pacs_skipped_series",
    "sessions",
]

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
    # Each label's volume, components, centroid and box as measured at save time
    # (``LabelMeasurements.to_json`` plus ``lesion`` flags); NULL for versions saved before 0013.
    Column("measurements", JSON, nullable=True),
    UniqueConstraint("image_id", "tag", "version", name="uq_label_versions_image_tag_version"),
    ForeignKeyConstraint(
        ["image_id", "tag"], ["labels.image_id", "labels.tag"], name="fk_label_versions_labels"
    ),
    CheckConstraint("version >= 1", name="version"),
    CheckConstraint("source IN ('upload', 'import', 'infer')", name="source"),
)
# The label history, newest first (every image's, or one author's or client's), and the saves
# since a time that automatic training counts.
Index("ix_label_versions_created", label_versions.c.created_at, label_versions.c.id)
Index("ix_label_versions_author", label_versions.c.author, label_versions.c.created_at)
Index("ix_label_versions_client", label_versions.c.client_id, label_versions.c.created_at)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("image_name", String(255), nullable=False),
    Column("meta", JSON, nullable=False),
    Column("client_id", String(256), nullable=True),
    Column("created_by", String(128), nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Column("last_access_at", Float, nullable=False),
    Column("expiry_s", Integer, nullable=False),
    CheckConstraint("expiry_s > 0", name="expiry"),
)
Index("ix_sessions_expires", sessions.c.last_access_at)

# Running totals kept in the same transactions as the rows they count, so stats cost the
# same with 100 or 100,000 images: "images" (live images) and "labels:<tag>" (live labels).
counters = Table(
    "counters",
    metadata,
    Column("name", String(160), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# The last inference each holder (annotator) ran on an image, per model: what a label they save
# next started from, when their client does not say (the MONAI Label client never does).
inference_runs = Table(
    "inference_runs",
    metadata,
    Column("image_id", ID, ForeignKey("images.id"), primary_key=True),
    Column("holder", String(256), primary_key=True),
    Column("model", String(128), primary_key=True),
    Column("model_version", Integer, nullable=True),
    Column("created_at", Float, nullable=False),
)


#: DICOM SEGs exchanged with the PACS. ``direction`` ``out``: a final label written back, an
#: outbox row committed with its label version (``state`` pending -> stored, or failed when the
#: PACS refuses it; ``seg_key`` holds the SEG's bytes until stored). ``in``: a SEG found in the
#: PACS (``state`` imported, with the version it became, or skipped, with the reason), so no SEG
#: instance is read twice.
pacs_segs = Table(
    "pacs_segs",
    metadata,
    Column("sop_instance_uid", String(128), primary_key=True),
    Column("series_uid", String(128), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("state", String(16), nullable=False),
    Column("image_id", ID, nullable=True),
    Column("tag", String(64), nullable=True),
    Column("version", Integer, nullable=True),
    Column("seg_key", String(512), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reason", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=True),
    Column("claimed_until", Float, nullable=True),
    Index("ix_pacs_segs_due", "state", "next_attempt_at"),
    Index("ix_pacs_segs_series", "series_uid"),
)

#: Image series of the PACS that cannot be used (uneven slices, no geometry...), with the number
#: of instances they had: not fetched again until that number changes.
pacs_skipped_series = Table(
    "pacs_skipped_series",
    metadata,
    Column("series_uid", String(128), primary_key=True),
    Column("study_uid", String(128), nullable=False),
    Column("instances", Integer, nullable=True),
    Column("reason", Text, nullable=False),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)
