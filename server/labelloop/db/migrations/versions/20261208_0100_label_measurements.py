"""Each label version's measurements (volumes, components, centroids, boxes), taken at save time;
versions saved before keep NULL.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 01:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Expand only: a nullable column, so servers of the previous release keep writing rows.
    op.add_column("label_versions", sa.Column("measurements", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("label_versions") as batch:
        batch.drop_column("measurements")
