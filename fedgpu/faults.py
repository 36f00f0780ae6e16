"""Named crash points, so a test can SIGKILL a real process at one exact step.

``FEDGPU_CRASH_AT=NAME`` (or ``NAME@N``: at its N-th hit) makes :func:`crash_point` kill its own
process with SIGKILL there: no ``finally``, no flush, no clean shutdown, exactly what a power cut or
the OOM killer does. Unset (the normal case) a crash point costs one dictionary lookup. The idea is
etcd's gofail and FreeBSD's fail(9): crash consistency is tested at the steps where it can break,
not only at whatever moment a timer happens to fire.
"""

from __future__ import annotations

import os
import signal

ENV = "FEDGPU_CRASH_AT"

_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here, by SIGKILL, if ``FEDGPU_CRASH_AT`` names this point (and this is its N-th hit)."""
    want = os.environ.get(ENV)
    if not want:
        return
    point, _, nth = want.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["ENV", "crash_point"]
