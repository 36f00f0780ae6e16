from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from fedgpu.errors import RewardsError
from fedgpu.rewards.estimate import NodeValueEstimator, Reputation, round_observations, split_cohort_value


def test_ridge_recovers_planted_values_from_reshuffled_cohorts_of_three() -> None:
    rng = np.random.default_rng(0)
    nodes = [f"n{i:02d}" for i in range(15)]
    planted = dict(zip(nodes, rng.normal(1.0, 1.0, len(nodes)), strict=True))
    est = NodeValueEstimator()
    for rnd in range(20):
        order = rng.permutation(nodes)
        cohorts = [list(order[i : i + 3]) for i in range(0, len(order), 3)]
        values = [sum(planted[m] for m in c) + rng.normal(0.0, 0.3) for c in cohorts]
        est.observe_round(rnd, cohorts, values)
    got = est.estimates()
    rho = spearmanr([planted[n] for n in nodes], [got[n] for n in nodes]).statistic
    assert rho >= 0.9
    assert len(est.observations) == 100


def test_cohorts_of_one_give_each_nodes_mean_value() -> None:
    rng = np.random.default_rng(1)
    est = NodeValueEstimator()
    seen: dict[str, list[float]] = {}
    for rnd in range(10):
        for node in ("a", "b", "c"):
            if rng.random() < 0.7:
                v = float(rng.normal())
                seen.setdefault(node, []).append(v)
                est.observe(rnd, [node], v)
    got = est.estimates()
    for node, values in seen.items():
        assert math.isclose(got[node], float(np.mean(values)), rel_tol=1e-5, abs_tol=1e-6)


@pytest.mark.parametrize("ridge", [0.0, 1e-6])
def test_nodes_never_separated_split_equally(ridge: float) -> None:
    est = NodeValueEstimator(ridge=ridge)
    est.observe(0, ["a", "b", "c"], 3.0)
    est.observe(1, ["a", "b", "c"], 6.0)
    got = est.estimates()
    for node in "abc":
        assert math.isclose(got[node], 1.5, rel_tol=1e-5)


def test_estimator_rejects_bad_observations() -> None:
    est = NodeValueEstimator()
    with pytest.raises(RewardsError, match="twice"):
        est.observe(0, ["a", "a"], 1.0)
    with pytest.raises(RewardsError, match="finite"):
        est.observe(0, ["a"], float("nan"))
    with pytest.raises(RewardsError):
        est.observe(0, [], 1.0)
    assert est.estimates() == {}


def test_split_is_equal_without_evidence_and_pro_rata_with_it() -> None:
    assert split_cohort_value(3.0, ["a", "b", "c"], {}) == {"a": 1.0, "b": 1.0, "c": 1.0}
    shares = split_cohort_value(6.0, ["a", "b", "c"], {"a": 2.0, "b": 1.0, "c": -5.0})
    assert shares == {"a": 4.0, "b": 2.0, "c": 0.0}


def test_split_charges_a_loss_to_the_members_with_negative_estimates() -> None:
    shares = split_cohort_value(-4.0, ["good", "bad"], {"good": 2.0, "bad": -1.0})
    assert shares == {"good": 0.0, "bad": -4.0}


def test_split_gives_a_newcomer_the_mean_weight() -> None:
    shares = split_cohort_value(6.0, ["a", "b", "new"], {"a": 1.0, "b": 3.0})
    assert shares == {"a": 1.0, "b": 3.0, "new": 2.0}


@settings(max_examples=60, deadline=None)
@given(
    value=st.floats(-100, 100),
    estimates=st.lists(st.one_of(st.none(), st.floats(-10, 10)), min_size=1, max_size=6),
)
def test_split_always_adds_up_to_the_cohort_value(value: float, estimates: list[float | None]) -> None:
    members = [f"n{i}" for i in range(len(estimates))]
    known = {m: e for m, e in zip(members, estimates, strict=True) if e is not None}
    shares = split_cohort_value(value, members, known)
    assert set(shares) == set(members)
    assert math.isclose(sum(shares.values()), value, rel_tol=1e-9, abs_tol=1e-9)
    assert all(s * value >= 0 for s in shares.values())  # nobody is charged for a gain or paid for a loss


