"""Jobs carry the fencing token of the claim they run under, so a job declared lost cannot publish.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 16:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Expand only: jobs running at the upgrade have no token; the reaper ends them as before.
    op.add_column("jobs", sa.Column("claim_token", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("claim_token")
