"""Shapley values of a small cooperative game, exact or by truncated guided permutation sampling.

Players are the round's cohorts (a handful), so the game is small and a utility call is the only
expensive thing: every function here evaluates each subset at most once, counts those distinct
evaluations, and returns every evaluated utility so that the ledger can store them and anyone can
recompute the values (``shapley_exact(n, utilities.__getitem__)`` for exact results; the sampled
estimator is deterministic given its seed and the stored utilities).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from fedgpu.errors import RewardsError

Coalition = frozenset[int]
Utility = Callable[[Coalition], float]

EXACT_DEFAULT_MAX_PLAYERS = 8  # 2^8 = 256 evaluations: the per-round budget of the design notes
EXACT_HARD_MAX_PLAYERS = 12  # 4096 evaluations: past this, exact enumeration is a configuration mistake


@dataclass(frozen=True)
class ShapleyResult:
    """Values of players 0..n-1 and the evidence behind them."""

    values: np.ndarray  # float64, shape (n,)
    evaluations: int  # distinct utility calls made (the cost that matters)
    utilities: Mapping[Coalition, float] = field(repr=False)  # every evaluated subset -> u(subset)
    exact: bool  # True when every subset was evaluated
    permutations: int = 0  # complete permutations averaged (sampled estimator only)


class _BudgetExhausted(Exception):
    """Internal: the next distinct evaluation would exceed the budget."""


class _CachedUtility:
    """Evaluates each subset once and refuses new subsets past ``budget``."""

    def __init__(self, u: Utility, budget: int | None = None) -> None:
        self._u = u
        self._budget = budget
        self.table: dict[Coalition, float] = {}

    def __call__(self, coalition: Coalition) -> float:
        hit = self.table.get(coalition)
        if hit is not None:
            return hit
        if self._budget is not None and len(self.table) >= self._budget:
            raise _BudgetExhausted
        value = float(self._u(coalition))
        if not math.isfinite(value):
            raise RewardsError(f"utility of coalition {sorted(coalition)} is {value}; a utility must be finite")
        self.table[coalition] = value
        return value


def _members(mask: int, n: int) -> Coalition:
    return frozenset(i for i in range(n) if mask >> i & 1)


def _check_players(n: int) -> None:
    if n < 0:
        raise RewardsError(f"number of players must be >= 0, got {n}")


def shapley_exact(n: int, u: Utility, max_players: int = EXACT_DEFAULT_MAX_PLAYERS) -> ShapleyResult:
    """Exact Shapley values from all 2^n subsets, each evaluated once.

    ``max_players`` guards against an accidental 2^n blow-up; it may be raised up to 12.
    """
    _check_players(n)
    if max_players > EXACT_HARD_MAX_PLAYERS:
        raise RewardsError(f"max_players = {max_players}: exact Shapley is limited to {EXACT_HARD_MAX_PLAYERS} players")
    if n > max_players:
        raise RewardsError(f"exact Shapley over {n} players needs 2^{n} evaluations; the limit is {max_players} players (use shapley_sampled)")
    cache = _CachedUtility(u)
    size = 1 << n
    table = np.array([cache(_members(mask, n)) for mask in range(size)], dtype=np.float64)
    masks = np.arange(size)
    sizes = np.array([bin(m).count("1") for m in range(size)])
    # weight of a coalition of size s not containing i: s! (n-s-1)! / n! = 1 / (n * C(n-1, s))
    weight = np.array([1.0 / (n * math.comb(n - 1, s)) for s in range(n)])
    values = np.zeros(n, dtype=np.float64)
    for i in range(n):
        without = masks[(masks >> i & 1) == 0]
        values[i] = float(np.sum(weight[sizes[without]] * (table[without | (1 << i)] - table[without])))
    return ShapleyResult(values=values, evaluations=len(cache.table), utilities=dict(cache.table), exact=True)


def shapley_sampled(
    n: int,
    u: Utility,
    budget: int,
    rng: np.random.Generator,
    truncation_tol: float = 0.0,
    *,
    max_permutations: int | None = None,
) -> ShapleyResult:
    """GTG-Shapley-style estimate: guided permutations with within-permutation truncation.

    Permutation t starts with player ``t mod n`` (every player leads equally often, which lowers the
    variance of first-position marginals, the largest ones); the rest of the order is random. A scan
    stops once the prefix is within ``truncation_tol`` of u(all): the remaining marginals are below
    evaluation noise and count as 0 (a round with |u(all) - u(empty)| < tol therefore costs two
    evaluations and values everyone at 0). Sampling stops when the next new subset would exceed
    ``budget`` distinct evaluations (an unfinished permutation is dropped, so the estimate stays an
    average of whole permutations) or after ``max_permutations`` (default 100 n).
    """
    _check_players(n)
    if budget < n + 1:
        raise RewardsError(f"budget = {budget}: one permutation over {n} players needs up to {n + 1} evaluations")
    if not truncation_tol >= 0.0:
        raise RewardsError(f"truncation_tol must be >= 0, got {truncation_tol}")
    limit = 100 * max(n, 1) if max_permutations is None else max_permutations
    if limit < 1:
        raise RewardsError(f"max_permutations must be >= 1, got {max_permutations}")
    cache = _CachedUtility(u, budget)
    everyone = frozenset(range(n))
    u_empty = cache(frozenset())
    u_all = cache(everyone)
    totals = np.zeros(n, dtype=np.float64)
    done = 0
    while n and done < limit:
        lead = done % n
        order = [lead, *rng.permutation([p for p in range(n) if p != lead]).tolist()]
        marginals = np.zeros(n, dtype=np.float64)
        prefix: Coalition = frozenset()
        previous = u_empty
        try:
            for player in order:
                if abs(u_all - previous) < truncation_tol:
                    break
                prefix = prefix | {player}
                current = cache(prefix)
                marginals[player] = current - previous
                previous = current
        except _BudgetExhausted:
            break
        totals += marginals
        done += 1
    values = totals / done if done else totals
    return ShapleyResult(values=values, evaluations=len(cache.table), utilities=dict(cache.table), exact=False, permutations=done)


def shapley(
    n: int,
    u: Utility,
    budget: int = 256,
    rng: np.random.Generator | None = None,
    truncation_tol: float = 0.0,
) -> ShapleyResult:
    """Exact values when all 2^n subsets fit in ``budget``, else the sampled estimate.

    ``rng`` defaults to a generator seeded with 0 so that a sampled result can be recomputed from
    the stored utilities; pass a seeded generator (and record the seed) to vary it between rounds.
    """
    _check_players(n)
    if n <= EXACT_HARD_MAX_PLAYERS and (1 << n) <= budget:
        return shapley_exact(n, u, max_players=EXACT_HARD_MAX_PLAYERS)
    return shapley_sampled(n, u, budget, rng if rng is not None else np.random.default_rng(0), truncation_tol)


def encode_utilities(utilities: Mapping[Coalition, float]) -> list[tuple[list[int], float]]:
    """Subset utilities as JSON-ready ``[[members...], value]`` pairs in a canonical order."""
    items = sorted(((sorted(k), float(v)) for k, v in utilities.items()), key=lambda kv: (len(kv[0]), kv[0]))
    return [(members, value) for members, value in items]


def decode_utilities(pairs: list[tuple[list[int], float]] | list[list[object]]) -> dict[Coalition, float]:
    """Inverse of :func:`encode_utilities`, for recomputing values from a stored round."""
    out: dict[Coalition, float] = {}
    for pair in pairs:
        if len(pair) != 2:
            raise RewardsError(f"expected [members, value], got {pair!r}")
        members, value = pair
        if not isinstance(members, list) or not all(isinstance(m, int) and m >= 0 for m in members):
            raise RewardsError(f"coalition members must be a list of player indices, got {members!r}")
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RewardsError(f"utility must be a finite number, got {value!r}")
        out[frozenset(members)] = float(value)
    return out


__all__ = [
    "Coalition",
    "EXACT_DEFAULT_MAX_PLAYERS",
    "EXACT_HARD_MAX_PLAYERS",
    "ShapleyResult",
    "Utility",
    "decode_utilities",
    "encode_utilities",
    "shapley",
    "shapley_exact",
    "shapley_sampled",
]
