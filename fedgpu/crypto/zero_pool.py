"""Encryptions of zero made ahead of time, on a node's idle CPU, each used once.

Why: a public-key RLWE encryption is an encryption of zero, ``(pk0*u + e0, pk1*u + e1)``, plus the
encoded message added to ``c0`` (what SEAL's ``encrypt`` does, and what :mod:`fedgpu.crypto.ckks`
and :mod:`fedgpu.crypto.bfv` do after :meth:`encrypt_zero`). The encryption of zero does not depend
on the message, and it is most of a node's CPU per round at 1 M parameters (SEAL's sampling and
NTTs). So a node that has uploaded makes the next round's encryptions of zero while it waits for the
next task (the offline/online split of public-key encryption), and the next upload only adds its
message to them.

Safety: an encryption of zero is consumed by :meth:`ZeroPool.encrypt_zero` (taken off the pool
under a lock), so none is ever used twice: two ciphertexts sharing one ``u`` would reveal the
difference of their messages. The pool lives in memory only and is bound to one public key (the
node keeps one pool per encryption-context fingerprint). Filling runs in one background thread, at
the lowest CPU priority on Linux, and stops as soon as the node has a task (:meth:`pause`), so it
only takes CPU the node would leave idle.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections import deque
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

MAX_POOL_BYTES = 256 * 1024 * 1024  # at most this much precomputed (ckks: 16 MB per 1 M parameters)


class ZeroSource(Protocol):
    """Writes a fresh public-key encryption of zero, in coefficient form, into c0 and c1 (length N each)."""

    def encrypt_zero(self, c0: np.ndarray, c1: np.ndarray) -> None: ...


class ZeroPool:
    """A :class:`ZeroSource` that hands out precomputed encryptions of zero first, then makes fresh ones.

    ``drawn`` counts the encryptions of zero taken since the last :meth:`refill` (``hits`` those of them
    made ahead): the next refill makes that many (a node's next update is usually the size of its last).
    """

    def __init__(self, source: ZeroSource, degree: int, max_bytes: int = MAX_POOL_BYTES) -> None:
        self._source = source
        self._degree = degree
        self._max = max(0, max_bytes // (2 * degree * 8))
        self._ready: deque[np.ndarray] = deque()  # each (2, N) uint64: c0, c1 of one encryption of zero
        self._lock = threading.Lock()  # guards _ready and drawn; never held while SEAL encrypts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.drawn = 0
        self.hits = 0
        self.made_ahead = 0  # encryptions of zero made by the background thread, over the pool's life
        self.used_ahead = 0  # of them, handed out (the rest wait in the pool)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ready)

    def encrypt_zero(self, c0: np.ndarray, c1: np.ndarray) -> None:
        with self._lock:
            self.drawn += 1
            ready = self._ready.popleft() if self._ready else None
            self.hits += ready is not None
            self.used_ahead += ready is not None
        if ready is None:
            self._source.encrypt_zero(c0, c1)
            return
        c0[:] = ready[0]
        c1[:] = ready[1]

    def refill(self, target: int | None = None) -> None:
        """Fill the pool up to ``target`` (default: what was drawn since the last refill) in the background."""
        self.pause()
        with self._lock:
            goal = min(self._max, self.drawn if target is None else target)
            self.drawn = self.hits = 0
            if len(self._ready) >= goal:
                return
        self._stop.clear()
        self._thread = threading.Thread(target=self._fill, args=(goal,), name="zero-pool", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """Stop filling (after the encryption in progress, about a millisecond) and wait for that."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _fill(self, goal: int) -> None:
        _lowest_priority()
        n = self._degree
        try:
            while not self._stop.is_set():
                with self._lock:
                    if len(self._ready) >= goal:
                        return
                ct = np.empty((2, n), dtype=np.uint64)
                self._source.encrypt_zero(ct[0], ct[1])
                with self._lock:
                    self._ready.append(ct)
                    self.made_ahead += 1
        except Exception:  # the upload path makes its own and reports any error there
            log.exception("making encryptions of zero ahead failed; encrypting on demand")


def _lowest_priority() -> None:
    """Nice 19 for the calling thread (Linux: a thread is a task with its own nice value)."""
    if sys.platform != "linux":  # elsewhere setpriority(PRIO_PROCESS, tid) would name a process
        return
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


__all__ = ["MAX_POOL_BYTES", "ZeroPool", "ZeroSource"]
