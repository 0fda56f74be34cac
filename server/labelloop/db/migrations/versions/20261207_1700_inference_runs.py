"""The last inference each annotator ran on an image, per model (the provenance of their next save).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 17:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inference_runs",
        sa.Column("image_id", sa.String(length=128), nullable=False),
        sa.Column("holder", sa.String(length=256), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=op.f("fk_inference_runs_image_id_images")),
        sa.PrimaryKeyConstraint("image_id", "holder", "model", name=op.f("pk_inference_runs")),
    )


def downgrade() -> None:
    op.drop_table("inference_runs")
