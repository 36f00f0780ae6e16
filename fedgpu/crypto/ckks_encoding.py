"""CKKS encoding of float64 values into plaintext polynomials, in numpy, batched over ciphertexts.

Why not SEAL's ``CKKSEncoder.encode``: through sealapi it takes a Python list per ciphertext and
returns an NTT-form plaintext, which costs a third of a node's encryption time. The encoding is
public and deterministic, so doing it here changes no security property; the driver still decodes
with SEAL, and the tests check that the two agree.

Slot ``i`` of SEAL's CKKS encoder holds ``m(zeta**(3**i)) / scale`` with ``zeta = exp(i*pi/N)``, and
the conjugate slot holds ``m(zeta**-(3**i))``. Those exponents are exactly the odd residues mod 2N,
so with ``v_t = m(zeta**(2t+1))`` for all t, ``m_k = Re(zeta**-k * FFT(v)_k / N)``.
"""

from __future__ import annotations

import numpy as np


class SlotEncoder:
    """Complex packing: values ``(2i, 2i+1)`` of a ciphertext are the real and imaginary part of slot i."""

    def __init__(self, poly_modulus_degree: int, modulus: int, scale: float) -> None:
        n = poly_modulus_degree
        self.n, self.modulus, self.scale = n, modulus, scale
        exponents = np.array([pow(3, i, 2 * n) for i in range(n // 2)], dtype=np.int64)
        # position in v of each entry of [slots | conjugate slots]
        self._order = np.empty(n, dtype=np.int64)
        self._order[(exponents - 1) // 2] = np.arange(n // 2)
        self._order[(2 * n - exponents - 1) // 2] = n // 2 + np.arange(n // 2)
        # m_k = Re(FFT(v)_k * zeta**-k) / N; the scale is folded in here to save a pass over the data.
        twist = np.exp(-1j * np.pi * np.arange(n) / n) * (scale / n)
        self._twist = twist

    def encode(self, values: np.ndarray) -> np.ndarray:
        """(num_ciphertexts, N) float64 -> (num_ciphertexts, N) uint64 coefficients mod q.

        Rounding to integers happens at ``scale``, as in SEAL. Like SEAL this works in float64, so a
        coefficient near the headroom limit (2**59) is off by up to ~2**6, far below encryption noise.
        """
        z = np.ascontiguousarray(values, dtype=np.float64).view(np.complex128)
        spectrum = np.fft.fft(np.concatenate((z, np.conj(z)), axis=1)[:, self._order], axis=1)
        spectrum *= self._twist
        ints = np.rint(spectrum.real).astype(np.int64)
        # mod q: negatives wrap to 2**64 + m; adding q (masked by the sign) gives q + m.
        out = ints.view(np.uint64)
        out += (ints >> 63).view(np.uint64) & np.uint64(self.modulus)
        return out


__all__ = ["SlotEncoder"]