def test_reputation_is_an_exponential_moving_average() -> None:
    rep = Reputation(alpha=0.5)
    assert rep.get("a") == 0.0
    assert rep.update("a", 4.0) == 2.0
    assert rep.update("a", 0.0) == 1.0
    assert rep.update("a", -3.0) == -1.0
    assert rep.as_dict() == {"a": -1.0}
    assert Reputation(alpha=1.0, initial=5.0).update("x", 2.0) == 2.0
    with pytest.raises(RewardsError, match="alpha"):
        Reputation(alpha=0.0)


def test_split_refuses_a_non_finite_value() -> None:
    with pytest.raises(RewardsError, match="finite"):
        split_cohort_value(float("inf"), ["a"], {})


def test_lower_bounds_separate_a_free_rider_from_honest_nodes_across_reshuffled_cohorts() -> None:
    import math

    rng = np.random.default_rng(0)
    worth = {f"h{i}": 0.12 for i in range(8)} | {"zero": 0.0, "noise": 0.0}
    est = NodeValueEstimator()
    nodes = list(worth)
    for rnd in range(12):
        if rnd == 1:  # too few observations for an error estimate: no confidence yet
            assert all(b == -math.inf for b in est.lower_bounds().values())
        order = rng.permutation(nodes)
        for cohort in (order[:3], order[3:6], order[6:]):
            est.observe(rnd, list(cohort), sum(worth[n] for n in cohort) + rng.normal(0, 0.02))
    lower = est.lower_bounds(2.0)
    assert all(lower[f"h{i}"] > 0 for i in range(8))
    assert lower["zero"] < 0 and lower["noise"] < 0


def test_a_rounds_observations_are_bounded_by_its_scale_and_divided_by_its_root() -> None:
    # a poisoned cohort's loss of 50 counts as -scale; the rest keep their sign and shrink by sqrt(scale)
    assert round_observations([0.04, -50.0, 0.0], scale=0.04) == pytest.approx([0.2, -0.2, 0.0])
    with pytest.raises(RewardsError, match="scale"):
        round_observations([1.0], scale=0.0)


def _dense_reference(observations: list[tuple[list[str], float]], ridge: float, z: float) -> tuple[dict[str, float], dict[str, float]]:
    """The estimator as it was before it went sparse: one dense n x n system over every node."""
    index: dict[str, int] = {}
    for members, _ in observations:
        for m in members:
            index.setdefault(m, len(index))
    n, count = len(index), len(observations)
    gram, target = np.zeros((n, n)), np.zeros(n)
    for members, value in observations:
        idx = np.array([index[m] for m in members])
        gram[np.ix_(idx, idx)] += 1.0
        target[idx] += value
    x = np.linalg.solve(gram + ridge * np.eye(n), target) if ridge > 0.0 else np.linalg.lstsq(gram, target, rcond=None)[0]
    inv = np.linalg.pinv(gram + ridge * np.eye(n))
    xb = inv @ target
    resid = [v - sum(xb[index[m]] for m in members) for members, v in observations]
    sigma2 = math.fsum(r * r for r in resid) / (count - n)
    se = np.sqrt(np.maximum(np.diag(inv), 0.0) * sigma2)
    return {m: float(x[i]) for m, i in index.items()}, {m: float(xb[i] - z * se[i]) for m, i in index.items()}


@pytest.mark.parametrize(("ridge", "dense_limit", "groups"), [(1e-6, 4096, 1), (1e-6, 4096, 3), (0.0, 4096, 3), (1e-6, 2, 3), (0.5, 1, 1)])
def test_sparse_blocks_equal_the_dense_system(ridge: float, dense_limit: int, groups: int) -> None:
    """Per connected block (dense or, over dense_limit, a sparse factorisation) the estimates and lower
    bounds are the dense n x n system's; with one block the arithmetic is the same."""
    rng = np.random.default_rng(7)
    observations: list[tuple[list[str], float]] = []
    for g in range(groups):  # nodes of different groups never share a cohort: separate blocks
        nodes = [f"g{g}n{i}" for i in range(6)]
        for _ in range(8):
            order = list(rng.permutation(nodes))
            observations += [(order[i : i + 2], float(rng.normal())) for i in range(0, 6, 2)]
    est = NodeValueEstimator(ridge=ridge, dense_limit=dense_limit)
    for rnd, (members, value) in enumerate(observations):
        est.observe(rnd, members, value)
    want_x, want_lb = _dense_reference(observations, ridge, z=1.5)
    got_x, got_lb = est.estimates(), est.lower_bounds(1.5)
    assert set(got_x) == set(want_x) and len(got_x) == 6 * groups
    for node in want_x:
        assert math.isclose(got_x[node], want_x[node], rel_tol=1e-7, abs_tol=1e-9), node
        assert math.isclose(got_lb[node], want_lb[node], rel_tol=1e-7, abs_tol=1e-9), node
    if groups == 1 and dense_limit > 6:
        assert got_x == want_x  # one block: the very same solve


