"""The jobs' tables: durable jobs and the worker processes that claim them.

Changes here need an Alembic migration (``labelloop.db``). Times are float epoch seconds (UTC).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from labelloop.db import metadata

__all__ = ["jobs", "workers"]

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
    # The fencing token of the claim the job runs under (new at each claim, cleared when the reaper
    # declares the job lost): its worker's and its process's writes all check it.
    Column("claim_token", String(32), nullable=True),
    CheckConstraint("kind IN ('train', 'scoring', 'batch_infer')", name="kind"),
    CheckConstraint("status IN ('SUBMITTED', 'RUNNING', 'DONE', 'ERROR', 'STOPPED')", name="status"),
    CheckConstraint(
        "(status IN ('SUBMITTED', 'RUNNING')) = (finished_at IS NULL)", name="finished_when_final"
    ),
)
Index("ix_jobs_queue", jobs.c.status, jobs.c.priority, jobs.c.created_at)
Index("ix_jobs_kind_created", jobs.c.kind, jobs.c.created_at)
