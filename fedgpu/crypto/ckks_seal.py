"""SEAL (through TenSEAL's ``tenseal.sealapi``) for the ``ckks`` scheme's nodes and driver.

The aggregator never imports this module. The shared plumbing (file-only save/load, uncompressed
ciphertext writes, in-place coefficient reads, error translation) is in :mod:`fedgpu.crypto.seal_io`:

* the driver rebuilds a ciphertext by writing SEAL's *uncompressed* serialization and loading it,
  which lets SEAL check it;
* a node reads a fresh ciphertext's coefficients in place (:func:`_coefficient_address`), after
  checking the object's layout against sealapi's own accessors, and falls back to one accessor call
  per coefficient (about 20x slower, same result) when the check fails.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from fedgpu.crypto.ckks_format import CkksParams
from fedgpu.crypto.seal_io import Scratch as _Scratch
from fedgpu.crypto.seal_io import ciphertext_address as _coefficient_address
from fedgpu.crypto.seal_io import ciphertext_prefix, load_bytes, save_bytes, seal_version
from fedgpu.crypto.seal_io import guard as _guard
from fedgpu.errors import CryptoError

log = logging.getLogger(__name__)


class SealContext:
    """SEAL objects for one :class:`CkksParams`: context, encoder, evaluator and a scratch directory."""

    def __init__(self, params: CkksParams) -> None:
        self.params = params
        self.scratch = _Scratch()
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(params.poly_modulus_degree)
        parms.set_coeff_modulus([seal.Modulus(params.modulus)])
        # One data prime and no special prime: additions need no relinearization or Galois keys.
        # expand_mod_chain=False keeps that single level; TC128 makes SEAL refuse insecure sizes.
        self.context = _guard(
            "cannot build a SEAL context", lambda: seal.SEALContext(parms, False, seal.SEC_LEVEL_TYPE.TC128)
        )
        if not self.context.parameters_set():
            raise CryptoError(f"SEAL rejects the ckks parameters: {self.context.parameters_error_message()}")
        self.encoder = seal.CKKSEncoder(self.context)
        self.evaluator = seal.Evaluator(self.context)
        self.parms_id = list(self.context.first_parms_id())
        version = seal_version(parms, self.scratch)  # write loadable headers for this SEAL build
        self._ciphertext_prefix = ciphertext_prefix(version, self.parms_id, params.poly_modulus_degree, False, params.scale)

    def load_ciphertext(self, coefficients: np.ndarray) -> Any:
        """A SEAL ciphertext in coefficient form from [c0 | c1], each < q, loaded (and so checked) by SEAL.

        Layout written: SEAL header, parms_id, is_ntt_form=0, size=2, N, coeff_modulus_size=1, scale,
        correction_factor=1, then the coefficient array as an uncompressed DynArray (its own header,
        its length, the uint64 values).
        """
        ct = seal.Ciphertext()
        data = self._ciphertext_prefix + np.ascontiguousarray(coefficients, dtype="<u8").tobytes()
        load_bytes(ct, self.context, data, self.scratch, "ciphertext")
        return ct

    def ciphertext_from_coefficients(self, coefficients: np.ndarray) -> Any:
        """A SEAL ciphertext (NTT form, ready to decrypt) from [c0 | c1] in coefficient form, each < q."""
        ct = self.load_ciphertext(coefficients)
        _guard("cannot move a ciphertext to NTT form", lambda: self.evaluator.transform_to_ntt_inplace(ct))
        return ct


def generate_keys(sc: SealContext) -> tuple[bytes, bytes]:
    """(public key, secret key) in SEAL's serialization."""
    keygen = seal.KeyGenerator(sc.context)
    public = seal.PublicKey()
    keygen.create_public_key(public)
    return save_bytes(public, sc.scratch, "public"), save_bytes(keygen.secret_key(), sc.scratch, "secret")


