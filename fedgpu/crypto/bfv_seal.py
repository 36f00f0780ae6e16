"""SEAL (through TenSEAL's ``tenseal.sealapi``) for the ``bfv8`` scheme's nodes and driver.

The aggregator never imports this module. SEAL does what needs keys or the ring: key generation,
public-key encryptions of zero (the node adds its message after the modulus switch, see
:mod:`fedgpu.crypto.bfv_format`), and decryption. BFV ciphertexts stay in coefficient form, so
neither side transforms to or from NTT form.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from fedgpu.crypto.bfv_format import Bfv8Params
from fedgpu.crypto.seal_io import (
    Scratch,
    ciphertext_address,
    ciphertext_prefix,
    guard,
    load_bytes,
    plaintext_address,
    save_bytes,
    seal_version,
)
from fedgpu.errors import CryptoError

log = logging.getLogger(__name__)


class BfvSealContext:
    """SEAL objects for one :class:`Bfv8Params`: context and a scratch directory."""

    def __init__(self, params: Bfv8Params) -> None:
        self.params = params
        self.scratch = Scratch()
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.BFV)
        parms.set_poly_modulus_degree(params.poly_modulus_degree)
        parms.set_coeff_modulus([seal.Modulus(params.modulus)])
        parms.set_plain_modulus(seal.Modulus(params.plain_modulus))
        # One data prime and no special prime: additions need no relinearization or Galois keys.
        # expand_mod_chain=False keeps that single level; TC128 makes SEAL refuse insecure sizes.
        self.context = guard(
            "cannot build a SEAL context", lambda: seal.SEALContext(parms, False, seal.SEC_LEVEL_TYPE.TC128)
        )
        if not self.context.parameters_set():
            raise CryptoError(f"SEAL rejects the bfv8 parameters: {self.context.parameters_error_message()}")
        self.parms_id = list(self.context.first_parms_id())
        version = seal_version(parms, self.scratch)
        self._ciphertext_prefix = ciphertext_prefix(version, self.parms_id, params.poly_modulus_degree, False, 1.0)

    def ciphertext_from_coefficients(self, coefficients: np.ndarray) -> Any:
        """A SEAL BFV ciphertext from [c0 | c1] in coefficient form, each < q (SEAL checks that on load)."""
        ct = seal.Ciphertext()
        data = self._ciphertext_prefix + np.ascontiguousarray(coefficients, dtype="<u8").tobytes()
        load_bytes(ct, self.context, data, self.scratch, "ciphertext", "bfv8")
        return ct


def generate_keys(sc: BfvSealContext) -> tuple[bytes, bytes]:
    """(public key, secret key) in SEAL's serialization."""
    keygen = seal.KeyGenerator(sc.context)
    public = seal.PublicKey()
    keygen.create_public_key(public)
    return save_bytes(public, sc.scratch, "public"), save_bytes(keygen.secret_key(), sc.scratch, "secret")


class BfvSealEncryptor:
    """Public-key encryptions of zero in coefficient form; the caller adds the message."""

    def __init__(self, sc: BfvSealContext, public_key: bytes) -> None:
        self.sc = sc
        pk = seal.PublicKey()
        load_bytes(pk, sc.context, public_key, sc.scratch, "public key", "bfv8")
        self.encryptor = seal.Encryptor(sc.context, pk)
        self._warned = False

    def encrypt_zero(self, c0: np.ndarray, c1: np.ndarray) -> None:
        """Write c0 and c1 of a fresh encryption of zero into two contiguous uint64 arrays of length N."""
        ct = seal.Ciphertext()
        guard("cannot encrypt", lambda: self.encryptor.encrypt_zero(ct))
        if ct.is_ntt_form():  # not for BFV in any SEAL release; refuse rather than send garbage
            raise CryptoError("SEAL returned a BFV ciphertext in NTT form")
        n = c0.size
        address = ciphertext_address(ct, 2 * n)
        if address is not None:
            ctypes.memmove(c0.ctypes.data, address, n * 8)
            ctypes.memmove(c1.ctypes.data, address + n * 8, n * 8)
            return
        if not self._warned:
            log.warning("SEAL ciphertext layout not recognised; reading coefficients one by one (slow)")
            self._warned = True
        c0[:] = np.fromiter((ct[i] for i in range(n)), dtype=np.uint64, count=n)
        c1[:] = np.fromiter((ct[n + i] for i in range(n)), dtype=np.uint64, count=n)


class BfvSealDecryptor:
    def __init__(self, sc: BfvSealContext, secret_key: bytes) -> None:
        self.sc = sc
        sk = seal.SecretKey()
        load_bytes(sk, sc.context, secret_key, sc.scratch, "secret key", "bfv8")
        self.decryptor = seal.Decryptor(sc.context, sk)

    def decrypt(self, coefficients: np.ndarray) -> np.ndarray:
        """[c0 | c1] in coefficient form -> the N plaintext coefficients mod t (uint64)."""
        ct = self.sc.ciphertext_from_coefficients(coefficients)
        pt = seal.Plaintext()
        guard("cannot decrypt", lambda: self.decryptor.decrypt(ct, pt))
        return plaintext_coefficients(pt, self.sc.params.poly_modulus_degree)

    def noise_budget(self, coefficients: np.ndarray) -> int:
        """SEAL's invariant noise budget in bits: decryption is exact while it is above 0."""
        ct = self.sc.ciphertext_from_coefficients(coefficients)
        return int(guard("cannot measure noise", lambda: self.decryptor.invariant_noise_budget(ct)))


def plaintext_coefficients(pt: Any, n: int) -> np.ndarray:
    """A plaintext's N coefficients (SEAL drops trailing zeros; they come back as zeros)."""
    out = np.zeros(n, dtype=np.uint64)
    count = int(pt.coeff_count())
    if count > n:
        raise CryptoError(f"a bfv8 plaintext of {count} coefficients, expected at most {n}")
    if count == 0:
        return out
    address = plaintext_address(pt)
    if address is not None:
        ctypes.memmove(out.ctypes.data, address, count * 8)
    else:
        out[:count] = np.fromiter((pt[i] for i in range(count)), dtype=np.uint64, count=count)
    return out


__all__ = ["BfvSealContext", "BfvSealDecryptor", "BfvSealEncryptor", "generate_keys", "plaintext_coefficients"]
