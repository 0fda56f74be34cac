"""Counters: live images and live labels per tag, kept by the writers; backfilled here.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 20:39
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("name", sa.String(length=160), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_counters")),
    )
    # Data step: count what exists (live images, live label heads of live images, per tag).
    op.execute(
        "INSERT INTO counters (name, value) SELECT 'images', COUNT(*) FROM images WHERE deleted_at IS NULL"
    )
    op.execute(
        "INSERT INTO counters (name, value) "
        "SELECT 'labels:' || labels.tag, COUNT(*) FROM labels JOIN images ON images.id = labels.image_id "
        "WHERE labels.deleted_at IS NULL AND labels.head_version > 0 AND images.deleted_at IS NULL "
        "GROUP BY labels.tag"
    )


def downgrade() -> None:
    op.drop_table("counters")
