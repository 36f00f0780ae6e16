"""bfv8 parameters, the payload wire format and the key-free adder, in numpy only.

The ``bfv8`` scheme is the bandwidth mode: each value is stochastically rounded to one of 255 levels
(8 bits, ``-127..127`` steps of ``clip / 127``), three such integers share one plaintext coefficient
of BFV with plaintext modulus ``t = 2**45`` (15-bit lanes: 8 bits of value plus 7 of carry room),
and ciphertexts travel modulus-switched and bit-packed exactly like ckks ones
(:mod:`fedgpu.crypto.coefficients`). The aggregator imports this module and nothing else of the
scheme: it adds payloads as integers modulo ``2**bits`` and never loads SEAL or holds a key.

Why BFV and lanes: a BFV sum decrypts *exactly* to the sum of the plaintext integers mod t, so
lanes of a coefficient add independently as long as no lane's sum leaves its signed 15-bit range:
``max_summands * 127 <= 2**14 - 1``. That is the carry bound; the adder refuses to add more than
``max_summands`` (128) payloads into one sum, and the header of every sum says how many it holds.

Why the message is added *after* the modulus switch: with ``2**c0_bits / t = 2**7`` an integer, the
scaled message ``m * 2**(c0_bits - 45)`` is exact in the switched domain, so a payload is an ordinary
public-key BFV ciphertext (scaling ``round(q * m / t)``) up to the switch's rounding, which is noise.

Budget of the defaults (N = 4096, q = 2**60 - 16383, t = 2**45, c0/c1 at 52/57 bits): 3 values per
coefficient, 109 bits per coefficient, **4.54 bytes per value** (1.1x float32), 17 ciphertexts
(208,894 values) per payload of 949 KB. Decryption noise of a sum of n payloads, in units of one
step of t (``q / t``), measured with the secret key: sd 0.0085 sqrt(n), of which the fresh
public-key noise is ~0.0072 sqrt(n) and the two modulus switches the rest. Decryption rounds it away
while it stays below 1/2: 5.9 sd at n = 100, 5.1 sd at n = 128 (tests/crypto/test_bfv.py). Were it
ever exceeded, the lowest lane of that one coefficient would be off by one quantisation step, as
likely up as down; the quantisation itself already adds up to n steps.

The weight slot (the last value of every chunk, see :class:`fedgpu.crypto.scheme.ChunkLayout`) gets
a coefficient of its own, in signed fixed point with ``weight_bits`` fraction bits (rounded to
nearest, so every chunk of one node carries the same weight), up to ``max_weight``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fedgpu.crypto.ckks_format import DEFAULT_MODULUS, MAX_PAYLOAD_BYTES
from fedgpu.crypto.coefficients import (
    MAX_BITS,
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

_PARAMS_MAGIC = b"FGBP"
_PARAMS_VERSION = 1
# magic, version, log2(N), quant bits, lanes, lane bits, weight bits, c0 bits, c1 bits, reserved,
# ciphertexts per chunk, max summands, clip, modulus
_PARAMS = struct.Struct("<4sBBBBBBBBBHHdQ")

_PAYLOAD_MAGIC = b"FGBV"
_PAYLOAD_VERSION = 1
# magic, version, reserved, ciphertext count, value count, summands, params tag
_HEADER = struct.Struct("<4sBBHII8s")
HEADER_BYTES = _HEADER.size

# q / t must leave room for the fresh encryption noise (~2**8 per payload at N = 4096).
_MIN_NOISE_BITS = 12


@dataclass(frozen=True)
class Bfv8Params:
    """Addition-only BFV: one data prime, no special prime, plaintext modulus ``2**(lanes * lane_bits)``."""

    poly_modulus_degree: int = 4096
    modulus: int = DEFAULT_MODULUS
    # Each value is stochastically rounded to one of 2 * (2**(quant_bits - 1) - 1) + 1 levels.
    quant_bits: int = 8
    # Values are clipped to [-clip, clip] before rounding; one step is clip / 127. Values are w * u
    # (the FedAvg weight times the update): with the node's default weight of 1e-3 per sample, a node
    # of 2,000 samples sends |w * u| <= 1 for all but ~0.01 % of the demo CNN's parameters.
    clip: float = 1.0
    # Values per plaintext coefficient and bits per value: lane_bits - quant_bits bits are carry room.
    lanes: int = 3
    lane_bits: int = 15
    # The carry bound: no sum may hold more payloads than this (max_summands * 127 < 2**14).
    max_summands: int = 128
    # Fraction bits of the weight slot's fixed point: a step of ~1e-6, up to max_weight (~1.3e5).
    weight_bits: int = 20
    # Wire widths of c0 and c1, 7 and 12 bits below the plaintext's lowest bit (c1 wider: its
    # rounding is multiplied by the secret key). Together they add less decryption noise than the
    # fresh public-key encryption does (see the module docstring).
    c0_bits: int = 52
    c1_bits: int = 57
    # Ciphertexts per payload: 17 * 4096 * (52 + 57) / 8 bytes = 949 KB, under MAX_PAYLOAD_BYTES.
    ciphertexts_per_chunk: int = 17

    def __post_init__(self) -> None:
        check_ring("bfv8", self.poly_modulus_degree, self.modulus)
        k = self.modulus.bit_length()
        if not 2 <= self.quant_bits <= 16:
            raise CryptoError(f"bfv8 quant_bits {self.quant_bits}: must be in 2..16")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise CryptoError(f"bfv8 clip {self.clip}: must be a positive number")
        if not 1 <= self.lanes <= 8 or not self.quant_bits < self.lane_bits <= 32:
            raise CryptoError(f"bfv8 lanes {self.lanes} x {self.lane_bits} bits: need 1..8 lanes wider than quant_bits")
        if not 2 <= self.plain_bits <= k - _MIN_NOISE_BITS:
            raise CryptoError(
                f"bfv8 plaintext of {self.plain_bits} bits (lanes * lane_bits): must leave {_MIN_NOISE_BITS} bits of "
                f"the {k}-bit modulus for noise"
            )
        carry_bound = ((1 << (self.lane_bits - 1)) - 1) // self.levels
        if not 1 <= self.max_summands <= carry_bound:
            raise CryptoError(
                f"bfv8 max_summands {self.max_summands}: {self.lane_bits}-bit lanes of {self.quant_bits}-bit values "
                f"carry 1..{carry_bound} summands"
            )
        if not 0 <= self.weight_bits <= 40 or self.max_weight < 1:
            raise CryptoError(f"bfv8 weight_bits {self.weight_bits}: must be in 0..40 and leave a max_weight >= 1")
        for name, bits in (("c0_bits", self.c0_bits), ("c1_bits", self.c1_bits)):
            low, high = max(MIN_BITS, self.plain_bits + 2), min(MAX_BITS, k - 1)
            if not low <= bits <= high:
                raise CryptoError(f"bfv8 {name} {bits}: must be in {low}..{high}")
        if not self.ciphertexts_per_chunk >= 1 or self.payload_bytes(self.ciphertexts_per_chunk) > MAX_PAYLOAD_BYTES:
            raise CryptoError(
                f"bfv8 ciphertexts_per_chunk {self.ciphertexts_per_chunk}: a payload must hold at least one "
                f"ciphertext and stay under {MAX_PAYLOAD_BYTES} bytes"
            )

    # --- the plaintext ----------------------------------------------------------------------------
    @property
    def plain_bits(self) -> int:
        return self.lanes * self.lane_bits

    @property
    def plain_modulus(self) -> int:
        return 1 << self.plain_bits

    @property
    def levels(self) -> int:
        """Largest |integer| a value rounds to: 127 for 8 bits."""
        return (1 << (self.quant_bits - 1)) - 1

    @property
    def step(self) -> float:
        """One quantisation step; a sum of n payloads is within n steps of the sum of unclipped values."""
        return self.clip / self.levels

    @property
    def max_weight(self) -> float:
        """Largest |weight| one payload may carry so that max_summands of them stay inside t / 2."""
        return float((((1 << (self.plain_bits - 1)) - 1) // self.max_summands) / 2**self.weight_bits)

    # --- sizes ------------------------------------------------------------------------------------
    @property
    def values_per_chunk(self) -> int:
        """Every coefficient but one holds ``lanes`` values; the last holds the weight slot."""
        return (self.ciphertexts_per_chunk * self.poly_modulus_degree - 1) * self.lanes + 1

    def num_ciphertexts(self, num_values: int) -> int:
        """Ciphertexts of a chunk of ``num_values`` values (the last one being the weight slot)."""
        coefficients = -(-(num_values - 1) // self.lanes) + 1
        return -(-coefficients // self.poly_modulus_degree)

    @property
    def ciphertext_bytes(self) -> int:
        return self.poly_modulus_degree * (self.c0_bits + self.c1_bits) // 8

    def payload_bytes(self, num_ciphertexts: int) -> int:
        return HEADER_BYTES + num_ciphertexts * self.ciphertext_bytes

    # --- identity and bytes -----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return _PARAMS.pack(
            _PARAMS_MAGIC,
            _PARAMS_VERSION,
            self.poly_modulus_degree.bit_length() - 1,
            self.quant_bits,
            self.lanes,
            self.lane_bits,
            self.weight_bits,
            self.c0_bits,
            self.c1_bits,
            0,
            self.ciphertexts_per_chunk,
            self.max_summands,
            self.clip,
            self.modulus,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Bfv8Params:
        if len(data) != _PARAMS.size:
            raise CryptoError(f"bfv8 parameters are {len(data)} bytes, expected {_PARAMS.size}")
        (magic, version, log_n, quant_bits, lanes, lane_bits, weight_bits, c0_bits, c1_bits, reserved,
         per_chunk, max_summands, clip, modulus) = _PARAMS.unpack(data)
        if magic != _PARAMS_MAGIC or version != _PARAMS_VERSION or reserved != 0:
            raise CryptoError("not fedgpu bfv8 parameters (bad magic, version or reserved byte)")
        if not 11 <= log_n <= 15:
            raise CryptoError(f"bfv8 log2(poly_modulus_degree) {log_n}: must be in 11..15")
        return cls(1 << log_n, modulus, quant_bits, clip, lanes, lane_bits, max_summands, weight_bits, c0_bits, c1_bits, per_chunk)

    @cached_property
    def tag(self) -> bytes:
        """8 bytes naming these parameters inside every payload, so one made under others fails fast."""
        return hashlib.sha256(self.to_bytes()).digest()[:8]


# The registered parameter sets, by scheme name (crypto.SCHEMES): the default, and a smaller one for
# rounds of at most 32 nodes (13-bit lanes: 8 bits of value plus 5 of carry room; t = 2**39 leaves
# room to send c0/c1 at 44/50 bits, 5 and 11 below the plaintext's lowest bit): 3.95 bytes per value.
PRESETS: dict[str, Bfv8Params] = {
    "bfv8": Bfv8Params(),
    "bfv8-32": Bfv8Params(lane_bits=13, max_summands=32, c0_bits=44, c1_bits=50, ciphertexts_per_chunk=20),
}


@dataclass(frozen=True)
class PayloadHeader:
    num_ciphertexts: int
    num_values: int
    summands: int


def encode_payload(params: Bfv8Params, num_values: int, summands: int, c0: np.ndarray, c1: np.ndarray) -> bytes:
    """Header plus the packed (already modulus-switched) c0 and c1 coefficients of all ciphertexts."""
    num_ct = c0.size // params.poly_modulus_degree
    header = _HEADER.pack(_PAYLOAD_MAGIC, _PAYLOAD_VERSION, 0, num_ct, num_values, summands, params.tag)
    return header + pack(c0, params.c0_bits) + pack(c1, params.c1_bits)


def read_header(params: Bfv8Params, payload: bytes) -> PayloadHeader:
    """Validate everything but the coefficients (every b-bit pattern is a valid coefficient)."""
    if len(payload) < HEADER_BYTES:
        raise ProtocolError(f"bfv8 payload of {len(payload)} bytes is shorter than its {HEADER_BYTES}-byte header")
    magic, version, reserved, num_ct, num_values, summands, tag = _HEADER.unpack_from(payload)
    if magic != _PAYLOAD_MAGIC or version != _PAYLOAD_VERSION or reserved != 0:
        raise ProtocolError("not a fedgpu bfv8 payload (bad magic, version or reserved byte)")
    if tag != params.tag:
        raise CryptoError("bfv8 payload was made under other parameters (another job or key)")
    if not 1 <= num_ct <= params.ciphertexts_per_chunk:
        raise ProtocolError(f"bfv8 payload holds {num_ct} ciphertexts, allowed 1..{params.ciphertexts_per_chunk}")
    if not 1 <= num_values <= params.values_per_chunk or params.num_ciphertexts(num_values) != num_ct:
        raise ProtocolError(f"bfv8 payload claims {num_values} values in {num_ct} ciphertexts")
    if not 1 <= summands <= params.max_summands:
        raise ProtocolError(f"bfv8 payload claims to sum {summands} updates, allowed 1..{params.max_summands}")
    expected = params.payload_bytes(num_ct)
    if len(payload) != expected:
        raise ProtocolError(f"bfv8 payload is {len(payload)} bytes, its header implies {expected}")
    return PayloadHeader(num_ct, num_values, summands)


def _blocks(params: Bfv8Params, header: PayloadHeader) -> tuple[int, int, int]:
    """(values per block, offset of c0, offset of c1) in a payload."""
    count = header.num_ciphertexts * params.poly_modulus_degree
    return count, HEADER_BYTES, HEADER_BYTES + packed_bytes(count, params.c0_bits)


def _readable(params: Bfv8Params, header: PayloadHeader, payload: bytes) -> np.ndarray:
    count, _, c1_offset = _blocks(params, header)
    return readable(payload, windows_end(c1_offset, count, params.c1_bits))


def decode_payload(params: Bfv8Params, payload: bytes) -> tuple[PayloadHeader, np.ndarray, np.ndarray]:
    """Header plus c0, c1 as uint64 arrays of length num_ciphertexts * N (still modulus-switched)."""
    header = read_header(params, payload)
    count, c0_offset, c1_offset = _blocks(params, header)
    buf = _readable(params, header, payload)
    return header, unpack(buf, c0_offset, count, params.c0_bits), unpack(buf, c1_offset, count, params.c1_bits)


# Accumulator layout (private to this module): uint64 [num_values, num_ciphertexts, summands, c0..., c1...],
# c0 and c1 stored by phase (see coefficients.by_phase) so that every add writes contiguously.
_ACC_META = 3


class Bfv8Adder:
    """Aggregator side: adds bfv8 payloads as integers mod 2**bits, with numpy only and no key.

    The sum of payloads is itself a payload (its header counts the summands), so the driver
    decrypts it like a single upload. Refuses any sum of more than ``max_summands`` payloads.
    """

    sum_is_payload = True  # every bit of an upload is a coefficient or a checked header field (summands = 1)

    def __init__(self, params: bytes) -> None:
        self.params = Bfv8Params.from_bytes(params)
        self.values_per_chunk = self.params.values_per_chunk

    def check(self, payload: bytes) -> None:
        """A node's upload: well-formed, and exactly one update (a node claiming to be many would use
        up the carry bound of its whole cohort). :meth:`add` also takes sums."""
        header = read_header(self.params, payload)
        if header.summands != 1:
            raise ProtocolError(f"a bfv8 upload holds exactly one update; this one claims {header.summands}")

    def count(self, payload: bytes) -> int:
        """Values (parameters + weight slot) the payload carries, from its validated header."""
        return read_header(self.params, payload).num_values

    def zero(self) -> np.ndarray:
        return np.zeros(0, dtype=np.uint64)

    def _sections(self, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if acc.dtype != np.uint64 or acc.ndim != 1 or acc.size <= _ACC_META:
            raise ProtocolError("not a bfv8 sum (accumulator of the wrong size or type)")
        count = int(acc[1]) * self.params.poly_modulus_degree
        if acc.size != _ACC_META + 2 * count:
            raise ProtocolError("not a bfv8 sum of these parameters (accumulator of the wrong size)")
        c0 = by_phase(acc[_ACC_META : _ACC_META + count], self.params.c0_bits)
        c1 = by_phase(acc[_ACC_META + count :], self.params.c1_bits)
        return c0, c1

    def _refuse_overflow(self, summands: int) -> None:
        if summands > self.params.max_summands:
            raise CryptoError(
                f"a bfv8 sum holds at most {self.params.max_summands} updates (its 15-bit lanes would overflow); "
                f"this one would hold {summands}: use smaller cohorts or rounds"
            )

    def add(self, acc: np.ndarray, payload: bytes) -> np.ndarray:
        """Return acc + payload; updates ``acc`` in place after the first payload."""
        header = read_header(self.params, payload)
        p = self.params
        count, c0_offset, c1_offset = _blocks(p, header)
        if acc.size == 0:
            acc = np.zeros(_ACC_META + 2 * count, dtype=np.uint64)
            acc[0], acc[1] = header.num_values, header.num_ciphertexts
        elif acc.dtype != np.uint64 or acc.size <= _ACC_META or (int(acc[0]), int(acc[1])) != (header.num_values, header.num_ciphertexts):
            raise ProtocolError(f"bfv8 payload of {header.num_values} values cannot be added to this sum")
        self._refuse_overflow(int(acc[2]) + header.summands)
        sums = self._sections(acc)
        buf = _readable(p, header, payload)
        for section, offset, bits in zip(sums, (c0_offset, c1_offset), (p.c0_bits, p.c1_bits), strict=True):
            add_packed(section, buf, offset, count, bits)
        acc[2] += np.uint64(header.summands)
        return acc

    def combine(self, acc: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Add two accumulators of the same shape (uint64 wrap-around, masked in :meth:`to_bytes`)."""
        self._sections(acc)
        self._sections(other)
        if acc.shape != other.shape or not np.array_equal(acc[:2], other[:2]):
            raise ProtocolError("cannot merge bfv8 sums of different shapes")
        self._refuse_overflow(int(acc[2]) + int(other[2]))
        np.add(acc[2:], other[2:], out=acc[2:])
        return acc

    def to_bytes(self, acc: np.ndarray) -> bytes:
        if acc.size <= _ACC_META:
            raise ProtocolError("cannot serialize an empty bfv8 sum: no payload was added")
        c0, c1 = self._sections(acc)
        p = self.params
        summands = int(acc[2])
        if not 1 <= summands <= p.max_summands:
            raise ProtocolError(f"not a bfv8 sum: it claims {summands} summands")
        return encode_payload(p, int(acc[0]), summands, natural_order(c0, p.c0_bits), natural_order(c1, p.c1_bits))


__all__ = [
    "Bfv8Adder",
    "Bfv8Params",
    "HEADER_BYTES",
    "PRESETS",
    "PayloadHeader",
    "decode_payload",
    "encode_payload",
    "read_header",
]
