"""Comparing replicas of one task: the distance of two updates and the majority of a few.

On a public-data job a task (shard, seed, model version) is deterministic on one device class, so two
honest nodes send the same update up to the encryption's noise; a node that skipped work or sent
something else differs by far more. ``tolerance`` is the largest relative distance two honest replicas
may have (calibrated by scripts/bench_verify.py; docs/verification.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


def relative_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / max(||a||, ||b||): 0 for equal updates, 1 or more for unrelated ones, scale-free
    (infinite for two zero updates: a replica that did nothing never confirms another that did nothing)."""
    a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a64.shape != b64.shape:
        return float("inf")
    scale = max(float(np.linalg.norm(a64)), float(np.linalg.norm(b64)))
    diff = float(np.linalg.norm(a64 - b64))
    if not np.isfinite(diff) or not np.isfinite(scale):
        return float("inf")
    return diff / scale if scale > 0 else float("inf")  # two zero updates did no work: nothing to agree on


@dataclass(frozen=True)
class Verdict:
    """What the replicas of a task say: the members that agree with the majority, and the others.

    ``agreed`` empty: no strict majority agrees (two replicas that differ, or three that all differ)."""

    agreed: tuple[str, ...]
    outvoted: tuple[str, ...]
    distances: Mapping[tuple[str, str], float]

    @property
    def settled(self) -> bool:
        return bool(self.agreed)


def majority(updates: Mapping[str, np.ndarray], tolerance: float) -> Verdict:
    """The largest group of replicas within ``tolerance`` of one of them, if it is a strict majority of two or more.

    Two replicas agree or are disputed; of three, two that agree outvote the third. Ties go to the
    smaller node id, so every party that recomputes the verdict gets the same one.
    """
    names = sorted(updates)
    dist = {(a, b): relative_distance(updates[a], updates[b]) for i, a in enumerate(names) for b in names[i + 1 :]}

    def near(a: str, b: str) -> bool:
        return a == b or dist[(a, b) if a < b else (b, a)] <= tolerance

    best: tuple[str, ...] = ()
    for a in names:
        group = tuple(b for b in names if near(a, b) and all(near(b, c) for c in names if near(a, c)))
        if len(group) > len(best):
            best = group
    if len(best) < 2 or 2 * len(best) <= len(names):
        return Verdict((), tuple(names), dist)
    return Verdict(best, tuple(n for n in names if n not in best), dist)


__all__ = ["Verdict", "majority", "relative_distance"]
