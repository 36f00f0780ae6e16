"""The aggregator's schema: its tables as SQLAlchemy Core metadata.

This is what the Alembic revisions in ``migrations/versions/`` must build: a change to a table here
needs a new revision there (migrations/env.py says how), and tests/aggregator/test_store.py fails
until the two agree.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, LargeBinary, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

nodes = Table(
    "nodes",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("name", String(200), nullable=False),
    Column("capabilities", Text, nullable=False),
    Column("registered_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)

# A node's identity key replaced by a new one (RotateKey): the retired id, its successor, and the first id
# of the chain (the operator), under which balances are shown. The retired id's row in ``nodes`` stays.
key_rotations = Table(
    "key_rotations",
    metadata,
    Column("node_id", String(32), primary_key=True),
    Column("successor_id", String(32), nullable=False, unique=True),
    Column("operator_id", String(32), nullable=False),
    Column("rotated_at", Float, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("spec", LargeBinary, nullable=False),  # serialized fedgpu.v1.JobSpec (protobuf, not pickle)
    Column("token_hash", String(64), nullable=False),
    Column("state", String(20), nullable=False),  # waiting_model | running | done | failed | cancelled
    Column("round", Integer, nullable=False),  # last round opened (0 before the first)
    Column("model_version", Integer, nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("job_id", String(40), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),  # safetensors bytes
    Column("sha256", String(64), nullable=False),
)

rounds = Table(
    "rounds",
    metadata,
    Column("job_id", String(40), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("state", String(20), nullable=False),  # ready | done
    Column("attempts", Integer, nullable=False),
    Column("record", Text, nullable=False),  # RoundRecord as JSON: participants, cohorts, node status, bytes, seconds
    Column("result", Text, nullable=False, default="{}"),  # JSON: accuracy, loss, cohort values
    Column("closed_at", Float, nullable=False),
)

declines = Table(
    "declines",
    metadata,
    Column("job_id", String(40), primary_key=True),
    Column("node_id", String(32), primary_key=True),
    Column("reason", String(40), nullable=False),
    Column("message", Text, nullable=False),
)

ledger = Table(
    "reward_ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(40), nullable=False),
    Column("round", Integer, nullable=False),
    Column("node_id", String(32), nullable=False),
    Column("value", Float, nullable=False),
    Column("reward", Float, nullable=False),
    Column("cohort", Text, nullable=False),
    Column("evidence_digest", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    UniqueConstraint("job_id", "round", "node_id", name="one_payment_per_node_and_round"),
)
Index("ledger_by_node", ledger.c.node_id, ledger.c.id)  # a node's receipts after the last it holds

ledger_heads = Table(
    "ledger_heads",
    metadata,
    Column("job_id", String(40), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("head_hash", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("evidence", Text, nullable=False),  # per-subset utilities, so anyone can recompute values
)

# A node's measured capacity (fedgpu.aggregator.capacity): sums over its completed tasks, on the aggregator's clocks.
node_capacity = Table(
    "node_capacity",
    metadata,
    Column("node_id", String(32), primary_key=True),
    Column("tasks", Integer, nullable=False),
    Column("misses", Integer, nullable=False),
    Column("samples", BigInteger, nullable=False),
    Column("compute_seconds", Float, nullable=False),
    Column("turnaround_seconds", Float, nullable=False),
    Column("bytes_up", BigInteger, nullable=False),
    Column("upload_seconds", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Public-data jobs (docs/verification.md): the disputes the driver published with the job's latest round,
# each re-run by a third node in the next round (replaced at every publish, in its transaction), and every
# node the driver flagged, offered none of the job's tasks. In the database, so a restart resumes both.
replica_disputes = Table(
    "replica_disputes",
    metadata,
    Column("job_id", String(40), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("seed", BigInteger, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("members", Text, nullable=False),  # JSON list: the two node ids that disagreed
    Column("prefer", Text, nullable=False),  # JSON list: verified nodes the third should be drawn from
)

flagged_nodes = Table(
    "flagged_nodes",
    metadata,
    Column("job_id", String(40), primary_key=True),
    Column("node_id", String(32), primary_key=True),
    Column("round", Integer, nullable=False),  # the round whose publish first named it
)

meta_kv = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)


__all__ = [
    "declines",
    "flagged_nodes",
    "jobs",
    "key_rotations",
    "ledger",
    "ledger_heads",
    "meta_kv",
    "metadata",
    "models",
    "node_capacity",
    "nodes",
    "replica_disputes",
    "rounds",
]
