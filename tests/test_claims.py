"""Bounded claims on synthetic sums: what honest members can send passes, each broken rule is named."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgpu import crypto
from fedgpu.claims import (
    DEFAULT_MAX_WEIGHT,
    DEFAULT_NORM_BOUND,
    ClaimBounds,
    Rule,
    SumTolerance,
    check_cohort_sum,
    clamp_claim,
)
from fedgpu.crypto import ChunkLayout
from fedgpu.errors import ConfigError

BOUNDS = ClaimBounds(max_weight=2.0, update_norm_bound=5.0)
LAYOUT = ChunkLayout(num_params=1_000, values_per_chunk=300)  # 4 chunks


def cohort_sum(deltas: list[np.ndarray], weights: list[float], bounds: ClaimBounds = BOUNDS, clamp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """What the driver decrypts for these members (in the clear): (sum of w_i delta_i, each chunk's weight slot)."""
    total = [np.zeros(LAYOUT.chunk_values(i)) for i in range(LAYOUT.num_chunks)]
    for d, w in zip(deltas, weights, strict=True):
        if clamp:
            d, w, _ = clamp_claim(d, w, bounds)
        for i, c in enumerate(LAYOUT.split(d, w)):
            total[i] += c
    return LAYOUT.join(total)


def honest(n: int, seed: int = 0, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, scale, LAYOUT.num_params) for _ in range(n)]


def test_clamp_caps_the_weight_and_scales_the_change_to_the_bound() -> None:
    delta = np.full(100, 1.0)  # norm 10
    out, w, clamped = clamp_claim(delta, 3.0, BOUNDS)
    assert clamped and w == 2.0 and np.linalg.norm(out) == pytest.approx(5.0)
    np.testing.assert_allclose(out / np.linalg.norm(out), delta / 10)  # the direction is kept
    small = np.full(100, 0.1)
    out, w, clamped = clamp_claim(small, 0.5, BOUNDS)
    assert not clamped and w == 0.5 and out is small
    f32 = np.ones(100, np.float32)
    assert clamp_claim(f32, 1.0, BOUNDS)[0].dtype == np.float32


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 6),
    weights=st.lists(st.floats(1e-3, 1e6), min_size=6, max_size=6),
    scales=st.lists(st.floats(1e-4, 1e3), min_size=6, max_size=6),
)
def test_whatever_honest_nodes_train_their_clamped_sum_passes(n: int, weights: list[float], scales: list[float]) -> None:
    deltas = [d * s for d, s in zip(honest(n, seed=n), scales, strict=False)]
    weighted, chunk_weights = cohort_sum(deltas, weights[:n])
    assert check_cohort_sum(weighted, chunk_weights, n, BOUNDS) is None


def test_a_cohort_at_every_bound_at_once_passes() -> None:
    deltas = [d * 100 for d in honest(3)]
    weighted, chunk_weights = cohort_sum(deltas, [50.0] * 3)
    assert float(chunk_weights[0]) == pytest.approx(3 * BOUNDS.max_weight)
    assert float(np.linalg.norm(weighted)) <= 3 * BOUNDS.max_weight * BOUNDS.update_norm_bound
    assert check_cohort_sum(weighted, chunk_weights, 3, BOUNDS) is None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(bad: float) -> None:
    weighted, chunk_weights = cohort_sum(honest(2), [1.0, 1.0])
    for target in (weighted, chunk_weights):
        w, c = weighted.copy(), chunk_weights.copy()
        (w if target is weighted else c)[1] = bad
        rejected = check_cohort_sum(w, c, 2, BOUNDS)
        assert rejected is not None and rejected.rule is Rule.NON_FINITE


def test_chunks_whose_weight_slots_disagree_are_rejected() -> None:
    """A member that claims one weight in one chunk and another elsewhere (to weight some parameters more)."""
    weighted, chunk_weights = cohort_sum(honest(2), [1.0, 1.0])
    chunk_weights[2] += 0.5
    rejected = check_cohort_sum(weighted, chunk_weights, 2, BOUNDS)
    assert rejected is not None and rejected.rule is Rule.WEIGHTS_DISAGREE
    assert "2..2.5" in rejected.reason


@pytest.mark.parametrize("claimed", [1e6, 2.0 + 1e-3, -0.5, 0.0])
def test_a_weight_outside_zero_to_members_times_cap_is_rejected(claimed: float) -> None:
    """One member's claim, unclamped: 10^6 times its share, just over the cap, negative, or no weight at all."""
    weighted, chunk_weights = cohort_sum([d * 0.01 for d in honest(1)], [claimed], clamp=False)
    others, other_weights = cohort_sum(honest(2, seed=1), [2.0, 2.0])
    total_w, total_c = weighted + others, chunk_weights + other_weights
    rejected = check_cohort_sum(total_w, total_c, 3, BOUNDS)
    if claimed in (-0.5, 0.0):  # the cohort's total (4 - 0.5, 4 + 0) is in range: only the norm can tell
        assert rejected is None or rejected.rule is Rule.NORM_TOO_LARGE
        rejected = check_cohort_sum(weighted, chunk_weights, 1, BOUNDS)  # a cohort of that member alone
    assert rejected is not None and rejected.rule is Rule.WEIGHT_OUT_OF_RANGE
    assert "(0, " in rejected.reason


