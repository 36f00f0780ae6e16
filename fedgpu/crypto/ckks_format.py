"""CKKS parameters, the payload wire format and the key-free adder, in numpy only.

The aggregator imports this module and nothing else of the CKKS scheme, so it never loads SEAL
(or TenSEAL) and never holds a key: it adds payloads as flat arrays of unsigned integers.

Why a format of our own rather than SEAL's serialization: TenSEAL's sealapi always saves with zstd,
and decompressing was ~90% of an aggregator's time when we measured it. Here a payload is a small
header plus bit-packed coefficients, so loading one is a set of views into the received bytes.

Why coefficients are *modulus-switched* to ``2**b`` before packing: a ciphertext coefficient
``x mod q`` travels as ``y = round(x * 2**b / q) mod 2**b``. The map ``x -> x * 2**b / q`` is additive
from Z_q to R / 2**b Z, so the aggregator adds ``y`` values modulo ``2**b`` (plain uint64
wrap-around, no knowledge of q) and the driver maps the sum back with ``round(y * q / 2**b)``.
Each payload adds a rounding error of at most half a step ``q / 2**b`` per coefficient, which is
just more CKKS noise; ``c1`` gets a finer step than ``c0`` because its error is multiplied by the
secret key when decrypting (about ``sqrt(N / 18)`` times larger). The compressed payload is a public
function of the ciphertext, so it reveals nothing the ciphertext did not.

Budget of the defaults (N = 4096, q = 2**60 - 16383, scale 2**40, c0/c1 at 51/57 bits): 13.5 bytes
per value, 18 ciphertexts (73,728 values) per payload of 995 KB. A sum of 100 updates of 1M N(0, 1e-2)
values decrypts within ~1e-6 of the plaintext sum (worst value; it varies by ~30% with the key,
because noise in slot j scales with the secret key's embedding there), and a sum decrypts correctly
while every |value| stays below ``max_abs_sum`` (3.7e5).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fedgpu.crypto.coefficients import (
    MAX_BITS,
    MAX_GAP,
    MIN_BITS,
    add_packed,
    by_phase,
    check_ring,
    natural_order,
    pack,
    packed_bytes,
    readable,
    unpack,
    windows_end,
)
from fedgpu.errors import CryptoError, ProtocolError

# A gRPC message is capped at 1 MiB; leave ~48 KiB for the envelope (ids, digests, signature).
MAX_PAYLOAD_BYTES = 1_000_000

# The largest 60-bit prime q = 1 (mod 2 * 4096): what SEAL's CoeffModulus.Create(4096, [60]) returns.
# q = 2**60 - 16383; the small gap to 2**60 is what makes exact modulus switching cheap (see below).
DEFAULT_MODULUS = 1152921504606830593

_PARAMS_MAGIC = b"FGCP"
_PARAMS_VERSION = 1
# magic, version, log2(N), scale bits, c0 bits, c1 bits, reserved, ciphertexts per chunk, modulus
_PARAMS = struct.Struct("<4sBBBBBBHQ")

_PAYLOAD_MAGIC = b"FGCT"
_PAYLOAD_VERSION = 1
# magic, version, reserved, ciphertext count, value count, params tag
_HEADER = struct.Struct("<4sBBHI8s")
HEADER_BYTES = _HEADER.size

# Bit widths and modulus gaps that the modulus switch and the packer of fedgpu.crypto.coefficients take.
_MIN_BITS, _MAX_BITS, _MAX_GAP = MIN_BITS, MAX_BITS, MAX_GAP


@dataclass(frozen=True)
class CkksParams:
    """Addition-only CKKS: one data prime, no special prime, complex packing (2 reals per slot)."""

    poly_modulus_degree: int = 4096
    modulus: int = DEFAULT_MODULUS
    # Fixed-point scale 2**scale_bits: public-key noise is ~1e4 in scaled units per value, so 2**40
    # keeps a 100-node sum within ~1e-6 of the plaintext sum.
    scale_bits: int = 40
    # Wire widths of c0 and c1 coefficients (see the module docstring for why c1 is wider). Each
    # roughly matches the public-key encryption noise, so a 100-node sum of 1M values stays within
    # ~1e-6 of the plaintext sum (2x margin on the 2e-6 budget) at 13.5 bytes per value.
    c0_bits: int = 51
    c1_bits: int = 57
    # Ciphertexts per payload: 18 * 4096 * (51 + 57) / 8 bytes = 995 KB, under MAX_PAYLOAD_BYTES.
    ciphertexts_per_chunk: int = 18

    def __post_init__(self) -> None:
        check_ring("ckks", self.poly_modulus_degree, self.modulus)
        k = self.modulus.bit_length()
        if not 20 <= self.scale_bits <= k - 4:
            raise CryptoError(f"ckks scale_bits {self.scale_bits}: must be in 20..{k - 4}")
        for name, bits in (("c0_bits", self.c0_bits), ("c1_bits", self.c1_bits)):
            if not _MIN_BITS <= bits <= min(_MAX_BITS, k - 1):
                raise CryptoError(f"ckks {name} {bits}: must be in {_MIN_BITS}..{min(_MAX_BITS, k - 1)}")
        if not self.ciphertexts_per_chunk >= 1 or self.payload_bytes(self.ciphertexts_per_chunk) > MAX_PAYLOAD_BYTES:
            raise CryptoError(
                f"ckks ciphertexts_per_chunk {self.ciphertexts_per_chunk}: a payload must hold at least one "
                f"ciphertext and stay under {MAX_PAYLOAD_BYTES} bytes"
            )

    # --- sizes -------------------------------------------------------------------------------
    @property
    def values_per_ciphertext(self) -> int:
        """N/2 complex slots, each carrying two reals."""
        return self.poly_modulus_degree

    @property
    def values_per_chunk(self) -> int:
        return self.values_per_ciphertext * self.ciphertexts_per_chunk

    @property
    def ciphertext_bytes(self) -> int:
        return self.poly_modulus_degree * (self.c0_bits + self.c1_bits) // 8

    def payload_bytes(self, num_ciphertexts: int) -> int:
        return HEADER_BYTES + num_ciphertexts * self.ciphertext_bytes

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    @property
    def max_abs_sum(self) -> float:
        """Largest |value| a *sum* may reach and still decrypt: a plaintext coefficient is at most
        sqrt(2) * max|value| * scale and must stay below q/2 (worst case over all inputs)."""
        return self.modulus / (2.0 * math.sqrt(2.0) * self.scale)

    # --- identity and bytes -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return _PARAMS.pack(
            _PARAMS_MAGIC,
            _PARAMS_VERSION,
            self.poly_modulus_degree.bit_length() - 1,
            self.scale_bits,
            self.c0_bits,
            self.c1_bits,
            0,
            self.ciphertexts_per_chunk,
            self.modulus,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CkksParams:
        if len(data) != _PARAMS.size:
            raise CryptoError(f"ckks parameters are {len(data)} bytes, expected {_PARAMS.size}")
        magic, version, log_n, scale_bits, c0_bits, c1_bits, reserved, per_chunk, modulus = _PARAMS.unpack(data)
        if magic != _PARAMS_MAGIC or version != _PARAMS_VERSION or reserved != 0:
            raise CryptoError("not fedgpu ckks parameters (bad magic, version or reserved byte)")
        if not 11 <= log_n <= 15:
            raise CryptoError(f"ckks log2(poly_modulus_degree) {log_n}: must be in 11..15")
        return cls(1 << log_n, modulus, scale_bits, c0_bits, c1_bits, per_chunk)

    @cached_property
    def tag(self) -> bytes:
        """8 bytes naming these parameters inside every payload, so one made under others fails fast."""
        return hashlib.sha256(self.to_bytes()).digest()[:8]


@dataclass(frozen=True)
class PayloadHeader:
    num_ciphertexts: int
    num_values: int


def encode_payload(params: CkksParams, num_values: int, c0: np.ndarray, c1: np.ndarray) -> bytes:
    """Header plus the packed (already compressed) c0 and c1 coefficients of all ciphertexts."""
    num_ct = c0.size // params.poly_modulus_degree
    header = _HEADER.pack(_PAYLOAD_MAGIC, _PAYLOAD_VERSION, 0, num_ct, num_values, params.tag)
    return header + pack(c0, params.c0_bits) + pack(c1, params.c1_bits)


def read_header(params: CkksParams, payload: bytes) -> PayloadHeader:
    """Validate everything but the coefficients (every b-bit pattern is a valid coefficient)."""
    if len(payload) < HEADER_BYTES:
        raise ProtocolError(f"ckks payload of {len(payload)} bytes is shorter than its {HEADER_BYTES}-byte header")
    magic, version, reserved, num_ct, num_values, tag = _HEADER.unpack_from(payload)
    if magic != _PAYLOAD_MAGIC or version != _PAYLOAD_VERSION or reserved != 0:
        raise ProtocolError("not a fedgpu ckks payload (bad magic, version or reserved byte)")
    if tag != params.tag:
        raise CryptoError("ckks payload was made under other parameters (another job or key)")
    if not 1 <= num_ct <= params.ciphertexts_per_chunk:
        raise ProtocolError(f"ckks payload holds {num_ct} ciphertexts, allowed 1..{params.ciphertexts_per_chunk}")
    if math.ceil(num_values / params.values_per_ciphertext) != num_ct:
        raise ProtocolError(f"ckks payload claims {num_values} values in {num_ct} ciphertexts")
    expected = params.payload_bytes(num_ct)
    if len(payload) != expected:
        raise ProtocolError(f"ckks payload is {len(payload)} bytes, its header implies {expected}")
    return PayloadHeader(num_ct, num_values)


def _blocks(params: CkksParams, header: PayloadHeader) -> tuple[int, int, int]:
    """(values per block, offset of c0, offset of c1) in a payload."""
    count = header.num_ciphertexts * params.poly_modulus_degree
    return count, HEADER_BYTES, HEADER_BYTES + packed_bytes(count, params.c0_bits)


def _readable(params: CkksParams, header: PayloadHeader, payload: bytes) -> np.ndarray:
    """The payload as uint8, without a copy unless the last window reads past its end."""
    count, _, c1_offset = _blocks(params, header)
    return readable(payload, windows_end(c1_offset, count, params.c1_bits))


def decode_payload(params: CkksParams, payload: bytes) -> tuple[PayloadHeader, np.ndarray, np.ndarray]:
    """Header plus c0, c1 as uint64 arrays of length num_ciphertexts * N (still compressed)."""
    header = read_header(params, payload)
    count, c0_offset, c1_offset = _blocks(params, header)
    buf = _readable(params, header, payload)
    c0 = unpack(buf, c0_offset, count, params.c0_bits)
    c1 = unpack(buf, c1_offset, count, params.c1_bits)
    return header, c0, c1


# Accumulator layout (private to this module): uint64 [num_values, num_ciphertexts, c0..., c1...],
# where c0 and c1 are stored "by phase" (see coefficients.phase_views) so that every add writes contiguously.
_ACC_META = 2


class CkksAdder:
    """Aggregator side: adds ckks payloads as integers mod 2**bits, with numpy only and no key.

    The sum of payloads is itself a payload, so the driver decrypts it like a single upload.
    """

    sum_is_payload = True  # every bit of a payload is a coefficient or a checked header field

    def __init__(self, params: bytes) -> None:
        self.params = CkksParams.from_bytes(params)
        self.values_per_chunk = self.params.values_per_chunk

    def check(self, payload: bytes) -> None:
        read_header(self.params, payload)

    def count(self, payload: bytes) -> int:
        """Values (parameters + weight slot) the payload carries, from its validated header."""
        return read_header(self.params, payload).num_values

    def zero(self) -> np.ndarray:
        return np.zeros(0, dtype=np.uint64)

    def _sections(self, acc: np.ndarray, num_ct: int) -> tuple[np.ndarray, np.ndarray]:
        count = num_ct * self.params.poly_modulus_degree
        if acc.dtype != np.uint64 or acc.size != _ACC_META + 2 * count:
            raise ProtocolError("not a ckks sum of these parameters (accumulator of the wrong size or type)")
        c0 = by_phase(acc[_ACC_META : _ACC_META + count], self.params.c0_bits)
        c1 = by_phase(acc[_ACC_META + count :], self.params.c1_bits)
        return c0, c1

    def add(self, acc: np.ndarray, payload: bytes) -> np.ndarray:
        """Return acc + payload; updates ``acc`` in place after the first payload.

        High bits above ``bits`` are left to wrap: carries only move upwards, so the low ``bits`` bits
        of the uint64 sum are the sum mod 2**bits; :meth:`to_bytes` masks them off.
        """
        header = read_header(self.params, payload)
        p = self.params
        count, c0_offset, c1_offset = _blocks(p, header)
        if acc.size == 0:
            acc = np.zeros(_ACC_META + 2 * count, dtype=np.uint64)
            acc[0], acc[1] = header.num_values, header.num_ciphertexts
        elif (int(acc[0]), int(acc[1])) != (header.num_values, header.num_ciphertexts):
            raise ProtocolError(
                f"ckks payload of {header.num_values} values cannot be added to a sum of {int(acc[0])} values"
            )
        buf = _readable(p, header, payload)
        sums = self._sections(acc, header.num_ciphertexts)
        for section, offset, bits in zip(sums, (c0_offset, c1_offset), (p.c0_bits, p.c1_bits), strict=True):
            add_packed(section, buf, offset, count, bits)
        return acc

    def combine(self, acc: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Add two accumulators of the same shape (uint64 wrap-around, masked in :meth:`to_bytes`)."""
        if acc.dtype != np.uint64 or other.dtype != np.uint64 or acc.shape != other.shape or not np.array_equal(acc[:_ACC_META], other[:_ACC_META]):
            raise ProtocolError("cannot merge ckks sums of different shapes")
        np.add(acc[_ACC_META:], other[_ACC_META:], out=acc[_ACC_META:])
        return acc

    def to_bytes(self, acc: np.ndarray) -> bytes:
        if acc.size <= _ACC_META:
            raise ProtocolError("cannot serialize an empty ckks sum: no payload was added")
        p = self.params
        num_values, num_ct = int(acc[0]), int(acc[1])
        c0, c1 = self._sections(acc, num_ct)
        return encode_payload(p, num_values, natural_order(c0, p.c0_bits), natural_order(c1, p.c1_bits))


__all__ = [
    "CkksAdder",
    "CkksParams",
    "DEFAULT_MODULUS",
    "HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "PayloadHeader",
    "decode_payload",
    "encode_payload",
    "read_header",
]