def test_sparse_estimator_keeps_no_square_matrix_at_scale() -> None:
    """20,000 nodes seen once each in cohorts of five (a dense system: 3.2 GB): memory is the observations'."""
    est = NodeValueEstimator()
    for c in range(4_000):
        est.observe(0, [f"n{5 * c + j}" for j in range(5)], 1.0)
    got = est.estimates()
    assert len(got) == 20_000
    assert all(math.isclose(v, 0.2, rel_tol=1e-4) for v in list(got.values())[:50])
    assert est._gram_matrix().nnz == 4_000 * 25


def _cohort_game(seed: int, credit_rule: str, rounds: int = 40, z: float = 1.5) -> dict[str, float]:
    """Total rewards of 8 honest nodes and 2 free riders (worth 0), 6 of them a round in cohorts of 3.

    A round's pool (1) goes pro rata to the round's credit; a cohort's value is its members' worth plus
    noise as large as the mean honest worth."""
    from fedgpu.rewards import payout, proven_credit

    rng = np.random.default_rng(seed)
    worth = {f"h{i}": float(w) for i, w in enumerate(rng.uniform(0.5, 1.5, 8))} | {"fr0": 0.0, "fr1": 0.0}
    nodes, est = sorted(worth), NodeValueEstimator()
    totals = dict.fromkeys(nodes, 0.0)
    for rnd in range(1, rounds + 1):
        chosen = list(rng.choice(nodes, 6, replace=False))
        cohorts = [chosen[:3], chosen[3:]]
        values = [max(sum(worth[m] for m in c) + float(rng.normal(0.0, 1.0)), 0.0) for c in cohorts]
        est.observe_round(rnd, cohorts, values)
        lower, credit = est.lower_bounds(z), {}
        for c, v in zip(cohorts, values, strict=True):
            w = {m: max(lower[m], 0.0) for m in c}
            credit |= proven_credit(c, lower) if credit_rule == "proven" else split_cohort_value(v, c, w) if any(w.values()) else dict.fromkeys(c, 0.0)
        for n, r in payout(credit, 1.0).items():
            totals[n] += r
    return totals


def test_proven_credit_pays_free_riders_about_nothing_and_honest_nodes_positively() -> None:
    ratios, shares = [], []
    for seed in range(6):
        proven, split = _cohort_game(seed, "proven"), _cohort_game(seed, "split", z=0.5)  # the old rule: a share of the cohort's value
        honest = sorted(v for n, v in proven.items() if n.startswith("h"))
        median = (honest[3] + honest[4]) / 2
        assert median > 0.0 and sum(v > 0 for v in honest) >= 6  # honest nodes get paid
        ratios.append(max(proven["fr0"], proven["fr1"]) / median)
        split_honest = sorted(v for n, v in split.items() if n.startswith("h"))
        shares.append(max(split["fr0"], split["fr1"]) / ((split_honest[3] + split_honest[4]) / 2))
    assert float(np.median(ratios)) <= 0.1 < float(np.median(shares))  # a share by a loose bound pays them several times more


def test_proven_credit_is_the_lower_bound_in_the_rounds_unit() -> None:
    from fedgpu.rewards import proven_credit

    got = proven_credit(["a", "b", "c", "d"], {"a": 0.5, "b": -0.2, "c": -math.inf}, unit=2.0)
    assert got == {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}
    with pytest.raises(RewardsError, match="twice"):
        proven_credit(["a", "a"], {"a": 1.0})
    with pytest.raises(RewardsError, match="unit"):
        proven_credit(["a"], {"a": 1.0}, unit=math.nan)
