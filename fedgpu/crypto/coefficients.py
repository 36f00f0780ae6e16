"""Ciphertext coefficients on the wire, in numpy only: modulus switching to ``2**bits`` and bit packing.

Shared by the ``ckks`` and ``bfv8`` payload formats (see :mod:`fedgpu.crypto.ckks_format` for why
coefficients are modulus-switched and why the aggregator can add them as plain uint64 values).
A packed block of ``bits``-bit values is read through unaligned 8-byte windows, one strided view per
position in a byte-aligned group ("phase"); an accumulator stores its sums by phase, so that every
add writes contiguously, and :func:`natural_order` turns it back.
"""

from __future__ import annotations

import math

import numpy as np

from fedgpu.errors import CryptoError

# Bit widths a payload may use: >= 33 for the exact decompression below, <= 57 so that one value
# plus its bit offset (< 8) fits the 8-byte window the packer reads and writes.
MIN_BITS, MAX_BITS = 33, 57
# The modulus switch computes floor(x * gap / q) with one float64 product; exact for gap < 2**32.
MAX_GAP = 1 << 32

_U64 = np.uint64


def group(bits: int) -> tuple[int, int]:
    """(values, bytes) of the smallest byte-aligned group of ``bits``-bit values."""
    values = 8 // math.gcd(bits, 8)
    return values, values * bits // 8


def packed_bytes(count: int, bits: int) -> int:
    values, nbytes = group(bits)
    return count // values * nbytes


def phase_views(buf: np.ndarray, offset: int, count: int, bits: int) -> list[tuple[np.ndarray, int]]:
    """Unaligned 8-byte windows over packed values, one strided view per position in a group.

    Value ``g * values + j`` starts at bit ``j * bits`` of group ``g``; its window is the 8 bytes at the
    byte holding that bit, shifted right by the bit's offset in the byte. The last window may reach
    past the block (:func:`windows_end`); callers make sure ``buf`` has those bytes.
    """
    values, nbytes = group(bits)
    groups = count // values
    views = []
    for j in range(values):
        bit = j * bits
        view = np.ndarray((groups,), dtype="<u8", buffer=buf, offset=offset + (bit >> 3), strides=(nbytes,))
        views.append((view, bit & 7))
    return views


def pack(values: np.ndarray, bits: int) -> bytes:
    """Pack uint64 values < 2**bits little-endian, ``bits`` bits each (count a multiple of 8)."""
    count = values.size
    group_values, _ = group(bits)
    size = packed_bytes(count, bits)
    buf = np.zeros(size + 8, dtype=np.uint8)
    by_phase = values.reshape(-1, group_values)
    for j, (view, shift) in enumerate(phase_views(buf, 0, count, bits)):
        np.bitwise_or(view, by_phase[:, j] << _U64(shift), out=view)
    return buf[:size].tobytes()


