from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgpu.errors import RewardsError
from fedgpu.rewards.payout import payout, payout_units

VALUES = st.dictionaries(st.text(min_size=1, max_size=4), st.floats(-1e6, 1e6), max_size=12)


def test_positive_values_are_paid_pro_rata_and_the_rest_nothing() -> None:
    rewards = payout({"a": 3.0, "b": 1.0, "free": 0.0, "bad": -2.0}, pool=100.0)
    assert rewards == {"a": 75.0, "b": 25.0, "free": 0.0, "bad": 0.0}


def test_no_positive_value_pays_nothing() -> None:
    assert payout({"a": 0.0, "b": -1.0}, pool=10.0) == {"a": 0.0, "b": 0.0}
    assert payout({}, pool=10.0) == {}


@settings(max_examples=100, deadline=None)
@given(values=VALUES, pool=st.floats(0.0, 1e9))
def test_the_pool_is_shared_exactly(values: dict[str, float], pool: float) -> None:
    rewards = payout(values, pool)
    assert set(rewards) == set(values)
    assert all(r >= 0 for r in rewards.values())
    assert all(rewards[n] == 0.0 for n, v in values.items() if v <= 0)
    expected = pool if any(v > 0 for v in values.values()) else 0.0
    assert math.isclose(math.fsum(rewards.values()), expected, rel_tol=1e-12, abs_tol=1e-9)


@settings(max_examples=100, deadline=None)
@given(values=VALUES, pool=st.integers(0, 10**9))
def test_whole_units_add_up_to_the_pool(values: dict[str, float], pool: int) -> None:
    rewards = payout_units(values, pool)
    assert all(isinstance(r, int) and r >= 0 for r in rewards.values())
    assert sum(rewards.values()) == (pool if any(v > 0 for v in values.values()) else 0)
    total = sum(v for v in values.values() if v > 0)
    for node, v in values.items():
        if v > 0:
            assert abs(rewards[node] - pool * v / total) < 1.0 + 1e-6


def test_whole_units_break_ties_deterministically() -> None:
    assert payout_units({"b": 1.0, "a": 1.0, "c": 1.0}, 4) == {"a": 2, "b": 1, "c": 1}


def test_bad_input_is_refused() -> None:
    with pytest.raises(RewardsError, match="pool"):
        payout({"a": 1.0}, -1.0)
    with pytest.raises(RewardsError, match="finite"):
        payout({"a": float("nan")}, 1.0)
    with pytest.raises(RewardsError, match="pool_units"):
        payout_units({"a": 1.0}, -1)