def test_a_change_beyond_the_norm_bound_is_rejected() -> None:
    """A member claiming a legal weight but sending a change 2x the bound (the others send the most they may)."""
    bound = BOUNDS.update_norm_bound
    deltas = [d / np.linalg.norm(d) * bound for d in honest(3)]
    deltas[0] = deltas[0] * 2 * 3  # enough to exceed W * B whatever the others' directions
    weighted, chunk_weights = cohort_sum(deltas, [1.0, 1.0, 1.0], clamp=False)
    rejected = check_cohort_sum(weighted, chunk_weights, 3, BOUNDS)
    assert rejected is not None and rejected.rule is Rule.NORM_TOO_LARGE
    # the bound is W * B, tighter than members * cap * B: a weight deflated by a liar tightens it too
    assert check_cohort_sum(weighted, chunk_weights, 3, ClaimBounds(2.0, math.inf)) is None


def test_the_rules_are_checked_in_order() -> None:
    weighted, chunk_weights = cohort_sum(honest(1), [1e9], clamp=False)
    chunk_weights[0] = 1.0
    rejected = check_cohort_sum(weighted * 1e9, chunk_weights, 1, BOUNDS)
    assert rejected is not None and rejected.rule is Rule.WEIGHTS_DISAGREE


def test_random_garbage_fails_whatever_its_scale() -> None:
    rng = np.random.default_rng(5)
    for scale in (1e-3, 1.0, 1e6):
        weighted = rng.uniform(-scale, scale, LAYOUT.num_params) * 1e3
        chunk_weights = rng.uniform(-scale, scale, LAYOUT.num_chunks)
        assert check_cohort_sum(weighted, chunk_weights, 3, BOUNDS) is not None


def test_the_schemes_error_is_allowed_and_no_more() -> None:
    deltas = [d / np.linalg.norm(d) * BOUNDS.update_norm_bound for d in honest(3)]
    deltas = [deltas[0]] * 3  # all along one direction: the sum is exactly at W * B
    weighted, chunk_weights = cohort_sum(deltas, [2.0] * 3)
    rng = np.random.default_rng(0)
    err = 1e-3
    noisy_w = weighted + rng.choice([-err, err], weighted.size) * np.sign(weighted)  # pushes the norm out
    noisy_c = chunk_weights + err  # and the weight just past 3 x cap
    assert check_cohort_sum(noisy_w, noisy_c, 3, BOUNDS) is not None
    assert check_cohort_sum(noisy_w, noisy_c, 3, BOUNDS, SumTolerance(value=err, weight=err)) is None


def test_client_dp_noise_shares_are_allowed_for() -> None:
    """Under client-level DP each member adds N(0, (z C)^2 / k) per value after clipping to C = B."""
    k, z = 3, 1.0
    clip = BOUNDS.update_norm_bound
    std = z * clip / math.sqrt(k)
    rng = np.random.default_rng(1)
    deltas = [clamp_claim(d, 1.0, BOUNDS)[0] + rng.normal(0, std, LAYOUT.num_params) for d in honest(k, scale=10)]
    weighted, chunk_weights = cohort_sum(deltas, [2.0] * k, clamp=False)
    assert check_cohort_sum(weighted, chunk_weights, k, BOUNDS) is not None  # far beyond W * B without the allowance
    assert check_cohort_sum(weighted, chunk_weights, k, BOUNDS, SumTolerance(noise_std=std)) is None
    weighted[:10] *= 1e4
    assert check_cohort_sum(weighted, chunk_weights, k, BOUNDS, SumTolerance(noise_std=std)) is not None


def test_defaults_and_bounds_from_the_wire() -> None:
    assert ClaimBounds.declared(0.0, 0.0, None) == ClaimBounds(DEFAULT_MAX_WEIGHT, DEFAULT_NORM_BOUND)
    assert ClaimBounds.declared(3.0, 0.0, 0.5) == ClaimBounds(3.0, 0.5)  # client-level DP: B defaults to the clip
    assert ClaimBounds.declared(3.0, 7.0, 0.5) == ClaimBounds(3.0, 7.0)
    assert ClaimBounds.from_wire(0.0, 0.0) == ClaimBounds(math.inf, math.inf)
    for bad in (-1.0, math.nan):
        with pytest.raises(ConfigError, match="max_weight"):
            ClaimBounds(bad, 1.0)
        with pytest.raises(ConfigError, match="update_norm_bound"):
            ClaimBounds(1.0, bad)


@pytest.mark.parametrize("scheme", ["ckks", "bfv8", "none"])
def test_every_scheme_states_its_sum_error(scheme: str) -> None:
    keys = crypto.generate_keys(scheme) if scheme != "none" else None
    params = keys.params if keys is not None else (1000).to_bytes(8, "little")
    value, weight = crypto.sum_error(scheme, params, 3)
    assert 0 <= weight <= value < 0.1
    assert crypto.sum_error(scheme, params, 300)[0] >= value


def test_the_progress_line_names_a_dropped_cohort(capsys: pytest.CaptureFixture[str]) -> None:
    from fedgpu.cli.train import print_progress

    ev = {
        "event": "round", "round": 2, "participants": ["a", "b"], "accuracy": 0.9, "loss": 0.3, "seconds": 1.0, "bytes_up": 10, "elapsed": 3.0,
        "dropped_cohorts": [{"cohort": 1, "members": ["b"], "rule": "weight_out_of_range", "reason": "weight -4.8e+06 is not in (0, 1 x 10 = 10]"}],
    }
    print_progress(ev)
    line = capsys.readouterr().out
    assert line.startswith("round   2") and "dropped cohort 1: weight -4.8e+06 is not in (0, 1 x 10 = 10]" in line
    print_progress({**ev, "dropped_cohorts": []})
    assert "dropped" not in capsys.readouterr().out
