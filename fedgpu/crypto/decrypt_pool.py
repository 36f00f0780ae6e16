"""Decryption in worker processes, so that a job driver decrypts a round's sums on every core.

Why processes: SEAL (through TenSEAL) holds the GIL, so threads would decrypt one chunk at a time.
Why not ``multiprocessing``: its spawned children import the parent's ``__main__`` script (a benchmark's
or the CLI's, with torch) and every message is a pickle. Here each worker is ``python -m
fedgpu.crypto.decrypt_pool SCHEME KEYS_DIR``: it loads the driver's own key files (the secret key never
travels through a pipe) and speaks a framed binary protocol over its stdin and stdout, so nothing is
ever unpickled on either side:

* request: ``<IQ`` (values expected, payload length), then the payload (as fetched: the worker
  decrypts it exactly as the driver's own decryptor would, so results are bit-identical);
* reply: ``<BQ`` (status, body length), then the float64 values (status 0) or, for an error,
  ``class name NUL message`` (status 1), re-raised in the driver as the same fedgpu error.

Closing a worker's stdin ends it; so does the driver's death (its pipe closes), so no worker outlives
its driver. A worker that dies mid-round costs nothing but time: its chunks are decrypted in the driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import IO

import numpy as np

from fedgpu import crypto, errors
from fedgpu.crypto.scheme import Decryptor

log = logging.getLogger(__name__)

_REQUEST = struct.Struct("<IQ")
_REPLY = struct.Struct("<BQ")
_OK, _ERROR = 0, 1
# More workers than this gains little: a round's chunks are ~15 ms each and the driver's fetch feeds them.
MAX_WORKERS = 4

Chunk = Callable[[], np.ndarray]  # a chunk's decrypted values, when asked for
# Fewer chunks per sum than this (a 290 k-parameter model), and a round's decryption is too short for
# the workers' start-up (a second each) and memory to pay back: the driver decrypts on its own.
MIN_CHUNKS = 4


def workers_for(scheme: str, num_chunks: int, cpus: int | None = None) -> int:
    """How many workers a driver whose sums have ``num_chunks`` chunks should start (0: none), on ``cpus``
    cores (default: those this process may run on). ``none`` has nothing to decrypt."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if scheme == "none" or cpus < 2 or num_chunks < MIN_CHUNKS:
        return 0
    return min(cpus, MAX_WORKERS)


class WorkerLost(Exception):
    """A worker process ended or broke its protocol: the chunk is decrypted in the driver instead."""


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise WorkerLost(f"a decryption worker's pipe ended after {0 if data is None else len(data)} of {size} bytes")
    return data


def _rebuild_error(body: bytes) -> errors.FedgpuError | WorkerLost:
    """The worker's error as the driver's serial decryption would have raised it (a fedgpu error); any
    other (a bug, or a worker out of memory) loses the worker, and the driver decrypts the chunk itself."""
    name, _, message = body.decode("utf-8", "replace").partition("\0")
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.FedgpuError):
        return cls(message)
    return WorkerLost(f"{name}: {message}")


