"""Each rule on synthetic cohort sums: FedAvg is the weighted mean, the median and the trimmed mean keep
outlier cohorts out within their tolerance, the norm-bounded mean clips, and the zero-weight rule."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.server.strategy.aggregate import aggregate_median, aggregate_trimmed_avg
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgpu.aggregation import (
    CohortRecord,
    CoordinateMedian,
    FedAvg,
    NormBoundedMean,
    TrimmedMean,
    coordinate_median,
    fedavg,
    get_rule,
    norm_bounded_mean,
    trimmed_mean,
)
from fedgpu.errors import ConfigError, ProtocolError

SIZE = 6
means_st = st.lists(st.floats(-10, 10), min_size=SIZE, max_size=SIZE)
weight_st = st.floats(0.05, 5.0)


def cohorts_of(means: list[np.ndarray], weights: list[float]) -> list[CohortRecord]:
    """What the driver holds: S = W * m (a cohort's weighted sum) and W."""
    return [CohortRecord(np.asarray(m, dtype=np.float64) * w, w, (f"n{i}a", f"n{i}b", f"n{i}c")) for i, (m, w) in enumerate(zip(means, weights, strict=True))]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(means_st, weight_st), min_size=1, max_size=8))
def test_fedavg_is_the_weighted_mean_of_cohort_means(rows: list[tuple[list[float], float]]) -> None:
    means, weights = [np.array(m) for m, _ in rows], [w for _, w in rows]
    expected = sum(w * m for m, w in zip(means, weights, strict=True)) / sum(weights)
    np.testing.assert_allclose(fedavg(cohorts_of(means, weights)), expected, rtol=1e-9, atol=1e-9)
    assert FedAvg()(cohorts_of(means, weights)).shape == (SIZE,)


def test_fedavg_over_cohorts_is_fedavg_over_their_nodes() -> None:
    rng = np.random.default_rng(0)
    deltas, w = rng.normal(size=(9, SIZE)), rng.uniform(0.2, 0.8, 9)
    cohorts = [CohortRecord(sum(w[i] * deltas[i] for i in c), float(sum(w[i] for i in c))) for c in ([0, 1, 2], [3, 4, 5, 6], [7, 8])]
    np.testing.assert_allclose(fedavg(cohorts), (w[:, None] * deltas).sum(0) / w.sum())


@settings(max_examples=60, deadline=None)
@given(
    honest=st.lists(means_st, min_size=1, max_size=7),
    outlier=st.floats(-1e6, 1e6),
    outliers_share=st.floats(0.0, 0.99),
    data=st.data(),
)
def test_the_median_ignores_fewer_than_half_outlier_cohorts(honest: list[list[float]], outlier: float, outliers_share: float, data: st.DataObject) -> None:
    h = np.array(honest)
    bad = int(outliers_share * len(h)) if len(h) > 1 else 0
    bad = min(bad, len(h) - 1)  # fewer than half of all cohorts: bad < (len(h) + bad) / 2
    means = list(h) + [np.full(SIZE, outlier) * data.draw(st.sampled_from([1.0, -1.0])) for _ in range(bad)]
    weights = [data.draw(weight_st) for _ in means]
    got = coordinate_median(cohorts_of(means, weights))
    # per coordinate the median stays within what the clean cohorts sent, whatever the outliers are
    assert np.all(got >= h.min(0) - 1e-9) and np.all(got <= h.max(0) + 1e-9)


def test_the_median_is_unweighted_a_claimed_weight_buys_nothing() -> None:
    honest = [np.full(SIZE, 1.0), np.full(SIZE, 2.0), np.full(SIZE, 3.0)]
    bad = np.full(SIZE, -50.0)
    light = coordinate_median(cohorts_of([*honest, bad], [1.0, 1.0, 1.0, 1.0]))
    heavy = coordinate_median(cohorts_of([*honest, bad], [1.0, 1.0, 1.0, 1e6]))
    np.testing.assert_array_equal(light, heavy)
    np.testing.assert_array_equal(light, np.full(SIZE, 1.5))


@settings(max_examples=60, deadline=None)
@given(
    honest=st.lists(means_st, min_size=2, max_size=8),
    beta=st.floats(0.0, 0.49),
    outlier=st.floats(-1e6, 1e6),
    data=st.data(),
)
def test_the_trimmed_mean_ignores_up_to_its_cut(honest: list[list[float]], beta: float, outlier: float, data: st.DataObject) -> None:
    h = np.array(honest)
    # as many outliers as the cut removes from each end: int(beta * n) of the n = len(h) + bad cohorts
    bad = max((b for b in range(len(h)) if b <= int(beta * (len(h) + b))), default=0)
    means = list(h) + [np.full(SIZE, outlier) * data.draw(st.sampled_from([1.0, -1.0])) for _ in range(bad)]
    got = trimmed_mean(cohorts_of(means, [1.0] * len(means)), beta)
    assert np.all(got >= h.min(0) - 1e-6) and np.all(got <= h.max(0) + 1e-6)


