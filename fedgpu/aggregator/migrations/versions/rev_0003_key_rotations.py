"""Key rotation: each retired node id, the id its key was rotated to, and the chain's first id (its
operator, under which the ledger's balances are shown)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_rotations",
        sa.Column("node_id", sa.String(32), primary_key=True),
        sa.Column("successor_id", sa.String(32), nullable=False, unique=True),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("rotated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_rotations")
