"""The job's last round pays the pools of cohorts of k > 1 (and what nobody earned at k = 1), by the whole job's evidence."""

from __future__ import annotations

import json
import math
import random

import numpy as np
from torch import nn

from fedgpu.datasets import ArrayDataset
from fedgpu.driver.valuation import RoundValuation, RoundValuer


def valuer_with(observations: list[tuple[list[str], float]], carried: float) -> RoundValuer:
    v = RoundValuer(lambda: nn.Linear(2, 2), ArrayDataset(np.zeros((4, 2), np.float32), np.zeros(4, np.int64)), budget=8, pool=100.0, confidence=1.0)
    for rnd, (members, value) in enumerate(observations, start=1):
        v.estimator.observe(rnd, members, value)
    v.carried = carried
    return v


def last_round(rewards: dict[str, float]) -> RoundValuation:
    return RoundValuation([1.0], [0], 1.0, 0.0, np.zeros(2), dict(rewards), dict(rewards), 1.0, 0.0, 0.0, json.dumps({"round": 40}).encode())


def cohort_game(seed: int) -> list[tuple[list[str], float]]:
    """40 rounds of two cohorts of 3 among 6 honest nodes worth 1 and 2 free riders worth 0, noise sd 0.5."""
    rng = random.Random(seed)
    worth = {f"h{i}": 1.0 for i in range(6)} | {"fr0": 0.0, "fr1": 0.0}
    out = []
    for _ in range(40):
        chosen = rng.sample(sorted(worth), 6)
        for c in (chosen[:3], chosen[3:]):
            out.append((c, sum(worth[m] for m in c) + rng.gauss(0, 0.5)))
    return out


def test_the_unearned_pool_goes_to_the_nodes_the_job_proved_and_hardly_to_free_riders() -> None:
    ratios = []
    for seed in range(5):
        v = valuer_with(cohort_game(seed), carried=1500.0)
        out = v.settle(last_round({"h0": 10.0, "h1": 0.0}))
        paid = {n: r - {"h0": 10.0}.get(n, 0.0) for n, r in out.rewards.items()}
        assert math.isclose(sum(paid.values()), 1500.0) and v.carried == 0.0
        honest = sorted(paid.get(f"h{i}", 0.0) for i in range(6))
        assert honest[2] > 0, paid  # the honest median is paid
        ratios.append(max(paid.get("fr0", 0.0), paid.get("fr1", 0.0)) / ((honest[2] + honest[3]) / 2))
        settled = json.loads(out.evidence)["settled"]
        assert settled["confidence"] == 1.0 and math.isclose(sum(settled["rewards"].values()), 1500.0)
        assert v.totals == settled["rewards"]
    assert sorted(ratios)[2] <= 0.1 and max(ratios) < 0.5, ratios  # a free rider clears one se only on a lucky draw


def test_nothing_carried_or_nobody_proven_leaves_the_round_as_it_was() -> None:
    before = last_round({"h0": 10.0})
    assert valuer_with(cohort_game(1), carried=0.0).settle(before) is before
    unproven = valuer_with([(["a", "b", "c"], 0.0), (["a", "b", "d"], 0.0)], carried=300.0)  # too few observations: no bound
    assert unproven.settle(before) is before and unproven.carried == 300.0
