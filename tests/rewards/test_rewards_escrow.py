"""A cohort's reward reaches a member only once the evidence shows that member is worth > 0."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedgpu.rewards.escrow import Escrow
from fedgpu.rewards.estimate import NodeValueEstimator


def test_nothing_is_paid_without_evidence_and_the_credit_waits() -> None:
    e = Escrow()
    e.add(1, ["a", "b", "c"], 30.0)
    assert e.release({"a": 1.0, "b": 1.0, "c": 0.0}, {"a": -math.inf, "b": -math.inf, "c": -math.inf}, {"a", "b", "c"}) == {}
    assert e.held == 30.0
    # Later the estimates separate the members: a and b are paid their shares, c (worth 0) never is.
    paid = e.release({"a": 2.0, "b": 1.0, "c": 0.0}, {"a": 0.5, "b": 0.1, "c": -1.0}, {"a", "b", "c"})
    assert paid == pytest.approx({"a": 20.0, "b": 10.0})
    assert e.release({"a": 2.0, "b": 1.0, "c": 5.0}, {"a": 1, "b": 1, "c": 1}, {"a", "b", "c"}) == {}  # paid once, then gone


def test_absent_members_are_paid_when_they_next_take_part() -> None:
    e = Escrow()
    e.add(1, ["a", "b"], 10.0)
    assert e.release({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, {"a"}) == {"a": 5.0}
    assert e.release({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, {"b"}) == {"b": 5.0}
    assert e.held == 0.0


def test_a_cohort_of_one_is_its_own_evidence() -> None:
    e = Escrow()
    e.add(1, ["solo"], 7.0)
    assert e.release({}, {}, {"solo"}) == {"solo": 7.0}


def test_never_pays_more_than_the_credit() -> None:
    e = Escrow()
    e.add(1, ["a", "b"], 10.0)
    first = e.release({"a": 1.0, "b": 0.0}, {"a": 1.0, "b": -1.0}, {"a", "b"})  # a alone has value: takes it all
    second = e.release({"a": 0.0, "b": 1.0}, {"a": -1.0, "b": 1.0}, {"a", "b"})  # then b looks good: nothing left
    assert first == {"a": 10.0} and second == {}


def test_bad_credit_is_refused() -> None:
    with pytest.raises(ValueError):
        Escrow().add(1, ["a"], float("nan"))


def test_lower_bounds_separate_a_free_rider_from_honest_nodes_across_reshuffled_cohorts() -> None:
    rng = np.random.default_rng(0)
    worth = {f"h{i}": 0.12 for i in range(8)} | {"zero": 0.0, "noise": 0.0}
    est = NodeValueEstimator()
    nodes = list(worth)
    assert all(b == -math.inf for b in est.lower_bounds().values())
    for rnd in range(12):
        order = rng.permutation(nodes)
        for cohort in (order[:3], order[3:6], order[6:]):
            est.observe(rnd, list(cohort), sum(worth[n] for n in cohort) + rng.normal(0, 0.02))
    lower = est.lower_bounds(2.0)
    assert all(lower[f"h{i}"] > 0 for i in range(8))
    assert lower["zero"] < 0 and lower["noise"] < 0
