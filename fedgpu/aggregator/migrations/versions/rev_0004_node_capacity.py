"""Measured capacity: per node, sums over its completed tasks on the aggregator's clocks (fedgpu.aggregator.capacity)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_capacity",
        sa.Column("node_id", sa.String(32), primary_key=True),
        sa.Column("tasks", sa.Integer, nullable=False),
        sa.Column("misses", sa.Integer, nullable=False),
        sa.Column("samples", sa.BigInteger, nullable=False),
        sa.Column("compute_seconds", sa.Float, nullable=False),
        sa.Column("turnaround_seconds", sa.Float, nullable=False),
        sa.Column("bytes_up", sa.BigInteger, nullable=False),
        sa.Column("upload_seconds", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("node_capacity")
