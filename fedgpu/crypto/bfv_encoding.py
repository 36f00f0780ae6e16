"""bfv8 encoding: unbiased stochastic rounding to integer steps, packed ``lanes`` to a coefficient.

A value ``v`` becomes ``floor(v / step + U)`` with ``U`` uniform on [0, 1): its expectation is exactly
``v / step`` (for ``|v| <= clip``), so sums of many rounded updates are unbiased and their error grows
like sqrt(n) steps (at most n steps). ``U`` comes from the encryptor's seeded generator, never from
SEAL's: the dither is no secret (the aggregator knows the task's seed), and SEAL's encryption
randomness stays the operating system's.

Lane ``j`` of a coefficient holds its signed integer times ``2**(j * lane_bits)``; the coefficient is
their sum mod t (two's complement). A sum of coefficients is the coefficient of the lane sums, which
decode one by one from the lowest lane as long as each stays inside its signed lane range.
"""

from __future__ import annotations

import numpy as np

from fedgpu.crypto.bfv_format import Bfv8Params
from fedgpu.errors import CryptoError


class LaneEncoder:
    """Chunks of float64 values (the last being the weight slot) to and from coefficients mod t."""

    def __init__(self, params: Bfv8Params) -> None:
        self.p = params
        self._mask = np.uint64(params.plain_modulus - 1)

    def encode(self, values: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """(num_ciphertexts * N uint64 coefficients < t, how many values were clipped)."""
        p = self.p
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        if not 1 <= flat.size <= p.values_per_chunk:
            raise CryptoError(f"a bfv8 chunk holds 1..{p.values_per_chunk} values, got {flat.size}")
        if not np.isfinite(flat).all():
            raise CryptoError("cannot encrypt NaN or infinite values")
        weight = float(flat[-1])
        if abs(weight) > p.max_weight:
            raise CryptoError(f"weight slot {weight:.6g} exceeds the bfv8 limit {p.max_weight:.6g} (max_summands of them must fit)")
        num_updates = flat.size - 1
        num_coefficients = -(-num_updates // p.lanes)
        scaled = np.zeros(num_coefficients * p.lanes, dtype=np.float64)
        np.divide(flat[:-1], p.step, out=scaled[:num_updates])
        clipped = int(np.count_nonzero(np.abs(scaled[:num_updates]) > p.levels))
        np.clip(scaled, -p.levels, p.levels, out=scaled)
        scaled[:num_updates] += rng.random(num_updates)
        np.floor(scaled, out=scaled)
        ints = scaled.astype(np.int64).reshape(num_coefficients, p.lanes)
        packed = ints[:, 0].copy()
        for j in range(1, p.lanes):
            packed += ints[:, j] << np.int64(j * p.lane_bits)
        out = np.zeros(p.num_ciphertexts(flat.size) * p.poly_modulus_degree, dtype=np.uint64)
        out[:num_coefficients] = packed.view(np.uint64) & self._mask  # mod t, two's complement
        out[num_coefficients] = round(weight * 2**p.weight_bits) % p.plain_modulus
        return out, clipped

    def decode(self, coefficients: np.ndarray, num_values: int) -> np.ndarray:
        """Coefficients mod t of a (summed) chunk -> its ``num_values`` float64 values."""
        p = self.p
        num_updates = num_values - 1
        num_coefficients = -(-num_updates // p.lanes)
        t = np.int64(p.plain_modulus)
        centred = coefficients[: num_coefficients + 1].astype(np.int64)
        centred -= (centred >= t // 2) * t
        out = np.empty(num_values, dtype=np.float64)
        out[-1] = float(centred[num_coefficients]) / 2**p.weight_bits
        rest = centred[:num_coefficients]
        lanes = np.empty((num_coefficients, p.lanes), dtype=np.int64)
        half, mask, width = np.int64(1 << (p.lane_bits - 1)), np.int64((1 << p.lane_bits) - 1), np.int64(p.lane_bits)
        for j in range(p.lanes):
            lanes[:, j] = ((rest + half) & mask) - half
            rest = (rest - lanes[:, j]) >> width
        np.multiply(lanes.reshape(-1)[:num_updates], p.step, out=out[:-1])
        return out


__all__ = ["LaneEncoder"]
