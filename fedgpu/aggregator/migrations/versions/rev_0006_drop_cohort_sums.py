"""Closed rounds' cohort sums are files in the spool now (fedgpu.aggregator.released): their table goes.

A database upgraded while a round was ready but not yet published loses that round's sums with it; the
driver's fetch then fails with a storage error and the round is redone, as after any lost sum.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("cohort_sums")


def downgrade() -> None:
    op.create_table(
        "cohort_sums",
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("cohort", sa.Integer, primary_key=True),
        sa.Column("chunk", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
