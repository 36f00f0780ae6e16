"""The reward ledger's rules: a hash chain of rows, a signed head per round, and node receipts.

Pure functions only; the aggregator's store writes the rows. Each row commits to the one before it
(``entry_hash = SHA-256(prev_hash || canonical JSON of the row)``), so changing, dropping or
reordering any past row breaks every later hash. Each round the aggregator signs the head with its
Ed25519 key and gives every paid node a :class:`Receipt`; a node holding a receipt can prove that a
later ledger omitted or rewrote its payment. (Upgrade path: a Merkle log with inclusion proofs, as in
Certificate Transparency.) :func:`verify_ledger` re-checks a whole stored ledger, rows and heads,
from plain data: whoever holds the store reads it, this module judges it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fedgpu.errors import ProtocolError, RewardsError

GENESIS = "0" * 64
HEAD_PURPOSE = "fedgpu.ledger.head.v1"  # domain separation: a head signature can never pass for another message
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _plain(obj: Any) -> Any:
    """numpy scalars as Python numbers, so the JSON (and the hash) does not depend on where a number came from."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not allowed in a ledger row")


def canonical_json(fields: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, ASCII, floats as ``repr`` (shortest round-trip form), NaN refused."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=_plain).encode("ascii")


def digest(fields: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON, e.g. of a round's evidence (cohorts, subset utilities, seed)."""
    return hashlib.sha256(canonical_json(fields)).hexdigest()


def entry_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(fields)).hexdigest()


@dataclass(frozen=True)
class LedgerEntry:
    """What a round decides for one node, before it is chained."""

    job_id: str
    round: int
    node_id: str
    value: float
    reward: float
    cohort: tuple[str, ...]
    evidence_digest: str

    def fields(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "round": self.round,
            "node_id": self.node_id,
            "value": self.value,
            "reward": self.reward,
            "cohort": list(self.cohort),
            "evidence_digest": self.evidence_digest,
        }


@dataclass(frozen=True)
class LedgerRow(LedgerEntry):
    prev_hash: str
    entry_hash: str

    def to_record(self) -> dict[str, Any]:
        """Columns for the store: the cohort as canonical JSON text."""
        record = self.fields()
        record["cohort"] = json.dumps(list(self.cohort), separators=(",", ":"), ensure_ascii=True)
        record.update(prev_hash=self.prev_hash, entry_hash=self.entry_hash)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> LedgerRow:
        """Inverse of :meth:`to_record`; extra columns (the store's ``id``) are ignored."""
        cohort = record["cohort"]
        members = json.loads(cohort) if isinstance(cohort, str) else cohort
        return cls(
            job_id=str(record["job_id"]),
            round=int(record["round"]),
            node_id=str(record["node_id"]),
            value=float(record["value"]),
            reward=float(record["reward"]),
            cohort=tuple(str(m) for m in members),
            evidence_digest=str(record["evidence_digest"]),
            prev_hash=str(record["prev_hash"]),
            entry_hash=str(record["entry_hash"]),
        )


def _normalised(entry: LedgerEntry) -> LedgerEntry:
    """Coerce types once, so 1 and 1.0 or an np.int64 round cannot give two hashes for one payment."""
    if not _HEX64.fullmatch(entry.evidence_digest):
        raise RewardsError(f"evidence_digest must be 64 lowercase hex characters, got {entry.evidence_digest!r}")
    return LedgerEntry(
        job_id=str(entry.job_id),
        round=int(entry.round),
        node_id=str(entry.node_id),
        value=float(entry.value) + 0.0,  # + 0.0: -0.0 hashes as 0.0, which is what SQLite gives back
        reward=float(entry.reward) + 0.0,
        cohort=tuple(str(m) for m in entry.cohort),
        evidence_digest=entry.evidence_digest,
    )


def build_rows(prev_hash: str, entries: Iterable[LedgerEntry]) -> list[LedgerRow]:
    """Chain ``entries`` after ``prev_hash`` (``GENESIS`` for an empty ledger); the head is the last entry_hash."""
    if not _HEX64.fullmatch(prev_hash):
        raise RewardsError(f"prev_hash must be 64 lowercase hex characters, got {prev_hash!r}")
    rows: list[LedgerRow] = []
    for raw in entries:
        entry = _normalised(raw)
        h = entry_hash(prev_hash, entry.fields())
        rows.append(LedgerRow(**asdict(entry), prev_hash=prev_hash, entry_hash=h))
        prev_hash = h
    return rows


def head_of(rows: Sequence[LedgerRow], prev_hash: str = GENESIS) -> str:
    return rows[-1].entry_hash if rows else prev_hash


def verify_chain(rows: Sequence[LedgerRow], start_hash: str = GENESIS) -> int | None:
    """Index of the first row whose link or hash does not verify, or None when the chain is intact.

    ``start_hash`` is the hash the first row must link to: ``GENESIS`` for a whole ledger, or a
    trusted head (from a receipt) to check only what came after it.
    """
    expected = start_hash
    for i, row in enumerate(rows):
        try:
            recomputed = entry_hash(row.prev_hash, row.fields())
        except (TypeError, ValueError, UnicodeEncodeError):
            return i
        if row.prev_hash != expected or row.entry_hash != recomputed:
            return i
        expected = row.entry_hash
    return None


def verify_ledger(records: Sequence[Mapping[str, Any]], heads: Sequence[Mapping[str, Any]], public_key: bytes | None) -> tuple[bool, str]:
    """Re-check a whole stored ledger: every row's hash and link, and every round's signed head.

    ``records`` are the rows in chain order, as the store holds them (:meth:`LedgerRow.to_record`
    columns and the store's ``id``); ``heads`` the signed round heads (``job_id``, ``round``,
    ``head_hash``, ``signature`` in hex); ``public_key`` the aggregator's raw Ed25519 key, or None when
    there is none. Returns ``(ok, message)``; the message names the first thing that does not verify.
    """
    rows = [LedgerRow.from_record(r) for r in records]
    bad = verify_chain(rows)
    if bad is not None:
        r = records[bad]
        return False, f"row {r.get('id', bad)} (job {r['job_id']}, round {r['round']}, node {r['node_id']}) does not match its hash or its link to the previous row"
    if public_key is None:
        return (not rows), "no signing key in the database" if rows else "empty ledger"
    last_of: dict[tuple[str, int], str] = {}
    for row in rows:
        last_of[(row.job_id, row.round)] = row.entry_hash
    for h in heads:
        if last_of.get((h["job_id"], h["round"])) != h["head_hash"]:
            return False, f"head of job {h['job_id']} round {h['round']} does not match the last row of that round"
        try:
            signature = bytes.fromhex(h["signature"])
        except (TypeError, ValueError):
            signature = b""  # not hex: it cannot verify
        if not verify_head(public_key, h["job_id"], h["round"], h["head_hash"], signature):
            return False, f"signature of job {h['job_id']} round {h['round']} does not verify with key {public_key.hex()[:16]}..."
    missing = set(last_of) - {(h["job_id"], h["round"]) for h in heads}
    if missing:
        j, rnd = sorted(missing)[0]
        return False, f"job {j} round {rnd} has rows but no signed head"
    return True, f"ledger OK: {len(rows)} rows, {len(heads)} signed round heads, key {public_key.hex()[:16]}..."


def _head_message(job_id: str, round: int, head_hash: str) -> bytes:
    return canonical_json({"purpose": HEAD_PURPOSE, "job_id": str(job_id), "round": int(round), "head_hash": str(head_hash)})


def sign_head(private_key: Ed25519PrivateKey, job_id: str, round: int, head_hash: str) -> bytes:
    """The aggregator's Ed25519 signature over (job, round, head)."""
    return private_key.sign(_head_message(job_id, round, head_hash))


def verify_head(public_key_bytes: bytes, job_id: str, round: int, head_hash: str, signature: bytes) -> bool:
    """True only for a valid signature by the raw 32-byte Ed25519 key; malformed input is just False."""
    try:
        key = Ed25519PublicKey.from_public_bytes(public_key_bytes)
        key.verify(signature, _head_message(job_id, round, head_hash))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Receipt:
    """What a node keeps for each paid round: its entry, the signed head it was chained under."""

    job_id: str
    round: int
    node_id: str
    reward: float
    entry_hash: str
    head_hash: str
    signature: str  # hex of the Ed25519 signature over (job_id, round, head_hash)
    aggregator_key: str  # hex of the aggregator's raw Ed25519 public key

    def verify(self) -> bool:
        try:
            key, sig = bytes.fromhex(self.aggregator_key), bytes.fromhex(self.signature)
        except ValueError:
            return False
        return verify_head(key, self.job_id, self.round, self.head_hash, sig)

    def to_json(self) -> str:
        return canonical_json(asdict(self)).decode("ascii")

    @classmethod
    def from_json(cls, text: str | bytes) -> Receipt:
        """Parse a receipt from a peer; anything malformed is a ProtocolError, never a crash."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"receipt is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or set(data) != _RECEIPT_FIELDS:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ProtocolError(f"receipt needs exactly the fields {sorted(_RECEIPT_FIELDS)}, got {got}")
        for name in ("job_id", "node_id", "entry_hash", "head_hash", "signature", "aggregator_key"):
            if not isinstance(data[name], str):
                raise ProtocolError(f"receipt field {name!r} must be a string")
        if not isinstance(data["round"], int) or isinstance(data["round"], bool):
            raise ProtocolError("receipt field 'round' must be an integer")
        if not isinstance(data["reward"], (int, float)) or isinstance(data["reward"], bool):
            raise ProtocolError("receipt field 'reward' must be a number")
        return cls(**{**data, "reward": float(data["reward"])})


_RECEIPT_FIELDS = frozenset(Receipt.__dataclass_fields__)


def issue_receipt(private_key: Ed25519PrivateKey, row: LedgerRow, head_hash: str) -> Receipt:
    """Sign the round's head and wrap it with the node's entry."""
    return Receipt(
        job_id=row.job_id,
        round=row.round,
        node_id=row.node_id,
        reward=row.reward,
        entry_hash=row.entry_hash,
        head_hash=head_hash,
        signature=sign_head(private_key, row.job_id, row.round, head_hash).hex(),
        aggregator_key=public_key_bytes(private_key).hex(),
    )


__all__ = [
    "GENESIS",
    "HEAD_PURPOSE",
    "LedgerEntry",
    "LedgerRow",
    "Receipt",
    "build_rows",
    "canonical_json",
    "digest",
    "entry_hash",
    "head_of",
    "issue_receipt",
    "public_key_bytes",
    "sign_head",
    "verify_chain",
    "verify_head",
    "verify_ledger",
]
