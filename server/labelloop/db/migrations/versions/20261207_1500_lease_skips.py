"""An annotator may skip a leased image: leases end as 'skipped', with the reason they gave.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BEFORE = "end_reason IN ('saved', 'released', 'expired', 'deleted')"
_AFTER = "end_reason IN ('saved', 'released', 'expired', 'deleted', 'skipped')"


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("note", sa.String(length=1024), nullable=True))
        batch.drop_constraint(op.f("ck_leases_end_reason"), type_="check")
        batch.create_check_constraint(op.f("ck_leases_end_reason"), _AFTER)


def downgrade() -> None:
    op.execute("UPDATE leases SET end_reason = 'released' WHERE end_reason = 'skipped'")
    with op.batch_alter_table("leases") as batch:
        batch.drop_constraint(op.f("ck_leases_end_reason"), type_="check")
        batch.create_check_constraint(op.f("ck_leases_end_reason"), _BEFORE)
        batch.drop_column("note")
