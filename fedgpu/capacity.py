"""A node's measured capacity record, and the aggregator's signature over it: proof of work done.

Pure rules, like :mod:`fedgpu.claims`: the aggregator fills records (fedgpu.aggregator.capacity),
``fedgpu nodes`` and ``fedgpu node --status`` check them with the aggregator's public key. The
signature is the ledger key's (the one that signs reward heads), over canonical JSON
(:func:`fedgpu.rewards.chain.canonical_json`) with its own purpose string, so a record's signature can
never pass for a ledger head's and the other way round.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedgpu.errors import ProtocolError
from fedgpu.rewards.chain import canonical_json, public_key_bytes

RECORD_PURPOSE = "fedgpu.capacity.record.v1"  # domain separation from ledger heads


@dataclass(frozen=True)
class CapacityRecord:
    """One node's measured record (all times on the aggregator's clock) and its claimed device."""

    node_id: str
    name: str
    device: str                # claimed at registration: shown, never used
    tasks: int                 # tasks completed
    misses: int                # tasks that failed at their deadline
    samples: int               # samples of the completed tasks that named their size (0: none did)
    compute_seconds: float     # sum of offer .. first chunk received
    turnaround_seconds: float  # sum of offer .. update complete
    bytes_up: int
    upload_seconds: float      # sum of first chunk .. update complete
    updated_at: float          # unix time of the last change

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.compute_seconds if self.samples and self.compute_seconds > 0 else 0.0

    @property
    def mean_turnaround(self) -> float:
        return self.turnaround_seconds / self.tasks if self.tasks else 0.0

    @property
    def upload_rate(self) -> float:
        """Bytes per second while uploading."""
        return self.bytes_up / self.upload_seconds if self.upload_seconds > 0 else 0.0

    def fields(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SignedRecord:
    """A record with the aggregator's Ed25519 signature over its canonical JSON, and the key's hex."""

    record: CapacityRecord
    signature: str
    aggregator_key: str

    def verify(self) -> bool:
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.aggregator_key))
            key.verify(bytes.fromhex(self.signature), _message(self.record))
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True

    def to_json(self) -> str:
        return json.dumps({"record": self.record.fields(), "signature": self.signature, "aggregator_key": self.aggregator_key}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> SignedRecord:
        """Parse a record from the wire; anything malformed is a ProtocolError, never a crash."""
        try:
            data = json.loads(text)
            rec = data["record"]
            record = CapacityRecord(**{k: type(getattr(_ZERO, k))(rec[k]) for k in CapacityRecord.__dataclass_fields__})
            return cls(record, str(data["signature"]), str(data["aggregator_key"]))
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed capacity record: {exc}") from exc


_ZERO = CapacityRecord("", "", "", 0, 0, 0, 0.0, 0.0, 0, 0.0, 0.0)


def _message(record: CapacityRecord) -> bytes:
    return canonical_json({"purpose": RECORD_PURPOSE, **record.fields()})


def sign_record(key: Ed25519PrivateKey, record: CapacityRecord) -> SignedRecord:
    return SignedRecord(record, key.sign(_message(record)).hex(), public_key_bytes(key).hex())


__all__ = [
    "CapacityRecord",
    "RECORD_PURPOSE",
    "SignedRecord",
    "sign_record",
]
