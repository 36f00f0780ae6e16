"""Cohorts: random groups of at least k nodes whose updates are only ever released as one sum."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import combinations

from fedgpu.errors import ConfigError

Pair = frozenset[str]


def assign_cohorts(nodes: list[str], k: int, rng: random.Random, together: Mapping[Pair, int] | None = None, tries: int = 64) -> list[list[str]]:
    """Shuffle ``nodes`` and cut them into ``len // k`` cohorts whose sizes differ by at most one.

    With ``together`` (how often each pair of nodes already shared a released cohort in this job), the
    partition is the best of ``tries`` random ones: the one whose pairs were together least often. The
    driver only sees cohort sums, and tells one node's worth from another's only across rounds in
    which they were apart: reshuffling that keeps pairing the same nodes leaves them confounded (and
    lets a free rider ride on the same strong node round after round).

    ``rng`` must be one the nodes cannot predict or bias (the aggregator uses the OS's CSPRNG), or a
    node could arrange to share a cohort with its accomplices; choosing among random partitions keeps
    it so.
    """
    if k < 1:
        raise ConfigError(f"cohort size must be >= 1, got {k}")
    if tries < 1:
        raise ConfigError(f"tries must be >= 1, got {tries}")
    count = max(1, len(nodes) // k)
    best: list[list[str]] = []
    best_cost = -1
    for _ in range(tries if together else 1):
        order = list(nodes)
        rng.shuffle(order)
        cohorts = [order[i::count] for i in range(count)]
        cost = sum(together.get(frozenset(p), 0) for c in cohorts for p in combinations(c, 2)) if together else 0
        if best_cost < 0 or cost < best_cost:
            best, best_cost = cohorts, cost
    return best


def co_membership(cohorts_by_round: Iterable[Iterable[Iterable[str]]]) -> Counter[Pair]:
    """How often each pair of nodes shared a cohort, over the given rounds' cohorts."""
    together: Counter[Pair] = Counter()
    for cohorts in cohorts_by_round:
        for members in cohorts:
            together.update(frozenset(p) for p in combinations(sorted(set(members)), 2))
    return together


def merge_small(sizes: list[int], k: int) -> list[list[int]] | None:
    """Group cohort indices so that every group has at least ``k`` members in total.

    ``sizes[i]`` is how many members of cohort i reported. Empty cohorts are dropped; a cohort that
    shrank below ``k`` is merged with the smallest other group, never released alone. Returns None
    when all reports together are fewer than ``k``: then nothing may be released at all.
    """

    def total(group: list[int]) -> int:
        return sum(sizes[i] for i in group)

    groups = sorted(([i] for i, n in enumerate(sizes) if n > 0), key=total)
    if sum(sizes) < k or not groups:
        return None
    while len(groups) > 1 and total(groups[0]) < k:
        smallest = groups.pop(0)
        groups[0].extend(smallest)
        groups.sort(key=total)
    return [sorted(g) for g in groups]


def max_sum_members(k: int, nodes_per_round: int) -> int:
    """The most updates one released sum can hold: cohorts are cut to at most 2k - 1 members, and
    ``merge_small`` adds a group that shrank below k (at most k - 1 members) to the smallest other one,
    so no sum exceeds 3k - 2 (nor the round's nodes). The encryption's headroom must hold that many."""
    return max(1, min(nodes_per_round, 3 * k - 2))


__all__ = ["Pair", "assign_cohorts", "co_membership", "max_sum_members", "merge_small"]