def unpack(buf: np.ndarray, offset: int, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack` over ``buf[offset:]`` (the last 8-byte window must lie inside ``buf``)."""
    group_values, _ = group(bits)
    out = np.empty(count, dtype=np.uint64)
    by_phase = out.reshape(-1, group_values)
    mask = _U64((1 << bits) - 1)
    for j, (view, shift) in enumerate(phase_views(buf, offset, count, bits)):
        column = by_phase[:, j]
        np.right_shift(view, _U64(shift), out=column)  # in place: no temporaries
        np.bitwise_and(column, mask, out=column)
    return out


def compress(x: np.ndarray, modulus: int, bits: int) -> np.ndarray:
    """Exact ``round(x * 2**bits / q) mod 2**bits`` for uint64 ``x < q`` (ties round up).

    With q = 2**k - gap: x * 2**bits / q = (x + x * gap / q) / 2**(k - bits), and x * gap / q < gap is
    small, so its floor z comes from one float64 product, corrected once by an exact remainder.
    """
    k = modulus.bit_length()
    gap = (1 << k) - modulus
    shift = k - bits
    t = x.astype(np.float64)
    t *= gap / modulus
    z = t.astype(np.uint64)  # floor(x * gap / q), or one off near an integer: fixed next
    rem = x * _U64(gap)
    rem -= z * _U64(modulus)
    signed = rem.view(np.int64)  # x*gap - z*q, exact: it lies in (-q, 2q)
    np.add(z, signed >= modulus, out=z, casting="unsafe")
    np.subtract(z, signed < 0, out=z, casting="unsafe")
    z += x
    z += _U64(1 << (shift - 1))
    z >>= _U64(shift)
    z &= _U64((1 << bits) - 1)
    return z


def decompress(y: np.ndarray, modulus: int, bits: int) -> np.ndarray:
    """Exact ``y * 2**(k-bits) - floor((y * gap + 2**(bits-1)) / 2**bits) mod q``: round(y * q / 2**bits), ties down.

    Two arrays in all, the result and one temporary (the driver decompresses every coefficient of every sum)."""
    k = modulus.bit_length()
    gap = _U64((1 << k) - modulus)
    # y * gap = hi * 2**32 + lo with hi = (y >> 32) * gap + (low * gap >> 32); all products fit 64 bits.
    x: np.ndarray = np.bitwise_and(y, _U64(0xFFFFFFFF))
    x *= gap
    x >>= _U64(32)
    w: np.ndarray = np.right_shift(y, _U64(32))
    w *= gap
    w += x
    w += _U64(1 << (bits - 33))
    w >>= _U64(bits - 32)
    np.left_shift(y, _U64(k - bits), out=x)
    x -= w
    np.subtract(x, _U64(modulus), out=w)
    np.minimum(x, w, out=x)  # mod q: x - q wraps above x unless x >= q
    return x


def windows_end(offset: int, count: int, bits: int) -> int:
    """One past the last byte that the 8-byte windows over a packed block read."""
    values, nbytes = group(bits)
    return offset + (count // values - 1) * nbytes + (((values - 1) * bits) >> 3) + 8


def readable(payload: bytes, end: int) -> np.ndarray:
    """``payload`` as uint8, without a copy unless the last window (ending at ``end``) reads past it."""
    if end <= len(payload):
        return np.frombuffer(payload, dtype=np.uint8)
    buf = np.zeros(end, dtype=np.uint8)
    buf[: len(payload)] = np.frombuffer(payload, dtype=np.uint8)
    return buf


def add_packed(sums: np.ndarray, buf: np.ndarray, offset: int, count: int, bits: int) -> None:
    """``sums += `` the packed block at ``buf[offset:]``, in place (``sums``: :func:`by_phase`, uint64).

    High bits above ``bits`` are left to wrap: carries only move upwards, so the low ``bits`` bits of
    the uint64 sum are the sum mod 2**bits; :func:`natural_order` masks them off.
    """
    tmp = np.empty(sums.shape[1], dtype=np.uint64)
    for j, (view, shift) in enumerate(phase_views(buf, offset, count, bits)):
        if shift:
            np.right_shift(view, _U64(shift), out=tmp)
            np.add(sums[j], tmp, out=sums[j])
        else:
            np.add(sums[j], view, out=sums[j])


def by_phase(flat: np.ndarray, bits: int) -> np.ndarray:
    """A flat accumulator section as the (phases, groups) view that :func:`add_packed` adds into."""
    return flat.reshape(group(bits)[0], -1)


def natural_order(by_phase_sums: np.ndarray, bits: int) -> np.ndarray:
    """Sums stored by phase back in natural order, reduced mod 2**bits."""
    return by_phase_sums.T.reshape(-1) & _U64((1 << bits) - 1)



def check_ring(scheme: str, n: int, q: int) -> None:
    """The ring every SEAL scheme here uses: degree n a power of two in 2048..32768, one 40..61-bit
    prime q = 1 mod 2n within MAX_GAP below a power of two (what modulus switching by shifts needs)."""
    if n < 2048 or n > 32768 or n & (n - 1):
        raise CryptoError(f"{scheme} poly_modulus_degree {n}: must be a power of two in 2048..32768")
    k = q.bit_length()
    if not 40 <= k <= 61 or q % (2 * n) != 1:
        raise CryptoError(f"{scheme} modulus {q}: must be a 40..61-bit prime equal to 1 mod {2 * n}")
    if (1 << k) - q >= MAX_GAP:
        raise CryptoError(f"{scheme} modulus {q}: must lie within 2**32 below a power of two")


__all__ = [
    "MAX_BITS",
    "MAX_GAP",
    "MIN_BITS",
    "add_packed",
    "by_phase",
    "check_ring",
    "compress",
    "decompress",
    "group",
    "natural_order",
    "pack",
    "packed_bytes",
    "phase_views",
    "readable",
    "unpack",
    "windows_end",
]