def test_the_trimmed_mean_cuts_int_beta_n_from_each_end_and_beta_0_is_the_plain_mean() -> None:
    means = [np.full(SIZE, v) for v in (1.0, 2.0, 3.0, 4.0, 100.0)]
    cohorts = cohorts_of(means, [1.0, 2.0, 1.0, 3.0, 1.0])
    np.testing.assert_allclose(trimmed_mean(cohorts, 0.0), np.full(SIZE, 22.0))  # unweighted mean of the means
    np.testing.assert_allclose(trimmed_mean(cohorts, 0.19), np.full(SIZE, 22.0))  # int(0.19 * 5) = 0: nothing cut
    np.testing.assert_allclose(trimmed_mean(cohorts, 0.2), np.full(SIZE, 3.0))  # one cut from each end
    np.testing.assert_allclose(TrimmedMean(0.4)(cohorts), np.full(SIZE, 3.0))  # two from each end: the median


def test_the_robust_rules_wrap_flowers_functions() -> None:
    rng = np.random.default_rng(1)
    means, weights = list(rng.normal(size=(7, SIZE))), list(rng.uniform(0.1, 2.0, 7))
    cohorts = cohorts_of(means, weights)
    flat = [np.asarray(c.weighted) / c.weight for c in cohorts]
    np.testing.assert_array_equal(CoordinateMedian()(cohorts), aggregate_median([([m], 1) for m in flat])[0])
    np.testing.assert_array_equal(TrimmedMean(0.3)(cohorts), aggregate_trimmed_avg([([m], 1) for m in flat], 0.3)[0])
    np.testing.assert_allclose(CoordinateMedian()(cohorts), np.median(np.stack(means), axis=0))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(means_st, weight_st), min_size=1, max_size=8), st.floats(0.1, 20.0))
def test_the_norm_bounded_mean_clips_each_cohort_mean_before_the_weighted_average(rows: list[tuple[list[float], float]], bound: float) -> None:
    means, weights = [np.array(m) for m, _ in rows], [w for _, w in rows]
    got = norm_bounded_mean(cohorts_of(means, weights), bound)
    clipped = [m * min(1.0, bound / n) if (n := float(np.linalg.norm(m))) > 0 else m for m in means]
    np.testing.assert_allclose(got, sum(w * c for c, w in zip(clipped, weights, strict=True)) / sum(weights), rtol=1e-9, atol=1e-9)
    assert float(np.linalg.norm(got)) <= bound * (1 + 1e-9)  # a weighted average of vectors no longer than the bound


def test_a_norm_bounded_outlier_moves_the_average_by_at_most_its_share_of_the_bound() -> None:
    honest = [np.full(SIZE, 0.1), np.full(SIZE, 0.2)]
    clean = norm_bounded_mean(cohorts_of(honest, [1.0, 1.0]), 1.0)
    for scale in (1e3, -1e6):
        poisoned = norm_bounded_mean(cohorts_of([*honest, np.full(SIZE, scale)], [1.0, 1.0, 1.0]), 1.0)
        moved = poisoned - clean * 2 / 3  # the honest cohorts' part, now over three cohorts' weight
        assert float(np.linalg.norm(moved)) == pytest.approx(1.0 / 3)  # clipped to the bound, a third of the weight


def test_norm_bounded_is_fedavg_bit_for_bit_when_nothing_reaches_the_bound() -> None:
    rng = np.random.default_rng(2)
    cohorts = cohorts_of(list(rng.normal(size=(5, SIZE))), list(rng.uniform(0.1, 2.0, 5)))
    np.testing.assert_array_equal(NormBoundedMean(1e9)(cohorts), fedavg(cohorts))


@pytest.mark.parametrize("name", ["fedavg", "median", "trimmed_mean", "norm_bounded"])
def test_zero_weight_cohorts_are_left_out_and_a_weightless_round_stays(name: str) -> None:
    rule = get_rule(name)
    assert rule.name == name
    good = cohorts_of([np.full(SIZE, 1.0), np.full(SIZE, 2.0), np.full(SIZE, 3.0)], [1.0, 1.0, 1.0])
    weightless = CohortRecord(np.full(SIZE, 1e9), 0.0, ("x", "y", "z"))  # a sum no weight stands behind
    np.testing.assert_array_equal(rule([*good[:2], weightless, good[2]]), rule(good))
    np.testing.assert_array_equal(rule([weightless, CohortRecord(np.zeros(SIZE), 0.0)]), np.zeros(SIZE))


@pytest.mark.parametrize("name", ["fedavg", "median", "trimmed_mean", "norm_bounded"])
def test_malformed_cohorts_are_the_senders_fault(name: str) -> None:
    rule = get_rule(name)
    ok = CohortRecord(np.ones(SIZE), 1.0)
    with pytest.raises(ProtocolError, match="cohort 1: weight"):
        rule([ok, CohortRecord(np.ones(SIZE), -1.0)])
    with pytest.raises(ProtocolError, match="cohort 1: weight"):
        rule([ok, CohortRecord(np.ones(SIZE), float("nan"))])
    with pytest.raises(ProtocolError, match="cohort 1: sum has shape"):
        rule([ok, CohortRecord(np.ones(SIZE + 1), 1.0)])
    with pytest.raises(ProtocolError, match="no cohort sums"):
        rule([])


def test_rule_parameters_are_checked() -> None:
    for bad in (-0.1, 0.5, float("nan")):
        with pytest.raises(ConfigError, match="trim_fraction"):
            TrimmedMean(bad)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="norm_bound"):
            NormBoundedMean(bad)
