"""A job driver's key files: parameters and public key world-readable, the secret key owner-only."""

from __future__ import annotations

import stat
from pathlib import Path

from fedgpu.errors import CryptoError, StorageError
from fedgpu.files import write_atomic


def save_key_files(directory: Path, scheme: str, params: bytes, public_key: bytes, secret_key: bytes) -> None:
    """Write ``<scheme>.params``, ``<scheme>.public`` and ``<scheme>.secret`` (mode 0o600) into ``directory``."""
    directory = Path(directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(directory / f"{scheme}.params", params, 0o644)
        write_atomic(directory / f"{scheme}.public", public_key, 0o644)
        write_atomic(directory / f"{scheme}.secret", secret_key, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot write {scheme} keys to {directory}: {exc}") from exc


def load_key_files(directory: Path, scheme: str) -> tuple[bytes, bytes, bytes]:
    """(params, public key, secret key) as :func:`save_key_files` wrote them; refuses a secret key
    file that others can read, like ssh."""
    directory = Path(directory)
    secret_path = directory / f"{scheme}.secret"
    try:
        mode = stat.S_IMODE(secret_path.stat().st_mode)
        params = (directory / f"{scheme}.params").read_bytes()
        public_key = (directory / f"{scheme}.public").read_bytes()
        secret_key = secret_path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read {scheme} keys from {directory}: {exc}") from exc
    if mode & 0o077:
        raise CryptoError(f"{secret_path} has mode {mode:o}: run chmod 600 on it, others must not read it")
    return params, public_key, secret_key


__all__ = ["load_key_files", "save_key_files"]
