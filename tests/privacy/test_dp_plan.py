"""Planning the noise: Opacus's q = 1/ceil(n/B), the job's target reached from below, epsilon monotone in steps."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgpu.errors import ConfigError
from fedgpu.privacy.dp import Accountant, DPConfig, epsilon_of, noise_for_job, plan_noise, planned_steps


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
