"""Planning the noise: Opacus's q = 1/ceil(n/B), the job's target reached from below, epsilon monotone in steps.

The search guesses sigma with a cheap RDP and confirms it with the job's accountant; whatever the
guess, the plan's epsilon is the accountant's own figure on the job's segment (what the ledger will
compute), inside [target - tolerance, target].
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedgpu.privacy.planning as dp
from fedgpu.errors import ConfigError
from fedgpu.privacy.dp import Accountant, DPConfig, epsilon_of, planned_steps
from fedgpu.privacy.planning import noise_for_job, noise_plan, plan_noise


@pytest.mark.parametrize(
    "n, batch, epochs, q, steps",
    [(4800, 480, 2, 1 / 10, 20), (4800, 500, 1, 1 / 10, 10), (100, 33, 3, 1 / 4, 12), (10, 64, 2, 1.0, 2), (93, 1, 1, 1 / 93, 93)],
)
def test_planned_steps_follow_opacus(n: int, batch: int, epochs: int, q: float, steps: int) -> None:
    assert planned_steps(n, batch, epochs) == (q, steps)
    assert q == 1 / math.ceil(n / batch)  # not batch / n


@pytest.mark.parametrize("bad", [(0, 32, 1), (100, 0, 1), (100, 32, 0), (100.0, 32, 1), (True, 32, 1)])
def test_planned_steps_rejects_bad_input(bad: tuple) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError):
        planned_steps(*bad)


def test_plan_noise_hits_the_target_from_below() -> None:
    sigma = plan_noise(3.0, 1e-5, 0.1, 200, Accountant.PRV)  # default tolerance: 0.1 % of epsilon
    eps = epsilon_of([(sigma, 0.1, 200)], 1e-5, Accountant.PRV)
    assert 3.0 - 3e-3 <= eps <= 3.0


@pytest.mark.parametrize(
    "epsilon, q, steps",
    [(8.0, 0.1, 150), (8.0, 0.1, 15), (3.0, 1.0, 10), (1.0, 0.01, 300), (20.0, 0.5, 30), (0.5, 0.02, 200)],
)
def test_prv_plan_is_the_ledgers_epsilon_inside_the_window(epsilon: float, q: float, steps: int) -> None:
    plan = noise_plan(epsilon, 1e-5, q, steps, Accountant.PRV)
    assert plan.epsilon == epsilon_of([(plan.noise_multiplier, q, steps)], 1e-5, Accountant.PRV)  # exactly the ledger's figure
    assert epsilon - 1e-3 * epsilon <= plan.epsilon <= epsilon
    assert 1 <= plan.evaluations <= 6  # Opacus's bisection takes ~15


def test_plan_agrees_with_opacus_bisection() -> None:
    from opacus.accountants.utils import get_noise_multiplier

    ours = plan_noise(3.0, 1e-5, 1.0, 10, Accountant.PRV)  # q = 1: cheap PRV evaluations
    theirs = get_noise_multiplier(target_epsilon=3.0, target_delta=1e-5, sample_rate=1.0, steps=10, accountant="prv", epsilon_tolerance=3e-3)
    assert ours == pytest.approx(theirs, rel=2e-3)  # both land in the same 0.1 % window of epsilon


@settings(max_examples=10, deadline=None)
@given(
    epsilon=st.floats(1.0, 30.0),
    q=st.floats(0.01, 1.0),
    steps=st.integers(1, 1000),
    rel_tol=st.sampled_from([1e-3, 1e-2]),
)
def test_rdp_plan_reaches_the_target_from_below(epsilon: float, q: float, steps: int, rel_tol: float) -> None:
    plan = noise_plan(epsilon, 1e-5, q, steps, Accountant.RDP, rel_tol * epsilon)
    assert epsilon - rel_tol * epsilon <= epsilon_of([(plan.noise_multiplier, q, steps)], 1e-5, Accountant.RDP) <= epsilon


def test_a_guess_far_off_still_ends_inside_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    for ratio in (0.3, 3.0):  # the first guess is off by x3 either way
        monkeypatch.setattr(dp, "_PRV_OVER_RDP", ratio)
        dp._search.cache_clear()
        plan = noise_plan(3.0, 1e-5, 1.0, 10, Accountant.PRV)
        assert 3.0 - 3e-3 <= epsilon_of([(plan.noise_multiplier, 1.0, 10)], 1e-5, Accountant.PRV) <= 3.0
    dp._search.cache_clear()


def test_a_budget_out_of_reach_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="too small"):
        plan_noise(0.05, 1e-5, 1.0, 10, Accountant.RDP)  # RDP's orders stop at 63: its epsilon never drops below ~0.1
    with pytest.raises(ConfigError, match="tolerance"):
        plan_noise(3.0, 1e-5, 0.1, 10, Accountant.RDP, tolerance=3.0)


def test_noise_for_job_plans_all_rounds_for_this_nodes_data() -> None:
    sigma, q, per_round = noise_for_job(8.0, 1e-5, 4800, 480, 1, 20, "rdp", tolerance=0.05)
    assert (q, per_round) == (0.1, 10)
    assert sigma == plan_noise(8.0, 1e-5, 0.1, 200, Accountant.RDP, 0.05)
    assert 8.0 - 0.05 <= epsilon_of([(sigma, q, 20 * per_round)], 1e-5, "rdp") <= 8.0
    small, q_small, _ = noise_for_job(8.0, 1e-5, 960, 480, 1, 20, "rdp", tolerance=0.1)  # a smaller owner: larger q, more noise
    assert q_small == 0.5 and small > sigma


def test_dpconfig_validates_with_named_errors() -> None:
    assert DPConfig(epsilon=3.0, accountant="rdp").accountant is Accountant.RDP
    with pytest.raises(ConfigError, match="allowed values are prv, rdp"):
        DPConfig(epsilon=3.0, accountant="gdp")
    with pytest.raises(ConfigError, match="delta"):
        DPConfig(epsilon=3.0, delta=0.0)
    with pytest.raises(ConfigError, match="epsilon"):
        DPConfig(epsilon=-1.0)
    with pytest.raises(ConfigError, match="max_grad_norm"):
        DPConfig(epsilon=1.0, max_grad_norm=0.0)


@settings(max_examples=6, deadline=None)
@given(
    sigma=st.floats(0.7, 4.0),
    q=st.floats(0.005, 0.5),
    steps=st.integers(1, 400),
    extra=st.integers(1, 400),
)
def test_epsilon_grows_with_steps(sigma: float, q: float, steps: int, extra: int) -> None:
    before = epsilon_of([(sigma, q, steps)], 1e-5, "rdp")
    after = epsilon_of([(sigma, q, steps + extra)], 1e-5, "rdp")
    assert after > before > 0
