"""The ``none`` scheme: float32 chunks in the clear, for debugging and as the baseline of benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedgpu.errors import ProtocolError, StorageError

# A chunk must fit the 1 MiB message budget both ways: 120k values are 480 KB as float32 uploads
# and 960 KB as the float64 sums the driver fetches.
PLAIN_VALUES_PER_CHUNK = 120_000


class PlainEncryptor:
    def __init__(self, values_per_chunk: int = PLAIN_VALUES_PER_CHUNK) -> None:
        self.values_per_chunk = values_per_chunk

    def encrypt(self, values: np.ndarray) -> bytes:
        return np.ascontiguousarray(values, dtype="<f4").tobytes()


class PlainAdder:
    """Sums float32 chunks into a float64 accumulator."""

    sum_is_payload = False  # a sum is float64, an update float32

    def __init__(self, values_per_chunk: int = PLAIN_VALUES_PER_CHUNK) -> None:
        self.values_per_chunk = values_per_chunk

    def _view(self, payload: bytes) -> np.ndarray:
        if len(payload) % 4 or not payload or len(payload) > 4 * self.values_per_chunk:
            raise ProtocolError(
                f"plain chunk of {len(payload)} bytes: expected a non-empty multiple of 4 "
                f"of at most {4 * self.values_per_chunk} bytes"
            )
        arr = np.frombuffer(payload, dtype="<f4")
        if not np.isfinite(arr).all():
            raise ProtocolError("plain chunk holds NaN or infinite values")
        return arr

    def check(self, payload: bytes) -> None:
        self._view(payload)

    def count(self, payload: bytes) -> int:
        return len(payload) // 4

    def zero(self) -> np.ndarray:
        return np.zeros(0, dtype=np.float64)

    def add(self, acc: np.ndarray, payload: bytes) -> np.ndarray:
        arr = self._view(payload)
        if acc.size == 0:
            return arr.astype(np.float64)
        if acc.size != arr.size:
            raise ProtocolError(f"plain chunk has {arr.size} values, the sum has {acc.size}")
        acc += arr
        return acc

    def combine(self, acc: np.ndarray, other: np.ndarray) -> np.ndarray:
        if acc.shape != other.shape:
            raise ProtocolError(f"cannot merge sums of {acc.size} and {other.size} values")
        acc += other
        return acc

    def to_bytes(self, acc: np.ndarray) -> bytes:
        return np.ascontiguousarray(acc, dtype="<f8").tobytes()


class PlainDecryptor:
    def decrypt(self, payload: bytes, num_values: int) -> np.ndarray:
        arr = np.frombuffer(payload, dtype="<f8")
        if arr.size != num_values:
            raise ProtocolError(f"summed plain chunk has {arr.size} values, expected {num_values}")
        return arr.copy()


class PlainKeyPair:
    """No keys at all: public material and parameters are empty."""

    scheme = "none"

    def __init__(self, values_per_chunk: int = PLAIN_VALUES_PER_CHUNK) -> None:
        self.values_per_chunk = values_per_chunk

    @property
    def public_material(self) -> bytes:
        return b""

    @property
    def params(self) -> bytes:
        return self.values_per_chunk.to_bytes(8, "little")

    def decryptor(self) -> PlainDecryptor:
        return PlainDecryptor()

    def save(self, directory: Path) -> None:
        """Write the parameters (there is no key), so a resumed driver rebuilds the same layout."""
        Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
        (Path(directory) / "plain.params").write_bytes(self.params)

    @classmethod
    def load(cls, directory: Path) -> PlainKeyPair:
        try:
            return cls(plain_values_per_chunk((Path(directory) / "plain.params").read_bytes()))
        except OSError as exc:
            raise StorageError(f"cannot read {directory}/plain.params: {exc}") from exc


def plain_values_per_chunk(params: bytes) -> int:
    if len(params) != 8:
        raise ProtocolError("plain scheme parameters must be 8 bytes")
    n = int.from_bytes(params, "little")
    if not 2 <= n <= PLAIN_VALUES_PER_CHUNK:
        raise ProtocolError(f"plain values_per_chunk {n} out of range 2..{PLAIN_VALUES_PER_CHUNK}")
    return n


__all__ = [
    "PLAIN_VALUES_PER_CHUNK",
    "PlainAdder",
    "PlainDecryptor",
    "PlainEncryptor",
    "PlainKeyPair",
    "plain_values_per_chunk",
]
