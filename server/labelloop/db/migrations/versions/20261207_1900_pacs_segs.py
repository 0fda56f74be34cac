"""DICOM SEGs exchanged with the PACS (a write-back outbox and a record of imports and skips) and
the PACS series that cannot be used.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 19:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pacs_segs",
        sa.Column("sop_instance_uid", sa.String(length=128), nullable=False),
        sa.Column("series_uid", sa.String(length=128), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("image_id", sa.String(length=128), nullable=True),
        sa.Column("tag", sa.String(length=64), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("seg_key", sa.String(length=512), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=True),
        sa.Column("claimed_until", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("sop_instance_uid", name=op.f("pk_pacs_segs")),
    )
    op.create_index("ix_pacs_segs_due", "pacs_segs", ["state", "next_attempt_at"])
    op.create_index("ix_pacs_segs_series", "pacs_segs", ["series_uid"])
    op.create_table(
        "pacs_skipped_series",
        sa.Column("series_uid", sa.String(length=128), nullable=False),
        sa.Column("study_uid", sa.String(length=128), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("series_uid", name=op.f("pk_pacs_skipped_series")),
    )


def downgrade() -> None:
    op.drop_table("pacs_skipped_series")
    op.drop_index("ix_pacs_segs_series", table_name="pacs_segs")
    op.drop_index("ix_pacs_segs_due", table_name="pacs_segs")
    op.drop_table("pacs_segs")
