"""The ``bfv8`` scheme, the bandwidth mode: 8-bit stochastic quantisation packed into public-key BFV.

* The job driver makes a :class:`Bfv8KeyPair` and alone holds the secret key.
* A node gets ``params`` and ``public_material`` (the public key) and builds a :class:`Bfv8Encryptor`,
  seeded from its task so that replicated tasks round alike; it never holds a secret key.
* The aggregator gets ``params`` only and builds a :class:`Bfv8Adder` (numpy only, no SEAL, no key).

4.54 bytes per value on the wire against ckks's 13.5, for a quantisation error of less than one step
(``clip / 127``) per summed update. Parameters, payload format, carry bound and noise budget are in
:mod:`fedgpu.crypto.bfv_format`; the rounding and packing in :mod:`fedgpu.crypto.bfv_encoding`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedgpu.crypto.bfv_encoding import LaneEncoder
from fedgpu.crypto.bfv_format import PRESETS, Bfv8Params, decode_payload, encode_payload
from fedgpu.crypto.coefficients import compress, decompress
from fedgpu.crypto.key_files import load_key_files, save_key_files
from fedgpu.errors import CryptoError, ProtocolError

if TYPE_CHECKING:
    from fedgpu.crypto.bfv_seal import BfvSealContext
    from fedgpu.crypto.zero_pool import ZeroSource

log = logging.getLogger(__name__)

# Spawn key that separates the quantisation dither from any other stream drawn from the same seed.
_DITHER_STREAM = 0x62667638  # "bfv8"


def _seal_context(params: Bfv8Params) -> BfvSealContext:
    from fedgpu.crypto.bfv_seal import BfvSealContext

    return BfvSealContext(params)


def dither_rng(seed: int | None) -> np.random.Generator:
    """The generator of the rounding dither: from ``seed`` (the task's) when given, else from the OS."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_DITHER_STREAM,)))


def bfv8_zero_source(params: bytes, public_material: bytes) -> ZeroSource:
    """SEAL's public-key BFV encryptions of zero under ``public_material`` (what a :class:`ZeroPool` wraps)."""
    from fedgpu.crypto.bfv_seal import BfvSealEncryptor

    return BfvSealEncryptor(_seal_context(Bfv8Params.from_bytes(params)), public_material)


class Bfv8Encryptor:
    """Node side: quantises and encrypts chunks under the driver's public key. Holds no secret.

    ``seed`` drives the stochastic rounding only (see :mod:`fedgpu.crypto.bfv_encoding`); SEAL's
    encryption randomness always comes from the operating system.
    """

    def __init__(self, params: bytes, public_material: bytes, seed: int | None = None, zeros: ZeroSource | None = None) -> None:
        self.params = Bfv8Params.from_bytes(params)
        self.values_per_chunk = self.params.values_per_chunk
        self._seal = zeros if zeros is not None else bfv8_zero_source(params, public_material)
        self._encoder = LaneEncoder(self.params)
        self._rng = dither_rng(seed)
        self.clipped = 0  # values clipped to +-clip so far; each such value's rounding is biased
        self.encrypted = 0

    def encrypt(self, values: np.ndarray) -> bytes:
        p = self.params
        message, clipped = self._encoder.encode(values, self._rng)
        num_values = np.asarray(values).size
        self._note_clipping(clipped, num_values)
        n = p.poly_modulus_degree
        num_ct = message.size // n
        c0 = np.empty((num_ct, n), dtype=np.uint64)
        c1 = np.empty((num_ct, n), dtype=np.uint64)
        for i in range(num_ct):
            self._seal.encrypt_zero(c0[i], c1[i])
        y0 = compress(c0.reshape(-1), p.modulus, p.c0_bits)
        # m * 2**c0_bits / t is an integer: the scaled message is exact after the switch.
        message <<= np.uint64(p.c0_bits - p.plain_bits)
        y0 += message
        y0 &= np.uint64((1 << p.c0_bits) - 1)
        y1 = compress(c1.reshape(-1), p.modulus, p.c1_bits)
        return encode_payload(p, num_values, 1, y0, y1)

    def _note_clipping(self, clipped: int, num_values: int) -> None:
        if clipped and not self.clipped:
            log.info(
                "bfv8: %d of %d values were beyond the clip range +-%g and were clipped (biased); "
                "a job with larger updates needs bfv8 parameters with a larger clip",
                clipped, num_values, self.params.clip,
            )
        self.clipped += clipped
        self.encrypted += num_values


class Bfv8Decryptor:
    """Driver side: decrypts a payload, usually the aggregator's sum of many, to float64 values."""

    def __init__(self, params: bytes, secret_key: bytes) -> None:
        from fedgpu.crypto.bfv_seal import BfvSealDecryptor

        self.params = Bfv8Params.from_bytes(params)
        self._seal = BfvSealDecryptor(_seal_context(self.params), secret_key)
        self._encoder = LaneEncoder(self.params)

    def _ciphertexts(self, payload: bytes, num_values: int) -> list[np.ndarray]:
        p = self.params
        header, y0, y1 = decode_payload(p, payload)
        if header.num_values != num_values:
            raise ProtocolError(f"bfv8 payload holds {header.num_values} values, expected {num_values}")
        n = p.poly_modulus_degree
        c0 = decompress(y0, p.modulus, p.c0_bits).reshape(-1, n)
        c1 = decompress(y1, p.modulus, p.c1_bits).reshape(-1, n)
        return [np.concatenate((c0[i], c1[i])) for i in range(header.num_ciphertexts)]

    def decrypt(self, payload: bytes, num_values: int) -> np.ndarray:
        n = self.params.poly_modulus_degree
        cts = self._ciphertexts(payload, num_values)
        coefficients = np.empty(len(cts) * n, dtype=np.uint64)
        for i, ct in enumerate(cts):
            coefficients[i * n : (i + 1) * n] = self._seal.decrypt(ct)
        return self._encoder.decode(coefficients, num_values)

    def noise_budget(self, payload: bytes, num_values: int) -> int:
        """Smallest SEAL invariant noise budget (bits) over the payload's ciphertexts: > 0 decrypts exactly."""
        return min(self._seal.noise_budget(ct) for ct in self._ciphertexts(payload, num_values))


class Bfv8KeyPair:
    """The job driver's keys: the secret key never leaves this object except into :meth:`save`.

    ``scheme`` is the registered name the parameters came from ("bfv8" or "bfv8-32", see
    ``bfv_format.PRESETS``); it names the key files and the job's encryption context.
    """

    def __init__(self, params: Bfv8Params, public_key: bytes, secret_key: bytes, scheme: str = "bfv8") -> None:
        self._params = params
        self._public_key = public_key
        self._secret_key = secret_key
        self.scheme = scheme
        self.values_per_chunk = params.values_per_chunk

    @classmethod
    def generate(cls, params: Bfv8Params | None = None, scheme: str = "bfv8") -> Bfv8KeyPair:
        """Fresh keys for ``params``, by default the preset of ``scheme``."""
        from fedgpu.crypto.bfv_seal import generate_keys

        if params is None:
            if scheme not in PRESETS:
                raise CryptoError(f"no bfv8 parameter set named {scheme!r}; known: {', '.join(PRESETS)}")
            params = PRESETS[scheme]
        public_key, secret_key = generate_keys(_seal_context(params))
        return cls(params, public_key, secret_key, scheme)

    @property
    def public_material(self) -> bytes:
        """What nodes need: the public key (SEAL format, which names the parameters' hash)."""
        return self._public_key

    @property
    def params(self) -> bytes:
        """What the aggregator needs: parameters only, no key of any kind."""
        return self._params.to_bytes()

    def decryptor(self) -> Bfv8Decryptor:
        return Bfv8Decryptor(self.params, self._secret_key)

    def save(self, directory: Path) -> None:
        """Write parameters, public key and secret key; the secret key file is owner-only (0o600)."""
        save_key_files(directory, self.scheme, self.params, self._public_key, self._secret_key)

    @classmethod
    def load(cls, directory: Path, scheme: str = "bfv8") -> Bfv8KeyPair:
        """Read what :meth:`save` wrote; refuses a secret key file that others can read, like ssh."""
        params, public_key, secret_key = load_key_files(directory, scheme)
        pair = cls(Bfv8Params.from_bytes(params), public_key, secret_key, scheme)
        pair._check_match()
        return pair

    def _check_match(self) -> None:
        """A public key from one save and a secret key from another decrypt to garbage: say so at load."""
        probe = np.array([0.5, -0.25, 0.125, 1.0])
        payload = Bfv8Encryptor(self.params, self._public_key, seed=0).encrypt(probe)
        if not np.allclose(self.decryptor().decrypt(payload, probe.size), probe, atol=self._params.step):
            raise CryptoError("bfv8 public key and secret key do not belong together")


__all__ = [
    "Bfv8Decryptor",
    "Bfv8Encryptor",
    "Bfv8KeyPair",
    "bfv8_zero_source",
    "dither_rng",
]
