"""A round's reward pool shared by measured value: only positive contributions are paid.

Zero and negative values (free riders, poisoners, contributions under the noise floor) earn nothing,
and the pool is never overspent: pro rata over the positive values, all of it when any is positive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

from fedgpu.errors import RewardsError

_Node = TypeVar("_Node")


def _positive(values: Mapping[_Node, float], pool: float) -> dict[_Node, float]:
    if not (math.isfinite(pool) and pool >= 0):
        raise RewardsError(f"pool must be a finite number >= 0, got {pool}")
    for node, value in values.items():
        if not math.isfinite(value):
            raise RewardsError(f"value of {node!r} is {value}; values must be finite")
    return {node: float(value) for node, value in values.items() if value > 0}


def payout(values: Mapping[_Node, float], pool: float) -> dict[_Node, float]:
    """Rewards in the pool's unit: positive values pro rata, the rest 0; they sum to ``pool`` (or 0)."""
    positive = _positive(values, pool)
    rewards = {node: 0.0 for node in values}
    if not positive:
        return rewards
    total = math.fsum(positive.values())
    nodes = sorted(positive, key=lambda n: positive[n])
    for node in nodes[:-1]:
        rewards[node] = pool * positive[node] / total
    # the largest share takes the rounding remainder, so the rewards add up to the pool
    rewards[nodes[-1]] = max(pool - math.fsum(rewards[n] for n in nodes[:-1]), 0.0)
    return rewards


def payout_units(values: Mapping[_Node, float], pool_units: int) -> dict[_Node, int]:
    """Whole units (e.g. micro-credits) by largest remainder: the sum is exactly ``pool_units``.

    Ties in the remainder go to the larger value, then to the smaller node id, so every party that
    recomputes the payout gets the same integers.
    """
    if pool_units < 0:
        raise RewardsError(f"pool_units must be >= 0, got {pool_units}")
    positive = _positive(values, float(pool_units))
    rewards = {node: 0 for node in values}
    if not positive:
        return rewards
    total = math.fsum(positive.values())
    exact = {node: pool_units * v / total for node, v in positive.items()}
    for node, share in exact.items():
        rewards[node] = math.floor(share)
    left = pool_units - sum(rewards[n] for n in positive)
    order = sorted(positive, key=lambda n: (-(exact[n] - rewards[n]), -positive[n], str(n)))
    for node in order[: max(left, 0)]:
        rewards[node] += 1
    return rewards


__all__ = ["payout", "payout_units"]
