"""The aggregator's allocator: a chunk's large buffers reused, not mapped afresh each time.

Every 1 MiB chunk passes through a few short-lived buffers (gRPC's, its message's, its data's, a
file read's). glibc returns the freed top of its heap to the system once it passes the trim
threshold, and maps buffers above the mmap threshold afresh, so each such buffer paid ~250 page
faults, the zeroing of 1 MiB included: most of what a copy of a chunk cost (0.6 ms against 0.07 ms
with these settings, measured). With a fixed 4 MiB mmap threshold and a 64 MiB trim threshold the
same memory serves the next chunk. What it keeps is bounded by those figures, whatever the node count.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 64 << 20


def reuse_large_buffers() -> bool:
    """Set glibc's thresholds (see above) for this process; False where the C library has no mallopt."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "reuse_large_buffers"]
