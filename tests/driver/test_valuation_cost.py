"""What keeps a round's valuation cheap without changing what it decides: the validation subset, FedAvg's
coalitions from the total less the absent cohorts, and the driver's fixed torch threads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedgpu.aggregation import CohortRecord, FedAvg
from fedgpu.config import EncryptionConfig, JobConfig, RewardsConfig
from fedgpu.datasets import ArrayDataset
from fedgpu.driver.driver import JobDriver
from fedgpu.driver.sums import CohortSum
from fedgpu.driver.valuation import RoundValuer
from fedgpu.errors import ConfigError, RewardsError
from fedgpu.rewards.utility import CohortGame
from fedgpu.wire import tensors
from fedgpu.wire.records import JobEvent, JobEventKind
from tests.driver.test_valuation_integration import linear_problem


def problem(n: int) -> tuple:  # type: ignore[type-arg]
    """Points labelled by the sign of x0 and a linear model pointing that way; honest updates sharpen it."""
    return linear_problem(n, 0.3)


G = np.array([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # sharpen along x0


def test_a_round_is_valued_on_a_fresh_seeded_subset_and_still_leaves_the_poisoner_out() -> None:
    x, y, factory, w = problem(2000)
    rng = np.random.default_rng(1)
    sums = [(0.2 + 0.1 * i) * G + 0.05 * rng.normal(size=6) for i in range(4)] + [-10.0 * G]
    cohorts = [[f"h{i}"] for i in range(4)] + [["p"]]
    valuer = RoundValuer(factory, ArrayDataset(x, y), budget=16, pool=100.0, samples=512)
    res = valuer.value(1, w, cohorts, sums, [1.0] * 5)
    assert json.loads(res.evidence)["validation_samples"] == [512, 2000]
    assert res.kept == [0, 1, 2, 3] and res.cohort_values[4] < 0 and res.rewards["p"] == 0.0
    # the passes are over 512 samples: a quarter of what all 2,000 would cost
    full = RoundValuer(factory, ArrayDataset(x, y), budget=16, pool=100.0).value(1, w, cohorts, sums, [1.0] * 5)
    assert full.kept == res.kept and json.loads(full.evidence)["validation_samples"] == [2000, 2000]
    # the subset is the round's: the same round draws the same samples, the next round others
    sx, sy = valuer.round_validation(1)
    again = RoundValuer(factory, ArrayDataset(x, y), budget=16, pool=100.0, samples=512).round_validation(1)
    np.testing.assert_array_equal(sx, again[0])
    np.testing.assert_array_equal(sy, again[1])
    assert len(sx) == 512 and not np.array_equal(sx, valuer.round_validation(2)[0])
    assert len(RoundValuer(factory, ArrayDataset(x[:300], y[:300]), 16, 100.0, samples=512).round_validation(1)[1]) == 300  # fewer: all
    with pytest.raises(RewardsError, match="at least 2"):
        RoundValuer(factory, ArrayDataset(x, y), 16, 100.0, samples=1)


def test_fedavg_coalitions_near_the_grand_one_are_the_rules_own() -> None:
    x, y, factory, w = problem(400)
    rng = np.random.default_rng(2)
    sums = [rng.normal(size=6) for _ in range(7)]
    weights = [1.0, 2.0, 0.0, 1.5, 1.0, 3.0, 0.5]  # a weight-0 cohort is left out by the rule, its sum too
    base = 0.1 * G
    game = CohortGame(factory, w, base, sums, weights, x, y, server_lr=1.5)
    along = base / np.linalg.norm(base)
    for coalition in (frozenset(range(7)), frozenset({0, 1, 2, 3, 5}), frozenset({1, 3, 4, 5, 6}), frozenset({0, 6})):
        rule = FedAvg()([CohortRecord(sums[c] if c in coalition else np.zeros(6), weights[c]) for c in range(7)])
        expected = 1.5 * (rule - (rule @ along) * along)
        np.testing.assert_allclose(game.server_step(coalition), expected, rtol=1e-12, atol=1e-15)
    # the linear values are minus each cohort's part (parts()) times the loss gradient at the midpoint
    parts = game.parts()
    mid = w + game.step(frozenset())[1] * base + 0.5 * parts.sum(axis=0)
    model = factory()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(mid[:4].reshape(2, 2)))
        model.bias.copy_(torch.tensor(mid[4:]))
    nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()  # type: ignore[no-untyped-call]
    grad = np.concatenate([model.weight.grad.numpy().ravel(), model.bias.grad.numpy()]).astype(np.float64)  # type: ignore[union-attr]
    lin = game.linear_values()
    assert lin[2] == 0.0
    np.testing.assert_allclose(lin, -(parts @ grad), rtol=1e-4, atol=1e-9)


def _driver(tmp: Path, threads: int = 1) -> JobDriver:
    rng = np.random.default_rng(0)
    vx, vy = rng.normal(size=(64, 40)).astype(np.float32), rng.integers(0, 10, 64)
    job = JobConfig(
        model="mlp", dataset="mnist1d", rounds=1, nodes_per_round=3, min_nodes=3, cohort_size=1, encryption=EncryptionConfig("none"),
        rewards=RewardsConfig(pool_per_round=100.0),
    ).validate()
    return JobDriver("127.0.0.1:9", job, tmp, validation=ArrayDataset(vx, vy), threads=threads)  # the channel is never used


def test_the_driver_values_at_its_own_threads_and_gives_torch_back_its_own(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        _driver(tmp_path / "zero", threads=0)
    driver = _driver(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's, whatever this machine's default is
    seen: list[int] = []
    assert driver.valuer is not None
    value = driver.valuer.value

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(torch.get_num_threads())
        return value(*args, **kwargs)

    driver.valuer.value = spy  # type: ignore[method-assign]
    try:
        start = tensors.flatten(driver.state)
        rng = np.random.default_rng(0)
        members = [["a"], ["b"], ["c"]]
        sums = [CohortSum(m, rng.normal(size=start.size) * 0.01, np.full(start.size, 1.0)) for m in members]
        driver.fetch_sums = lambda rnd: (sums, [])  # type: ignore[method-assign]
        rec, _ = driver.on_round(JobEvent(JobEventKind.SUMS_READY, 1, ("a", "b", "c"), (("a",), ("b",), ("c",))))
        assert seen == [1] and torch.get_num_threads() == 2
        assert rec["valuation"]["evaluations"] > 0
    finally:
        torch.set_num_threads(before)
        driver.channel.close()


def test_the_jobs_valuation_samples_are_checked() -> None:
    with pytest.raises(ConfigError, match="valuation_samples"):
        JobConfig(model="mlp", dataset="mnist1d", rewards=RewardsConfig(valuation_samples=1)).validate()
    assert RewardsConfig().valuation_samples == 512
