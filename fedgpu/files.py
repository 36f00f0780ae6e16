"""Durable files: written whole or not at all, even when the process is killed mid-write."""

from __future__ import annotations

import os
from pathlib import Path

from fedgpu.errors import StorageError


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never a part.

    A temporary file beside it, created with ``mode`` (never wider, also when it existed), is
    fsynced, renamed over ``path``, and the folder is fsynced so the rename itself survives a power
    cut. An OSError (full disk, read-only folder) is a StorageError naming the file.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
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
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}; free some disk space or fix the folder's permissions") from exc


__all__ = ["write_atomic"]
