"""Sessions record who made them (the logged-in user; '' for sessions made before).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 12:30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "sessions", sa.Column("created_by", sa.String(length=128), nullable=False, server_default="")
    )


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("created_by")
