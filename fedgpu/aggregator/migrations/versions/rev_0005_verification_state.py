"""Verification state of public-data jobs: open replica disputes and flagged nodes survive a restart."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replica_disputes",
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("members", sa.Text, nullable=False),
        sa.Column("prefer", sa.Text, nullable=False),
    )
    op.create_table(
        "flagged_nodes",
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("node_id", sa.String(32), primary_key=True),
        sa.Column("round", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("flagged_nodes")
    op.drop_table("replica_disputes")