class _Worker:
    """One worker process and the driver thread that feeds it from the pool's queue."""

    def __init__(self, scheme: str, keys_dir: Path, jobs: queue.SimpleQueue[tuple[bytes, int, Future[np.ndarray]] | None]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fedgpu.crypto.decrypt_pool", scheme, str(keys_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        self._jobs = jobs
        self.thread = threading.Thread(target=self._serve, name=f"decrypt-worker-{self.proc.pid}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        """Take chunks until the pool closes; once this worker is lost, fail each chunk at once, so that
        none waits forever and the driver decrypts them itself."""
        lost: WorkerLost | None = None
        while (job := self._jobs.get()) is not None:
            payload, num_values, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            if lost is None:
                try:
                    fut.set_result(self._decrypt(payload, num_values))
                    continue
                except errors.FedgpuError as exc:
                    fut.set_exception(exc)
                    continue
                except Exception as exc:  # a closed pipe, a dead worker: whatever it is, this worker is lost
                    lost = exc if isinstance(exc, WorkerLost) else WorkerLost(f"{type(exc).__name__}: {exc}")
            fut.set_exception(lost)

    def _decrypt(self, payload: bytes, num_values: int) -> np.ndarray:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        if stdin is None or stdout is None:
            raise WorkerLost("a decryption worker without pipes")
        stdin.write(_REQUEST.pack(num_values, len(payload)))
        stdin.write(payload)
        stdin.flush()
        status, size = _REPLY.unpack(_read_exact(stdout, _REPLY.size))
        if status != _OK:
            raise _rebuild_error(_read_exact(stdout, size))
        if size % 8:
            raise WorkerLost(f"a decryption worker replied {size} bytes, not float64 values")
        return np.frombuffer(_read_exact(stdout, size), dtype=np.float64)  # read-only: join copies out of it

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):  # a worker already gone
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class DecryptPool:
    """``workers`` processes decrypting chunks in the order submitted; ``local`` decrypts what they cannot.

    ``keys_dir`` holds the key files the driver saved (crypto.load_keys reads them).
    """

    def __init__(self, scheme: str, keys_dir: Path, local: Decryptor, workers: int) -> None:
        if workers < 1:
            raise errors.ConfigError(f"a decryption pool needs at least one worker, got {workers}")
        self._local = local
        self._jobs: queue.SimpleQueue[tuple[bytes, int, Future[np.ndarray]] | None] = queue.SimpleQueue()
        self._pending: list[Future[np.ndarray]] = []
        self._lost = False
        self._workers = [_Worker(scheme, keys_dir, self._jobs) for _ in range(workers)]

    def submit(self, payload: bytes, num_values: int) -> Chunk:
        """Queue one chunk; the returned call waits for its values (or raises what decrypting raised)."""
        if self._lost:
            return lambda: self._local.decrypt(payload, num_values)
        fut: Future[np.ndarray] = Future()
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(fut)
        self._jobs.put((payload, num_values, fut))

        def values() -> np.ndarray:
            try:
                return fut.result()
            except WorkerLost as exc:
                if not self._lost:
                    log.warning("a decryption worker was lost (%s): the driver decrypts on its own from now on", exc)
                    self._lost = True
                return self._local.decrypt(payload, num_values)

        return values

    def cancel(self) -> None:
        """Drop every chunk not yet started (a round that failed midway): the next round does not wait on them."""
        for fut in self._pending:
            fut.cancel()
        self._pending = []

    def close(self) -> None:
        """Stop every worker and wait for it (no process outlives the pool)."""
        self.cancel()
        for _ in self._workers:
            self._jobs.put(None)
        for w in self._workers:
            w.thread.join(timeout=30)
            w.close()
        self._workers = []

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]


def worker_main(scheme: str, keys_dir: Path) -> None:
    """A worker's loop: decrypt each request with the driver's keys until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the driver's to handle; its exit closes the pipe
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else that prints goes to stderr, never into the protocol
    inp = sys.stdin.buffer
    decryptor = crypto.load_keys(scheme, keys_dir).decryptor()
    while head := inp.read(_REQUEST.size):
        num_values, size = _REQUEST.unpack(head)
        payload = inp.read(size)
        body: bytes | memoryview
        try:
            values = np.ascontiguousarray(decryptor.decrypt(payload, num_values), dtype=np.float64)
            body, status = values.data.cast("B"), _OK
        except Exception as exc:  # sent back and re-raised in the driver, as the serial path would raise it
            body, status = f"{type(exc).__name__}\0{exc}".encode(), _ERROR
        out.write(_REPLY.pack(status, len(body)))
        out.write(body)
        out.flush()


__all__ = ["Chunk", "DecryptPool", "MAX_WORKERS", "MIN_CHUNKS", "WorkerLost", "worker_main", "workers_for"]


if __name__ == "__main__":
    worker_main(sys.argv[1], Path(sys.argv[2]))
