"""The ``ckks`` scheme: addition-only CKKS with public-key encryption, for untrusted aggregators.

* The job driver makes a :class:`CkksKeyPair` and alone holds the secret key.
* A node gets ``params`` and ``public_material`` (the public key) and builds a :class:`CkksEncryptor`.
* The aggregator gets ``params`` only and builds a :class:`~fedgpu.crypto.ckks_format.CkksAdder`, which is numpy code that never
  imports SEAL or TenSEAL (this module imports them only when a key or encryptor is made).

Parameters, payload format and error budget are in :mod:`fedgpu.crypto.ckks_format`; the threat model
is in docs/threat-model.md.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedgpu.crypto.ckks_encoding import SlotEncoder
from fedgpu.crypto.ckks_format import CkksParams, compress, decode_payload, decompress, encode_payload
from fedgpu.errors import CryptoError, ProtocolError, StorageError

if TYPE_CHECKING:
    from fedgpu.crypto.ckks_seal import SealContext

PARAMS_FILE = "ckks.params"
PUBLIC_KEY_FILE = "ckks.public"
SECRET_KEY_FILE = "ckks.secret"


def _seal_context(params: CkksParams) -> SealContext:
    from fedgpu.crypto.ckks_seal import SealContext

    return SealContext(params)


class CkksEncryptor:
    """Node side: encrypts chunks under the driver's public key. Holds no secret."""

    def __init__(self, params: bytes, public_material: bytes) -> None:
        from fedgpu.crypto.ckks_seal import SealEncryptor

        self.params = CkksParams.from_bytes(params)
        self.values_per_chunk = self.params.values_per_chunk
        self._seal = SealEncryptor(_seal_context(self.params), public_material)
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
            raise CryptoError(f"|value| {peak:.3g} exceeds the ckks headroom {p.max_abs_sum:.3g}")
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
        c0 = decompress(y0, p.modulus, p.c0_bits).reshape(-1, n)
        c1 = decompress(y1, p.modulus, p.c1_bits).reshape(-1, n)
        out = np.empty(header.num_ciphertexts * n, dtype=np.float64)
        for i in range(header.num_ciphertexts):
            out[i * n : (i + 1) * n] = self._seal.decrypt(np.concatenate((c0[i], c1[i])))
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
        directory = Path(directory)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write(directory / PARAMS_FILE, self.params, 0o644)
            _write(directory / PUBLIC_KEY_FILE, self._public_key, 0o644)
            _write(directory / SECRET_KEY_FILE, self._secret_key, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot write ckks keys to {directory}: {exc}") from exc

    @classmethod
    def load(cls, directory: Path) -> CkksKeyPair:
        """Read what :meth:`save` wrote; refuses a secret key file that others can read, like ssh."""
        directory = Path(directory)
        secret_path = directory / SECRET_KEY_FILE
        try:
            mode = stat.S_IMODE(secret_path.stat().st_mode)
            params = (directory / PARAMS_FILE).read_bytes()
            public_key = (directory / PUBLIC_KEY_FILE).read_bytes()
            secret_key = secret_path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read ckks keys from {directory}: {exc}") from exc
        if mode & 0o077:
            raise CryptoError(f"{secret_path} has mode {mode:o}: run chmod 600 on it, others must not read it")
        pair = cls(CkksParams.from_bytes(params), public_key, secret_key)
        pair._check_match()
        return pair

    def _check_match(self) -> None:
        """A public key from one save and a secret key from another decrypt to garbage: say so at load."""
        probe = np.linspace(-1.0, 1.0, 8)
        payload = CkksEncryptor(self.params, self._public_key).encrypt(probe)
        if not np.allclose(self.decryptor().decrypt(payload, probe.size), probe, atol=1e-4):
            raise CryptoError("ckks public key and secret key do not belong together")


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file created with ``mode`` (never wider), then rename over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is ignored for an existing file
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


__all__ = [
    "CkksDecryptor",
    "CkksEncryptor",
    "CkksKeyPair",
    "PARAMS_FILE",
    "PUBLIC_KEY_FILE",
    "SECRET_KEY_FILE",
]
