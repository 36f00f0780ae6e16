"""SEAL plumbing shared by the ``ckks`` and ``bfv8`` schemes (through TenSEAL's ``tenseal.sealapi``).

Only nodes and the job driver import this module; the aggregator never does. Every SEAL error is
translated to :class:`CryptoError` here.

TenSEAL's sealapi moves keys and ciphertexts only through files and always zstd-compresses, and it
has no bulk accessor for a ciphertext's or a plaintext's coefficients. So:

* keys travel in SEAL's own format (written once per job; size and speed do not matter);
* a ciphertext is rebuilt by writing SEAL's *uncompressed* serialization (documented in SEAL's
  ``serialization.h`` / ``Ciphertext::save_members``) and loading it, which lets SEAL check it;
* coefficients are read in place (:func:`ciphertext_address`, :func:`plaintext_address`) after the
  object's layout is checked against sealapi's own accessors; callers fall back to one accessor
  call per coefficient (about 20x slower, same result) when the check fails.
"""

from __future__ import annotations

import ctypes
import os
import struct
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fedgpu.errors import CryptoError

# Errors a SEAL call raises through pybind11 for bad input (std::invalid_argument, logic_error, ...).
SEAL_ERRORS = (ValueError, RuntimeError, IndexError, TypeError, OverflowError)

SEAL_MAGIC = 0xA15E
SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr mode, reserved, total size
COMPR_NONE = 0

_T = TypeVar("_T")


def guard(what: str, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except SEAL_ERRORS as exc:
        raise CryptoError(f"{what}: {exc}") from exc


class Scratch:
    """A private (0o700) temporary directory for sealapi's file-only save/load; removed with its owner."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="fedgpu-seal-"))
        self._finalizer = weakref.finalize(self, _remove_tree, self.path)

    def file(self, name: str) -> str:
        return str(self.path / f"{name}-{threading.get_ident()}")


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink(missing_ok=True)
    path.rmdir()


def save_bytes(obj: Any, scratch: Scratch, name: str) -> bytes:
    """SEAL's serialization of ``obj`` (keys, parameters), via a scratch file that is removed at once."""
    path = scratch.file(name)
    try:
        guard(f"cannot serialize {name}", lambda: obj.save(path))
        return Path(path).read_bytes()
    finally:
        Path(path).unlink(missing_ok=True)


def load_bytes(obj: Any, context: Any, data: bytes, scratch: Scratch, name: str, scheme: str = "ckks") -> None:
    path = scratch.file(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        guard(f"{name} does not load under these {scheme} parameters", lambda: obj.load(context, path))
    finally:
        Path(path).unlink(missing_ok=True)


def seal_version(parms: Any, scratch: Scratch) -> tuple[int, int]:
    """(major, minor) that this SEAL build writes, so that headers we write load here."""
    header = save_bytes(parms, scratch, "parms")[: SEAL_HEADER.size]
    major, minor = SEAL_HEADER.unpack(header)[2:4]
    return int(major), int(minor)


def uncompressed_header(version: tuple[int, int], total: int) -> bytes:
    return SEAL_HEADER.pack(SEAL_MAGIC, SEAL_HEADER.size, version[0], version[1], COMPR_NONE, 0, total)


def ciphertext_prefix(version: tuple[int, int], parms_id: list[int], n: int, is_ntt_form: bool, scale: float) -> bytes:
    """Everything of an uncompressed size-2, one-prime ``Ciphertext`` save before its 2N coefficients.

    Layout: SEAL header, parms_id, is_ntt_form, size=2, N, coeff_modulus_size=1, scale,
    correction_factor=1, then the coefficient array as an uncompressed DynArray (its own header and
    its length; the uint64 values follow).
    """
    members = struct.pack("<4QB3QdQ", *parms_id, int(is_ntt_form), 2, n, 1, scale, 1)
    inner = uncompressed_header(version, SEAL_HEADER.size + 8 + 2 * n * 8) + struct.pack("<Q", 2 * n)
    total = SEAL_HEADER.size + len(members) + len(inner) + 2 * n * 8
    return uncompressed_header(version, total) + members + inner


def _object_address(obj: Any) -> int | None:
    """The C++ object behind a pybind11 instance with a unique_ptr holder: its pointer is stored twice
    right after the Python object header."""
    head = (ctypes.c_uint64 * 4).from_address(id(obj))
    address = int(head[2])
    if address == 0 or address != head[3] or address % 8:
        return None
    return address


def _checked_data(address: int, count: int, samples: list[int], read: Callable[[int], int]) -> int | None:
    if address == 0 or address % 8:
        return None
    data = (ctypes.c_uint64 * count).from_address(address)
    for i in samples:
        if data[i] != read(i):
            return None
    return address


def ciphertext_address(ct: Any, count: int) -> int | None:
    """Address of a ciphertext's coefficient array, or None if the layout is not the one we expect.

    A ``seal::Ciphertext`` starts with parms_id (4 words), is_ntt_form, size, poly_modulus_degree,
    coeff_modulus_size, scale, correction_factor, then its DynArray (pool handle of 2 words,
    capacity, size, data pointer). Every field is compared with sealapi's accessors, and sample
    coefficients with ``ct[i]``, before the address is trusted.
    """
    obj_address = _object_address(ct)
    if obj_address is None:
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
    return _checked_data(int(fields[14]), count, [0, n, count // 2 + 1, count - 1], lambda i: int(ct[i]))


def plaintext_address(pt: Any) -> int | None:
    """Address of a plaintext's coefficient array, or None if the layout is not the one we expect.

    A ``seal::Plaintext`` holds parms_id (4 words), coeff_count, scale, then its DynArray (pool
    handle of 2 words, capacity, size, data pointer); checked like :func:`ciphertext_address`.
    """
    count = pt.coeff_count()
    obj_address = _object_address(pt)
    if obj_address is None or count == 0:
        return None
    fields = (ctypes.c_uint64 * 11).from_address(obj_address)
    if (
        list(fields[0:4]) != list(pt.parms_id())
        or fields[4] != count
        or fields[9] != count
        or fields[8] < count
    ):
        return None
    return _checked_data(int(fields[10]), count, [0, count // 2, count - 1], lambda i: int(pt[i]))


__all__ = [
    "COMPR_NONE",
    "SEAL_ERRORS",
    "SEAL_HEADER",
    "SEAL_MAGIC",
    "Scratch",
    "ciphertext_address",
    "ciphertext_prefix",
    "guard",
    "load_bytes",
    "plaintext_address",
    "save_bytes",
    "seal_version",
    "uncompressed_header",
]
