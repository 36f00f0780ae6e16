"""The index behind a node's receipts: its ledger rows after the last id it holds (fedgpu 2026-12-01).

``IF NOT EXISTS``: databases made by ``create_all`` between that release and migrations have it already.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ledger_by_node", "reward_ledger", ["node_id", "id"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ledger_by_node", table_name="reward_ledger")
