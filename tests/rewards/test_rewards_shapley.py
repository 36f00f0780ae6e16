from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgpu.errors import RewardsError
from fedgpu.rewards.shapley import (
    Coalition,
    decode_utilities,
    encode_utilities,
    shapley,
    shapley_exact,
    shapley_sampled,
)

FAST = settings(max_examples=40, deadline=None)


def table_game(n: int, seed: int) -> dict[Coalition, float]:
    """An arbitrary game: an independent random utility for every subset."""
    rng = np.random.default_rng(seed)
    return {frozenset(i for i in range(n) if m >> i & 1): float(rng.normal()) for m in range(1 << n)}


def weighted_game(a: np.ndarray, c: float):
    """u(S) = x + c x^2 with x = sum of a over S: additive for c = 0, superadditive for c > 0 and a >= 0."""

    def u(s: Coalition) -> float:
        x = float(sum(a[i] for i in s))
        return x + c * x * x

    return u


@FAST
@given(n=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_exact_values_are_efficient_on_any_game(n: int, seed: int) -> None:
    table = table_game(n, seed)
    result = shapley_exact(n, table.__getitem__)
    everyone = frozenset(range(n))
    assert math.isclose(result.values.sum(), table[everyone] - table[frozenset()], abs_tol=1e-9)
    assert result.evaluations == 1 << n and result.exact
    assert result.utilities == table


@FAST
@given(
    a=st.lists(st.floats(0.0, 10.0), min_size=2, max_size=6),
    c=st.floats(0.0, 2.0),
    pair=st.tuples(st.integers(0, 5), st.integers(0, 5)),
)
def test_symmetric_players_get_equal_values(a: list[float], c: float, pair: tuple[int, int]) -> None:
    i, j = (p % len(a) for p in pair)
    weights = np.array(a)
    weights[j] = weights[i]
    result = shapley_exact(len(a), weighted_game(weights, c))
    assert math.isclose(result.values[i], result.values[j], rel_tol=1e-9, abs_tol=1e-9)
    x = weights.sum()
    assert math.isclose(result.values.sum(), x + c * x * x, rel_tol=1e-9, abs_tol=1e-9)


@FAST
@given(a=st.lists(st.floats(-5.0, 5.0), min_size=1, max_size=7))
def test_additive_game_pays_each_player_its_own_term(a: list[float]) -> None:
    result = shapley_exact(len(a), weighted_game(np.array(a), 0.0))
    np.testing.assert_allclose(result.values, a, atol=1e-9)


@FAST
@given(n=st.integers(2, 6), seed=st.integers(0, 2**32 - 1), null=st.integers(0, 5))
def test_null_player_gets_zero_exact_and_sampled(n: int, seed: int, null: int) -> None:
    null %= n
    table = table_game(n, seed)

    def u(s: Coalition) -> float:
        return table[s - {null}]

    assert shapley_exact(n, u).values[null] == 0.0
    assert shapley_sampled(n, u, budget=40, rng=np.random.default_rng(seed)).values[null] == 0.0


def test_each_subset_is_evaluated_once() -> None:
    calls: list[Coalition] = []

    def u(s: Coalition) -> float:
        calls.append(s)
        return float(len(s) ** 2)

    shapley_exact(5, u)
    assert len(calls) == len(set(calls)) == 32
    calls.clear()
    result = shapley_sampled(6, u, budget=30, rng=np.random.default_rng(0))
    assert len(calls) == len(set(calls)) == result.evaluations <= 30


def test_exact_refuses_too_many_players() -> None:
    with pytest.raises(RewardsError, match="limit is 8"):
        shapley_exact(9, lambda s: 0.0)
    with pytest.raises(RewardsError, match="limited to 12"):
        shapley_exact(3, lambda s: 0.0, max_players=13)


def test_sampled_matches_exact_on_additive_ten_player_game_within_budget() -> None:
    a = np.random.default_rng(3).normal(size=10)
    for seed in range(3):
        result = shapley_sampled(10, weighted_game(a, 0.0), budget=256, rng=np.random.default_rng(seed))
        assert result.evaluations <= 256 and not result.exact and result.permutations >= 10
        np.testing.assert_allclose(result.values, a, atol=1e-9)


def test_sampled_is_close_to_exact_on_a_non_additive_ten_player_game() -> None:
    a = np.abs(np.random.default_rng(1).normal(size=10))

    def u(s: Coalition) -> float:
        return math.sqrt(1.0 + sum(a[i] for i in s))  # diminishing returns: marginals depend on the prefix

    exact = shapley_exact(10, u, max_players=10).values
    for seed in range(3):
        approx = shapley_sampled(10, u, budget=256, rng=np.random.default_rng(seed)).values
        assert np.abs(approx - exact).max() <= 0.1 * np.abs(exact).max()
        assert np.corrcoef(approx, exact)[0, 1] > 0.97


def test_truncation_skips_a_round_without_progress() -> None:
    calls: list[Coalition] = []

    def u(s: Coalition) -> float:
        calls.append(s)
        return 1e-4 * len(s)

    result = shapley_sampled(10, u, budget=256, rng=np.random.default_rng(0), truncation_tol=0.01)
    assert result.evaluations == 2 and not result.values.any()


def test_truncation_stops_scans_once_the_prefix_reaches_the_total() -> None:
    # player 0 alone carries the whole value; the others add noise far under the tolerance
    def u(s: Coalition) -> float:
        return (1.0 if 0 in s else 0.0) + 1e-6 * len(s)

    full = shapley_sampled(10, u, budget=500, rng=np.random.default_rng(0))
    cut = shapley_sampled(10, u, budget=500, rng=np.random.default_rng(0), truncation_tol=1e-3)
    assert cut.permutations > 1.5 * full.permutations  # truncated scans are cheaper: more of them fit the budget
    assert cut.values[0] > 0.99 and np.abs(cut.values[1:]).max() < 1e-3


def test_sampled_needs_budget_for_one_permutation() -> None:
    with pytest.raises(RewardsError, match="budget"):
        shapley_sampled(10, lambda s: 0.0, budget=10, rng=np.random.default_rng(0))


def test_shapley_picks_exact_when_it_fits_the_budget() -> None:
    u = weighted_game(np.arange(9.0), 0.1)
    assert shapley(8, u, budget=256).exact
    sampled = shapley(9, u, budget=256)
    assert not sampled.exact and sampled.evaluations <= 256


def test_anyone_can_recompute_values_from_stored_utilities() -> None:
    a = np.abs(np.random.default_rng(5).normal(size=9))

    def u(s: Coalition) -> float:
        return math.log1p(sum(a[i] for i in s))

    stored = json.loads(json.dumps(encode_utilities(shapley(9, u, budget=200, rng=np.random.default_rng(7)).utilities)))
    utilities = decode_utilities(stored)
    first = shapley(9, u, budget=200, rng=np.random.default_rng(7))
    again = shapley_sampled(9, utilities.__getitem__, budget=200, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first.values, again.values)

    small = shapley(4, u)
    recomputed = shapley_exact(4, decode_utilities(json.loads(json.dumps(encode_utilities(small.utilities)))).__getitem__)
    np.testing.assert_array_equal(small.values, recomputed.values)


def test_decode_rejects_malformed_evidence() -> None:
    with pytest.raises(RewardsError):
        decode_utilities([[[0, 1], float("nan")]])
    with pytest.raises(RewardsError):
        decode_utilities([[["a"], 1.0]])


def test_non_finite_utility_is_refused() -> None:
    with pytest.raises(RewardsError, match="finite"):
        shapley_exact(2, lambda s: float("nan") if len(s) == 2 else 0.0)


def test_games_without_players() -> None:
    assert shapley(0, lambda s: 1.0).values.shape == (0,)
    assert shapley_sampled(0, lambda s: 1.0, budget=1, rng=np.random.default_rng(0)).values.shape == (0,)
