"""Released cohort sums: files in the spool, one folder per closed round, referenced by the round's row.

Why files and not database blobs: a round at 1 M parameters releases ~13.5 MB per cohort; as blobs
every round wrote them twice (WAL, then checkpoint), on the event loop, and freeing them at the
publish read them all back (SQLite walks a blob's overflow pages to free it). A folder is written
once, and a sum of one update is its payload: the spooled file moves in without a copy.

Crash consistency: a round's folder is complete and fsynced, under a temporary name renamed into
place, *before* the transaction that marks the round ready commits; the folder of attempt ``a`` of
round ``r`` is ``{job}-r{r}-{a}``, so the row names its folder by the attempt id in its record. At
start every folder no ready round names is deleted (a close killed before its commit, a round
published but killed before its folder went), and a publish deletes the round's folder after its
transaction. The database therefore never points at a missing folder, and what is left over is swept.

A lone update's file keeps the SHA-256 its node sent and the aggregator checked (an extended
attribute, which a rename carries along), so serving it to the driver hashes nothing again; the
driver checks every chunk against it as before, so a file changed on disk is caught, not served.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from fedgpu.errors import NotFoundError, StorageError

RELEASED = "released"  # the folder of the spool that holds them
_TMP = ".tmp-"
DIGEST_ATTR = "user.fedgpu.sha256"  # a spooled file's SHA-256, where it is known already


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def keep_digest(path: Path, digest: bytes) -> None:
    """Keep ``digest``, the checked SHA-256 of the file's bytes, with the file. A file system without
    extended attributes keeps none (and the file is hashed when served); never a stale one."""
    try:
        os.setxattr(path, DIGEST_ATTR, digest)
    except OSError:
        with contextlib.suppress(OSError):
            os.removexattr(path, DIGEST_ATTR)


def flush_ahead(paths: Iterable[Path]) -> None:
    """fsync files that a round will likely release as they are (a cohort's first update), in a worker
    thread while the round goes on: the close's own fsync then finds them clean. A file that has moved
    on meanwhile is skipped; any error is left to that fsync."""
    for p in paths:
        with contextlib.suppress(OSError):
            _fsync(p)


class ReleasedSums:
    """The folder ``root`` of released sums: written whole before its round's row, read by the driver's fetch."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def name(job_id: str, rnd: int, attempt_id: str) -> str:
        return f"{job_id}-r{rnd}-{attempt_id}"

    def folder(self, job_id: str, rnd: int, attempt_id: str) -> Path:
        return self.root / self.name(job_id, rnd, attempt_id)

    def write(self, job_id: str, rnd: int, attempt_id: str, sums: Iterable[tuple[int, int, bytes | Path]]) -> None:
        """Write a round's sums, each ``(cohort, chunk, bytes or a file to move in)``, durably and all or nothing."""
        final = self.folder(job_id, rnd, attempt_id)
        tmp = self.root / (_TMP + final.name)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            for cohort, chunk, data in sums:
                path = tmp / f"{cohort}-{chunk}.sum"
                if isinstance(data, Path):
                    os.replace(data, path)  # the spool is on the same file system: a rename, no copy
                else:
                    path.write_bytes(data)
                _fsync(path)
            _fsync(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            _fsync(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def index(self, job_id: str, rnd: int, attempt_id: str) -> list[tuple[int, int]]:
        """The (cohort, chunk) pairs of a round's sums, in order."""
        folder = self.folder(job_id, rnd, attempt_id)
        if not folder.is_dir():
            raise StorageError(f"the sums of round {rnd} of job {job_id} are missing from {self.root}: the spool was deleted under a running aggregator?")
        pairs = []
        for p in folder.iterdir():
            cohort, _, chunk = p.stem.partition("-")
            pairs.append((int(cohort), int(chunk)))
        return sorted(pairs)

    def read(self, job_id: str, rnd: int, attempt_id: str, cohort: int, chunk: int) -> tuple[bytes, bytes]:
        """One chunk of one released sum and its SHA-256 (kept with the file, else computed): streamed
        one at a time, never the whole round in memory."""
        try:
            with open(self.folder(job_id, rnd, attempt_id) / f"{cohort}-{chunk}.sum", "rb") as f:
                data = f.read()
                try:
                    digest = os.getxattr(f.fileno(), DIGEST_ATTR)
                except OSError:
                    digest = b""
        except FileNotFoundError:
            raise NotFoundError(f"no sum for cohort {cohort} chunk {chunk} of round {rnd}") from None
        return data, digest if len(digest) == 32 else hashlib.sha256(data).digest()

    def drop(self, job_id: str, rounds: Iterable[int] | None = None) -> None:
        """Delete the folders of these rounds of the job (all its rounds when None)."""
        wanted = None if rounds is None else {f"{job_id}-r{r}-" for r in rounds}
        for p in self._folders():
            if p.name.startswith(f"{job_id}-r") and (wanted is None or any(p.name.startswith(w) for w in wanted)):
                shutil.rmtree(p, ignore_errors=True)

    def sweep(self, keep: set[str]) -> list[str]:
        """Delete every folder not named in ``keep`` (see :meth:`name`), half-written ones too; returns what went."""
        gone = []
        for p in self._folders():
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
                gone.append(p.name)
        return sorted(gone)

    def _folders(self) -> Iterator[Path]:
        return (p for p in list(self.root.iterdir()) if p.is_dir())


__all__ = ["DIGEST_ATTR", "RELEASED", "ReleasedSums", "flush_ahead", "keep_digest"]
