"""The one place that talks to SEAL (through TenSEAL's ``tenseal.sealapi``), for nodes and the driver.

The aggregator never imports this module. Every SEAL error is translated to :class:`CryptoError` here.

TenSEAL's sealapi moves keys and ciphertexts only through files and always zstd-compresses, and it
has no bulk accessor for a ciphertext's coefficients. So:

* keys travel in SEAL's own format (written once per job; size and speed do not matter);
* the driver rebuilds a ciphertext by writing SEAL's *uncompressed* serialization (documented in
  SEAL's ``serialization.h`` / ``Ciphertext::save_members``) and loading it, which lets SEAL check it;
* a node reads a fresh ciphertext's coefficients in place (:func:`_coefficient_address`), after
  checking the object's layout against sealapi's own accessors, and falls back to one accessor call
  per coefficient (about 20x slower, same result) when the check fails.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tenseal.sealapi as seal

from fedgpu.crypto.ckks_format import CkksParams
from fedgpu.errors import CryptoError

log = logging.getLogger(__name__)

# Errors a SEAL call raises through pybind11 for bad input (std::invalid_argument, logic_error, ...).
_SEAL_ERRORS = (ValueError, RuntimeError, IndexError, TypeError, OverflowError)

_SEAL_MAGIC = 0xA15E
_SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr mode, reserved, total size
_COMPR_NONE = 0

_T = TypeVar("_T")


def _guard(what: str, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except _SEAL_ERRORS as exc:
        raise CryptoError(f"{what}: {exc}") from exc


class _Scratch:
    """A private (0o700) temporary directory for sealapi's file-only save/load; removed with its owner."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="fedgpu-ckks-"))
        self._finalizer = weakref.finalize(self, _remove_tree, self.path)

    def file(self, name: str) -> str:
        return str(self.path / f"{name}-{threading.get_ident()}")


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink(missing_ok=True)
    path.rmdir()


def _save_bytes(obj: Any, scratch: _Scratch, name: str) -> bytes:
    """SEAL's serialization of ``obj`` (keys, parameters), via a scratch file that is removed at once."""
    path = scratch.file(name)
    try:
        _guard(f"cannot serialize {name}", lambda: obj.save(path))
        return Path(path).read_bytes()
    finally:
        Path(path).unlink(missing_ok=True)


def _load_bytes(obj: Any, context: Any, data: bytes, scratch: _Scratch, name: str) -> None:
    path = scratch.file(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        _guard(f"{name} does not load under these ckks parameters", lambda: obj.load(context, path))
    finally:
        Path(path).unlink(missing_ok=True)


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
        header = _save_bytes(parms, self.scratch, "parms")[:_SEAL_HEADER.size]
        self._version = _SEAL_HEADER.unpack(header)[2:4]  # write loadable headers for this SEAL build
        n = params.poly_modulus_degree
        members = struct.pack("<4QB3QdQ", *self.parms_id, 0, 2, n, 1, params.scale, 1)
        inner = self._header(_SEAL_HEADER.size + 8 + 2 * n * 8) + struct.pack("<Q", 2 * n)
        total = _SEAL_HEADER.size + len(members) + len(inner) + 2 * n * 8
        self._ciphertext_prefix = self._header(total) + members + inner

    def _header(self, total: int) -> bytes:
        major, minor = self._version
        return _SEAL_HEADER.pack(_SEAL_MAGIC, _SEAL_HEADER.size, major, minor, _COMPR_NONE, 0, total)

    def ciphertext_from_coefficients(self, coefficients: np.ndarray) -> Any:
        """A SEAL ciphertext (NTT form, ready to decrypt) from [c0 | c1] in coefficient form, each < q.

        Layout written: SEAL header, parms_id, is_ntt_form=0, size=2, N, coeff_modulus_size=1, scale,
        correction_factor=1, then the coefficient array as an uncompressed DynArray (its own header,
        its length, the uint64 values).
        """
        ct = seal.Ciphertext()
        data = self._ciphertext_prefix + np.ascontiguousarray(coefficients, dtype="<u8").tobytes()
        _load_bytes(ct, self.context, data, self.scratch, "ciphertext")
        _guard("cannot move a ciphertext to NTT form", lambda: self.evaluator.transform_to_ntt_inplace(ct))
        return ct


def generate_keys(sc: SealContext) -> tuple[bytes, bytes]:
    """(public key, secret key) in SEAL's serialization."""
    keygen = seal.KeyGenerator(sc.context)
    public = seal.PublicKey()
    keygen.create_public_key(public)
    return _save_bytes(public, sc.scratch, "public"), _save_bytes(keygen.secret_key(), sc.scratch, "secret")


class SealEncryptor:
    """Public-key encryptions of zero, returned in coefficient form; the caller adds the message."""

    def __init__(self, sc: SealContext, public_key: bytes) -> None:
        self.sc = sc
        pk = seal.PublicKey()
        _load_bytes(pk, sc.context, public_key, sc.scratch, "public key")
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


def _coefficient_address(ct: Any, count: int) -> int | None:
    """Address of a ciphertext's coefficient array, or None if the layout is not the one we expect.

    A pybind11 object with a unique_ptr holder stores the C++ pointer twice right after the Python
    object header; a ``seal::Ciphertext`` starts with parms_id (4 words), is_ntt_form, size,
    poly_modulus_degree, coeff_modulus_size, scale, correction_factor, then its DynArray (pool handle
    of 2 words, capacity, size, data pointer). Every field is compared with sealapi's accessors, and
    sample coefficients with ``ct[i]``, before the address is trusted.
    """
    head = (ctypes.c_uint64 * 4).from_address(id(ct))
    obj_address = head[2]
    if obj_address == 0 or obj_address != head[3] or obj_address % 8:
        return None
    fields = (ctypes.c_uint64 * 15).from_address(obj_address)
    n = ct.poly_modulus_degree()
    if (
        list(fields[0:4]) != list(ct.parms_id())
        or fields[4] & 0xFF != int(ct.is_ntt_form())
        or fields[5] != ct.size()
        or fields[6] != n
        or fields[7] != ct.coeff_modulus_size()
        or fields[13] != count
        or fields[12] < count
        or count != ct.size() * n * ct.coeff_modulus_size()
    ):
        return None
    address = int(fields[14])
    if address == 0 or address % 8:
        return None
    data = (ctypes.c_uint64 * count).from_address(address)
    for i in (0, n, count // 2 + 1, count - 1):
        if data[i] != ct[i]:
            return None
    return address


class SealDecryptor:
    def __init__(self, sc: SealContext, secret_key: bytes) -> None:
        self.sc = sc
        sk = seal.SecretKey()
        _load_bytes(sk, sc.context, secret_key, sc.scratch, "secret key")
        self.decryptor = seal.Decryptor(sc.context, sk)

    def decrypt(self, coefficients: np.ndarray) -> np.ndarray:
        """[c0 | c1] in coefficient form -> the N reals of its N/2 complex slots."""
        sc = self.sc
        ct = sc.ciphertext_from_coefficients(coefficients)
        pt = seal.Plaintext()
        _guard("cannot decrypt", lambda: self.decryptor.decrypt(ct, pt))
        slots = np.asarray(sc.encoder.decode_complex(pt), dtype=np.complex128)
        return slots.view(np.float64)  # (re, im) pairs are exactly the interleaved values


__all__ = ["SealContext", "SealDecryptor", "SealEncryptor", "generate_keys"]
