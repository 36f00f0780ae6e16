"""Cohorts: random groups of at least k nodes whose updates are only ever released as one sum."""

from __future__ import annotations

import random


def assign_cohorts(nodes: list[str], k: int, rng: random.Random) -> list[list[str]]:
    """Shuffle ``nodes`` and cut them into ``len // k`` cohorts whose sizes differ by at most one.

    ``rng`` must be one the nodes cannot predict or bias (the aggregator uses the OS's CSPRNG), or a
    node could arrange to share a cohort with its accomplices.
    """
    if k < 1:
        raise ValueError("cohort size must be >= 1")
    order = list(nodes)
    rng.shuffle(order)
    count = max(1, len(order) // k)
    return [order[i::count] for i in range(count)]


def merge_small(sizes: list[int], k: int) -> list[list[int]] | None:
    """Group cohort indices so that every group has at least ``k`` members in total.

    ``sizes[i]`` is how many members of cohort i reported. Empty cohorts are dropped; a cohort that
    shrank below ``k`` is merged with the smallest other group, never released alone. Returns None
    when all reports together are fewer than ``k``: then nothing may be released at all.
    """
    groups = sorted(([i] for i, n in enumerate(sizes) if n > 0), key=lambda g: sum(sizes[i] for i in g))
    total = lambda g: sum(sizes[i] for i in g)  # noqa: E731
    if sum(sizes) < k or not groups:
        return None
    while len(groups) > 1 and total(groups[0]) < k:
        smallest = groups.pop(0)
        groups[0].extend(smallest)
        groups.sort(key=total)
    return [sorted(g) for g in groups]
