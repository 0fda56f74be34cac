"""Indexes for the label history across images (newest first, by author, by client) and the saves
since a time that automatic training counts.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 18:00
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_label_versions_created", "label_versions", ["created_at", "id"])
    op.create_index("ix_label_versions_author", "label_versions", ["author", "created_at"])
    op.create_index("ix_label_versions_client", "label_versions", ["client_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_label_versions_client", table_name="label_versions")
    op.drop_index("ix_label_versions_author", table_name="label_versions")
    op.drop_index("ix_label_versions_created", table_name="label_versions")
