"""How an update becomes chunks that an untrusted aggregator can add without reading.

Three roles hold three different things (see docs/threat-model.md):

* the **job driver** holds a :class:`KeyPair` (it alone can decrypt);
* a **node** holds an :class:`Encryptor` built from the public material only;
* the **aggregator** holds an :class:`Adder` built from the parameters only (no key at all).

Every scheme works on *chunks*: float64 vectors of at most ``values_per_chunk`` values whose last
slot is the node's aggregation weight, so each chunk of a sum decrypts to (sum w_i u_i, sum w_i).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedgpu.errors import CryptoError


class Encryptor(Protocol):
    """Node side: turns one chunk of float64 values into an opaque payload."""

    values_per_chunk: int

    def encrypt(self, values: np.ndarray) -> bytes: ...


class Adder(Protocol):
    """Aggregator side: adds payloads without any key. Memory is one accumulator per chunk index."""

    # True when ``to_bytes(add(zero(), p)) == p`` for every payload ``p`` that passes :meth:`check`:
    # a cohort of one update then releases the spooled payload itself, with no decode and re-encode.
    sum_is_payload: bool

    def check(self, payload: bytes) -> None:
        """Raise ProtocolError/CryptoError if ``payload`` is not a well-formed ciphertext of this context."""

    def count(self, payload: bytes) -> int:
        """Number of values (parameters + weight slot) a well-formed payload encodes."""

    def zero(self) -> np.ndarray: ...

    def add(self, acc: np.ndarray, payload: bytes) -> np.ndarray:
        """Return acc + payload (may update ``acc`` in place)."""

    def combine(self, acc: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Return the sum of two accumulators (merging cohorts); may update ``acc`` in place."""

    def to_bytes(self, acc: np.ndarray) -> bytes: ...


class Decryptor(Protocol):
    """Driver side: turns a summed payload back into float64 values."""

    def decrypt(self, payload: bytes, num_values: int) -> np.ndarray: ...


class KeyPair(Protocol):
    """The job driver's keys. ``public_material`` goes to nodes, ``params`` to the aggregator."""

    scheme: str
    values_per_chunk: int

    @property
    def public_material(self) -> bytes: ...

    @property
    def params(self) -> bytes: ...

    def decryptor(self) -> Decryptor: ...


def context_fingerprint(scheme: str, params: bytes, public_material: bytes) -> str:
    """SHA-256 over the scheme, its parameters and its public key: travels with every upload."""
    h = hashlib.sha256()
    for part in (scheme.encode(), params, public_material):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


@dataclass(frozen=True)
class ChunkLayout:
    """Splits a flat update of ``num_params`` values into chunks with a trailing weight slot."""

    num_params: int
    values_per_chunk: int

    @property
    def params_per_chunk(self) -> int:
        return self.values_per_chunk - 1

    @property
    def num_chunks(self) -> int:
        return max(1, math.ceil(self.num_params / self.params_per_chunk))

    def chunk_values(self, index: int) -> int:
        """Number of values (parameters + 1 weight slot) in chunk ``index``."""
        start = index * self.params_per_chunk
        return min(self.params_per_chunk, self.num_params - start) + 1

    def split(self, update: np.ndarray, weight: float) -> Iterator[np.ndarray]:
        """Yield ``[w * u_slice..., w]`` per chunk, in order."""
        flat = np.asarray(update, dtype=np.float64).reshape(-1)
        if flat.size != self.num_params:
            raise CryptoError(f"update has {flat.size} values, layout expects {self.num_params}")
        step = self.params_per_chunk
        for i in range(self.num_chunks):
            part = flat[i * step : (i + 1) * step]
            out = np.empty(part.size + 1, dtype=np.float64)
            np.multiply(part, weight, out=out[:-1])
            out[-1] = weight
            yield out

    def join(self, chunks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of split over summed chunks: (sum of w*u per parameter, sum of w per chunk)."""
        if len(chunks) != self.num_chunks:
            raise CryptoError(f"expected {self.num_chunks} chunks, got {len(chunks)}")
        weighted = np.concatenate([c[: self.chunk_values(i) - 1] for i, c in enumerate(chunks)])
        weights = np.array([c[self.chunk_values(i) - 1] for i, c in enumerate(chunks)])
        return weighted, weights


__all__ = ["Adder", "ChunkLayout", "Decryptor", "Encryptor", "KeyPair", "context_fingerprint"]
