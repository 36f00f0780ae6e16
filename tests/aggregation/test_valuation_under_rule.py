"""Valuation values the game of the rule in force: a coalition's model is the job's rule over the round's
cohorts with those outside it sending zeros, the round's model the rule over the kept cohorts, and the
driver aggregates with the same rule."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedgpu.aggregation import CohortRecord, CoordinateMedian, FedAvg, NormBoundedMean, TrimmedMean, get_rule
from fedgpu.aggregation.interface import Cohort
from fedgpu.config import AggregationConfig, EncryptionConfig, JobConfig, RewardsConfig
from fedgpu.datasets import ArrayDataset
from fedgpu.driver.driver import JobDriver
from fedgpu.driver.sums import CohortSum
from fedgpu.driver.valuation import RoundValuer
from fedgpu.models import MLP, ModelSpec
from fedgpu.rewards.shapley import shapley
from fedgpu.rewards.utility import CohortGame, flatten_params, load_flat
from fedgpu.wire import tensors
from fedgpu.wire.records import JobEvent, JobEventKind

SPEC = ModelSpec((8,), 3)
CENTERS = np.random.default_rng(99).normal(size=(3, 8)) * 1.5
RULES = [FedAvg(), CoordinateMedian(), TrimmedMean(0.34), NormBoundedMean(0.5)]


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return (CENTERS[y] + rng.normal(size=(n, 8))).astype(np.float32), y


def factory() -> nn.Module:
    torch.manual_seed(0)
    return MLP(SPEC, hidden=16, depth=1)


def trained_delta(w: np.ndarray, seed: int, steps: int = 30) -> np.ndarray:
    model = factory()
    load_flat(model, w)
    x, y = blobs(256, seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
        opt.step()
    return flatten_params(model) - w


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup() -> dict[str, np.ndarray]:
    w = flatten_params(factory())
    vx, vy = blobs(500, 7)
    return {"w": w, "a": trained_delta(w, 1), "b": trained_delta(w, 2), "c": trained_delta(w, 4), "vx": vx, "vy": vy}


def test_a_coalitions_model_is_the_rule_with_the_others_sending_zeros(setup: dict[str, np.ndarray]) -> None:
    w, a, b, c = setup["w"], setup["a"], setup["b"], setup["c"]
    sums, weights = [2 * a, 3 * b, -10 * c], [2.0, 3.0, 1.0]
    zero = np.zeros_like(w)
    for rule in RULES:
        game = CohortGame(factory, w, None, sums, weights, setup["vx"], setup["vy"], rule, server_lr=1.5)
        for coalition in ({0}, {0, 1}, {1, 2}, {0, 1, 2}):
            expected = rule([CohortRecord(s if i in coalition else zero, wt) for i, (s, wt) in enumerate(zip(sums, weights, strict=True))])
            np.testing.assert_allclose(game.update(frozenset(coalition)), 1.5 * expected, err_msg=rule.name)
    median = CohortGame(factory, w, None, sums, weights, setup["vx"], setup["vy"], CoordinateMedian())
    assert not median.update(frozenset({0})).any()  # one cohort against two zeros: the median does not move
    assert median(frozenset({0})) == 0.0


def test_the_default_game_is_fedavg_and_an_unreached_norm_bound_is_fedavg_bit_for_bit(setup: dict[str, np.ndarray]) -> None:
    w, a, b = setup["w"], setup["a"], setup["b"]
    values = []
    for rule in (None, FedAvg(), NormBoundedMean(1e9)):
        kw = {} if rule is None else {"aggregate": rule}
        game = CohortGame(factory, w, None, [3 * a, 2 * b], [3.0, 2.0], setup["vx"], setup["vy"], **kw)  # type: ignore[arg-type]
        values.append([game(frozenset(s)) for s in ({0}, {1}, {0, 1})])
    assert values[0] == values[1] == values[2]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_a_cohort_of_zeros_is_an_exact_null_player_under_every_rule(setup: dict[str, np.ndarray], rule: object) -> None:
    w, a, b, c = setup["w"], setup["a"], setup["b"], setup["c"]
    game = CohortGame(factory, w, None, [a, b, np.zeros_like(w), c], [1.0, 1.0, 1.0, 1.0], setup["vx"], setup["vy"], rule)  # type: ignore[arg-type]
    values = shapley(4, game).values
    assert values[2] == 0.0  # absent cohorts are zeros: leaving it out changes nothing the rule sees


def test_the_rule_sees_every_cohort_with_its_members(setup: dict[str, np.ndarray]) -> None:
    w, a, b = setup["w"], setup["a"], setup["b"]
    seen: list[list[tuple[str, ...]]] = []

    class Recording:
        name = "recording"

        def __call__(self, cohorts: Sequence[Cohort], /) -> np.ndarray:
            seen.append([tuple(co.members) for co in cohorts])
            return FedAvg()(cohorts)

    game = CohortGame(factory, w, None, [a, b], [1.0, 1.0], setup["vx"], setup["vy"], Recording(), members=[["x", "y"], ["z", "v"]])
    game(frozenset({1}))
    assert seen == [[("x", "y"), ("z", "v")]]
    assert game.restrict([1]).cohort_members == [("z", "v")]


def test_the_valuer_ships_the_rule_over_the_kept_cohorts_and_a_poisoner_earns_nothing(setup: dict[str, np.ndarray]) -> None:
    w, a, b, c = setup["w"], setup["a"], setup["b"], setup["c"]
    cohorts = [["h1", "h2"], ["h3", "h4"], ["p", "h5"]]
    sums = [a, b, (c - 10 * a) / 2]  # the poisoner flips and boosts its update, its cohort partner is honest
    for rule in (CoordinateMedian(), TrimmedMean(0.34), NormBoundedMean(float(np.linalg.norm(a)))):
        valuer = RoundValuer(factory, ArrayDataset(setup["vx"], setup["vy"]), 64, 100.0, step_sizes=(0.5, 1.0, 2.0), momenta=(0.0, 0.5, 1.0), rule=rule)
        v = valuer.value(1, w, cohorts, sums, [1.0, 1.0, 1.0])
        kept = [CohortRecord(sums[i], 1.0) for i in v.kept]
        expected = v.step * rule(kept) if kept else np.zeros_like(w)
        np.testing.assert_allclose(v.update, expected, err_msg=rule.name)
        assert json.loads(v.evidence)["rule"] == rule.name
        assert v.cohort_values[2] <= 0.0 and v.rewards.get("p", 0.0) == 0.0, rule.name  # its cohort gains nothing


def _driver(tmp: Path, rule: str, pool: float) -> JobDriver:
    vx, vy = np.zeros((8, 40), dtype=np.float32), np.zeros(8, dtype=np.int64)
    job = JobConfig(
        model="mlp", dataset="mnist1d", rounds=1, nodes_per_round=9, min_nodes=9, cohort_size=3, encryption=EncryptionConfig("none"),
        rewards=RewardsConfig(pool_per_round=pool), aggregation=AggregationConfig(rule, trim_fraction=0.34, norm_bound=0.5),
    ).validate()
    return JobDriver("127.0.0.1:9", job, tmp, validation=ArrayDataset(vx, vy))  # the channel is never used


@pytest.mark.parametrize("rule", ["fedavg", "median", "trimmed_mean", "norm_bounded"])
def test_the_driver_aggregates_with_the_jobs_rule(tmp_path: Path, rule: str) -> None:
    driver = _driver(tmp_path, rule, pool=0.0)
    try:
        assert driver.rule == get_rule(rule, driver.job.aggregation.params) and driver.valuer is None
        start = tensors.flatten(driver.state)
        rng = np.random.default_rng(0)
        members = [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]]
        sums = [CohortSum(m, rng.normal(size=start.size) * 0.01, np.full(start.size, 1.5)) for m in members]
        sums[2] = CohortSum(members[2], -1000.0 * sums[0].weighted, sums[2].weights)
        driver.fetch_sums = lambda rnd: (sums, [])  # type: ignore[method-assign]
        driver.on_round(JobEvent(JobEventKind.SUMS_READY, 1, tuple(n for m in members for n in m), tuple(tuple(m) for m in members)))
        np.testing.assert_allclose(tensors.flatten(driver.state), start + get_rule(rule, driver.job.aggregation.params)(sums), rtol=1e-6, atol=1e-7)
    finally:
        driver.channel.close()


def test_the_valuer_plays_the_drivers_rule(tmp_path: Path) -> None:
    driver = _driver(tmp_path, "median", pool=100.0)
    try:
        assert driver.valuer is not None and driver.valuer.rule is driver.rule and driver.rule.name == "median"
    finally:
        driver.channel.close()