class SealEncryptor:
    """Public-key encryptions of zero, returned in coefficient form; the caller adds the message."""

    def __init__(self, sc: SealContext, public_key: bytes) -> None:
        self.sc = sc
        pk = seal.PublicKey()
        load_bytes(pk, sc.context, public_key, sc.scratch, "public key")
        self.encryptor = seal.Encryptor(sc.context, pk)
        self._warned = False

    def encrypt_zero(self, c0: np.ndarray, c1: np.ndarray) -> None:
        """Write c0 and c1 of a fresh encryption of zero into two contiguous uint64 arrays of length N.

        Adding a coefficient-form plaintext to c0 afterwards is exactly what SEAL's ``encrypt`` does
        (in NTT form), so the result is an ordinary public-key CKKS ciphertext.
        """
        sc = self.sc
        ct = seal.Ciphertext()
        _guard("cannot encrypt", lambda: self.encryptor.encrypt_zero(ct))
        # Coefficient form: there, rounding coefficients for the wire is only a small added error.
        sc.evaluator.transform_from_ntt_inplace(ct)
        n = c0.size
        address = _coefficient_address(ct, 2 * n)
        if address is not None:
            ctypes.memmove(c0.ctypes.data, address, n * 8)
            ctypes.memmove(c1.ctypes.data, address + n * 8, n * 8)
            return
        if not self._warned:
            log.warning("SEAL ciphertext layout not recognised; reading coefficients one by one (slow)")
            self._warned = True
        c0[:] = np.fromiter((ct[i] for i in range(n)), dtype=np.uint64, count=n)
        c1[:] = np.fromiter((ct[n + i] for i in range(n)), dtype=np.uint64, count=n)


class SealDecryptor:
    """Decrypts [c0 | c1] arrays; the driver's sums go through one reused ciphertext written in place.

    Loading each ciphertext through a scratch file was 30% of a sum's decryption. Instead the
    coefficients are copied into a coefficient-form ciphertext made once (its layout checked like a
    node's reads, :func:`_coefficient_address`), and SEAL's ``transform_to_ntt`` copies it to NTT form.
    SEAL's load would check that every coefficient is below q; the callers' arrays are reduced mod q
    (``coefficients.decompress``) and this checks it again with one numpy pass. When the layout check
    fails, every ciphertext is loaded from its file, as before (same result).
    """

    def __init__(self, sc: SealContext, secret_key: bytes) -> None:
        self.sc = sc
        sk = seal.SecretKey()
        load_bytes(sk, sc.context, secret_key, sc.scratch, "secret key")
        self.decryptor = seal.Decryptor(sc.context, sk)
        self._count = 2 * sc.params.poly_modulus_degree
        self._template = sc.load_ciphertext(np.zeros(self._count, dtype=np.uint64))
        self._address = _coefficient_address(self._template, self._count)
        self._lock = threading.Lock()  # one template: one decryption at a time writes it

    def _ntt_ciphertext(self, coefficients: np.ndarray) -> Any:
        sc = self.sc
        if self._address is None:
            return sc.ciphertext_from_coefficients(coefficients)
        coefficients = np.ascontiguousarray(coefficients, dtype=np.uint64)
        if coefficients.size != self._count or int(coefficients.max()) >= sc.params.modulus:
            raise CryptoError(f"a ckks ciphertext is {self._count} coefficients below q")
        ct = seal.Ciphertext()
        with self._lock:
            ctypes.memmove(self._address, coefficients.ctypes.data, self._count * 8)
            _guard("cannot move a ciphertext to NTT form", lambda: sc.evaluator.transform_to_ntt(self._template, ct))
        return ct

    def decrypt(self, coefficients: np.ndarray) -> np.ndarray:
        """[c0 | c1] in coefficient form -> the N reals of its N/2 complex slots."""
        sc = self.sc
        ct = self._ntt_ciphertext(coefficients)
        pt = seal.Plaintext()
        _guard("cannot decrypt", lambda: self.decryptor.decrypt(ct, pt))
        slots = sc.encoder.decode_complex(pt)
        # fromiter: a third faster than asarray on SEAL's list of Python complex numbers
        return np.fromiter(slots, dtype=np.complex128, count=len(slots)).view(np.float64)  # (re, im) pairs: the interleaved values


__all__ = ["SealContext", "SealDecryptor", "SealEncryptor", "generate_keys"]
