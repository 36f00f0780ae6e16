"""The ``ckks`` scheme: addition-only CKKS with public-key encryption, for untrusted aggregators.

* The job driver makes a :class:`CkksKeyPair` and alone holds the secret key.
* A node gets ``params`` and ``public_material`` (the public key) and builds a :class:`CkksEncryptor`.
* The aggregator gets ``params`` only and builds a :class:`CkksAdder`, which is numpy code that never
  imports SEAL or TenSEAL (this module imports them only when a key or encryptor is made).

Parameters, payload format and error budget are in :mod:`fedgpu.crypto.ckks_format`; the threat model
is in docs/threat-model.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedgpu.crypto.ckks_encoding import SlotEncoder
from fedgpu.crypto.ckks_format import CkksParams, decode_payload, encode_payload
from fedgpu.crypto.coefficients import compress, decompress
from fedgpu.crypto.key_files import load_key_files, save_key_files
from fedgpu.errors import CryptoError, HeadroomExceeded, ProtocolError

if TYPE_CHECKING:
    from fedgpu.crypto.ckks_seal import SealContext
    from fedgpu.crypto.zero_pool import ZeroSource

PARAMS_FILE = "ckks.params"  # names that crypto.key_files gives the scheme's files
PUBLIC_KEY_FILE = "ckks.public"
SECRET_KEY_FILE = "ckks.secret"


def _seal_context(params: CkksParams) -> SealContext:
    from fedgpu.crypto.ckks_seal import SealContext

    return SealContext(params)


def ckks_zero_source(params: bytes, public_material: bytes) -> ZeroSource:
    """SEAL's public-key encryptions of zero under ``public_material`` (what a :class:`ZeroPool` wraps)."""
    from fedgpu.crypto.ckks_seal import SealEncryptor

    return SealEncryptor(_seal_context(CkksParams.from_bytes(params)), public_material)


class CkksEncryptor:
    """Node side: encrypts chunks under the driver's public key. Holds no secret."""

    def __init__(self, params: bytes, public_material: bytes, zeros: ZeroSource | None = None) -> None:
        self.params = CkksParams.from_bytes(params)
        self.values_per_chunk = self.params.values_per_chunk
        self._seal = zeros if zeros is not None else ckks_zero_source(params, public_material)
        self._encoder = SlotEncoder(self.params.poly_modulus_degree, self.params.modulus, self.params.scale)

    def encrypt(self, values: np.ndarray) -> bytes:
        p = self.params
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        if not 1 <= flat.size <= self.values_per_chunk:
            raise CryptoError(f"a ckks chunk holds 1..{self.values_per_chunk} values, got {flat.size}")
        if not np.isfinite(flat).all():
            raise CryptoError("cannot encrypt NaN or infinite values")
        peak = float(np.abs(flat).max())
        if peak > p.max_abs_sum:
            # Beyond this even a single payload wraps modulo q and decrypts to garbage.
            raise HeadroomExceeded(f"|value| {peak:.3g} exceeds the ckks headroom {p.max_abs_sum:.3g}")
        n = p.poly_modulus_degree
        num_ct = -(-flat.size // n)
        padded = np.zeros((num_ct, n), dtype=np.float64)
        padded.reshape(-1)[: flat.size] = flat
        message = self._encoder.encode(padded)
        c0 = np.empty((num_ct, n), dtype=np.uint64)
        c1 = np.empty((num_ct, n), dtype=np.uint64)
        for i in range(num_ct):
            self._seal.encrypt_zero(c0[i], c1[i])
        c0 += message  # both < q < 2**61: no uint64 overflow
        np.minimum(c0, c0 - np.uint64(p.modulus), out=c0)  # mod q: x - q wraps above x unless x >= q
        y0 = compress(c0.reshape(-1), p.modulus, p.c0_bits)
        y1 = compress(c1.reshape(-1), p.modulus, p.c1_bits)
        return encode_payload(p, flat.size, y0, y1)


class CkksDecryptor:
    """Driver side: decrypts a payload, usually the aggregator's sum of many."""

    def __init__(self, params: bytes, secret_key: bytes) -> None:
        from fedgpu.crypto.ckks_seal import SealDecryptor

        self.params = CkksParams.from_bytes(params)
        self._seal = SealDecryptor(_seal_context(self.params), secret_key)

    def decrypt(self, payload: bytes, num_values: int) -> np.ndarray:
        p = self.params
        header, y0, y1 = decode_payload(p, payload)
        if header.num_values != num_values:
            raise ProtocolError(f"ckks payload holds {header.num_values} values, expected {num_values}")
        n = p.poly_modulus_degree
        both = np.empty((header.num_ciphertexts, 2, n), dtype=np.uint64)  # [c0 | c1] of each ciphertext, contiguous
        both[:, 0] = decompress(y0, p.modulus, p.c0_bits).reshape(-1, n)
        both[:, 1] = decompress(y1, p.modulus, p.c1_bits).reshape(-1, n)
        out = np.empty(header.num_ciphertexts * n, dtype=np.float64)
        for i in range(header.num_ciphertexts):
            out[i * n : (i + 1) * n] = self._seal.decrypt(both[i].reshape(-1))
        return out[:num_values].copy()


class CkksKeyPair:
    """The job driver's keys: the secret key never leaves this object except into :meth:`save`."""

    scheme = "ckks"

    def __init__(self, params: CkksParams, public_key: bytes, secret_key: bytes) -> None:
        self._params = params
        self._public_key = public_key
        self._secret_key = secret_key
        self.values_per_chunk = params.values_per_chunk

    @classmethod
    def generate(cls, params: CkksParams | None = None) -> CkksKeyPair:
        from fedgpu.crypto.ckks_seal import generate_keys

        params = params or CkksParams()
        public_key, secret_key = generate_keys(_seal_context(params))
        return cls(params, public_key, secret_key)

    @property
    def public_material(self) -> bytes:
        """What nodes need: the public key (SEAL format, which names the parameters' hash)."""
        return self._public_key

    @property
    def params(self) -> bytes:
        """What the aggregator needs: parameters only, no key of any kind."""
        return self._params.to_bytes()

    def decryptor(self) -> CkksDecryptor:
        return CkksDecryptor(self.params, self._secret_key)

    def save(self, directory: Path) -> None:
        """Write parameters, public key and secret key; the secret key file is owner-only (0o600)."""
        save_key_files(directory, self.scheme, self.params, self._public_key, self._secret_key)

    @classmethod
    def load(cls, directory: Path) -> CkksKeyPair:
        """Read what :meth:`save` wrote; refuses a secret key file that others can read, like ssh."""
        params, public_key, secret_key = load_key_files(directory, cls.scheme)
        pair = cls(CkksParams.from_bytes(params), public_key, secret_key)
        pair._check_match()
        return pair

    def _check_match(self) -> None:
        """A public key from one save and a secret key from another decrypt to garbage: say so at load."""
        probe = np.linspace(-1.0, 1.0, 8)
        payload = CkksEncryptor(self.params, self._public_key).encrypt(probe)
        if not np.allclose(self.decryptor().decrypt(payload, probe.size), probe, atol=1e-4):
            raise CryptoError("ckks public key and secret key do not belong together")


__all__ = [
    "CkksDecryptor",
    "CkksEncryptor",
    "CkksKeyPair",
    "PARAMS_FILE",
    "PUBLIC_KEY_FILE",
    "SECRET_KEY_FILE",
    "ckks_zero_source",
]
