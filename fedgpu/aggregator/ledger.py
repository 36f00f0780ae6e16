"""The reward ledger as the aggregator writes it: its signing key, and a round's rows checked and chained.

The rules of the chain (row hashes, signed heads, receipts) live in :mod:`fedgpu.rewards.chain`; this
module only decides what the driver may claim for a round and where the rows go in the chain.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedgpu.aggregator.store import Store
from fedgpu.errors import ProtocolError, StorageError
from fedgpu.rewards.chain import GENESIS, LedgerEntry, LedgerRow, Receipt, build_rows, public_key_bytes, sign_head
from fedgpu.wire.records import JobSpec, LedgerReceipt, RoundRecord, RoundResult


def load_signing_key(store: Store) -> Ed25519PrivateKey:
    """The aggregator's Ed25519 key that signs ledger heads; created once, kept in the database."""
    pem = store.get_meta("signing_key")
    if pem is None:
        key = Ed25519PrivateKey.generate()
        store.set_meta("signing_key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return key
    loaded = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise StorageError("the database's signing key is not Ed25519")
    key = loaded
    return key


def round_rows(
    store: Store, key: Ed25519PrivateKey, spec: JobSpec, job_id: str, rnd: int, record: RoundRecord, result: RoundResult
) -> tuple[list[LedgerRow], dict[str, Any] | None]:
    """Check the driver's rewards against the round and chain them after the ledger's head."""
    if not result.rewards and not result.node_values:
        return [], None
    participants = set(record.participants)
    released = set(result.released) - participants
    if released:  # paid at the job's end to nodes that took part earlier: held pay, the unearned pool settled
        if rnd != spec.rounds:
            raise ProtocolError(f"only a job's last round may pay nodes outside it; round {rnd} of {spec.rounds} names {sorted(released)[:3]}")
        earlier = {m for r in store.rounds_of(job_id) if r["round"] < rnd for m in r["record"].participants}
        if not released <= earlier:
            raise ProtocolError(f"released names nodes that took part in no earlier round of job {job_id}: {sorted(released - earlier)[:3]}")
    unknown = (set(result.rewards) | set(result.node_values)) - participants - released
    if unknown:
        raise ProtocolError(f"rewards name nodes that were not in round {rnd}: {sorted(unknown)[:3]}")
    values = list(result.rewards.values()) + list(result.node_values.values())
    if not all(math.isfinite(v) for v in values) or any(v < 0 for v in result.rewards.values()):
        raise ProtocolError("rewards must be finite and >= 0, node values finite")
    # A round's pool that nobody earned carries over, so the bound is on the job: never more than the
    # pools of the rounds so far.
    paid = store.paid(job_id)
    this = math.fsum(result.rewards.values())
    if paid + this > spec.reward_pool * rnd * (1 + 1e-9) + 1e-9:
        raise ProtocolError(f"rewards sum to {this:.6g} this round and {paid:.6g} before, more than {rnd} rounds' pools of {spec.reward_pool}")
    cohort_of = {m: tuple(c) for c in record.cohorts for m in c}
    evidence = hashlib.sha256(result.evidence).hexdigest()
    entries = [
        LedgerEntry(job_id, rnd, node, result.node_values.get(node, 0.0), result.rewards.get(node, 0.0), cohort_of.get(node, ()), evidence)
        for node in sorted(participants | released)  # a released node was in no cohort of this round
    ]
    rows = build_rows(store.ledger_head() or GENESIS, entries)
    head_hash = rows[-1].entry_hash
    sig = sign_head(key, job_id, rnd, head_hash).hex()
    return rows, {"job_id": job_id, "round": rnd, "head_hash": head_hash, "signature": sig, "evidence": result.evidence.decode("utf-8", "replace")}


def receipts(store: Store, key: Ed25519PrivateKey, node_id: str | list[str], after: int) -> list[LedgerReceipt]:
    """The node's receipts after the last one it holds (``after``), from the ledger itself (``node_id``:
    a list for a node that rotated its key: the rows of its earlier ids reach it too)."""
    aggregator_key = public_key_bytes(key).hex()
    return [
        LedgerReceipt(
            id=r["id"],
            receipt=Receipt(r["job_id"], r["round"], r["node_id"], r["reward"], r["entry_hash"], r["head_hash"], r["signature"], aggregator_key),
        )
        for r in store.receipts_for(node_id, min(after, 2**63 - 1))  # a uint64 on the wire, an int64 in SQL
    ]


__all__ = [
    "load_signing_key",
    "receipts",
    "round_rows",
]
