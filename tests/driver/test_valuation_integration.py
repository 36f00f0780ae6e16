"""Valuation through the real loop: aggregator on a 127.0.0.1 socket, node threads, the job driver.

Small and fast (digits, a few rounds); scripts/bench_valuation.py measures fidelity and adversaries.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedgpu.adversaries import apply_behaviour
from fedgpu.config import EncryptionConfig, JobConfig, RewardsConfig, TrainingConfig
from fedgpu.datasets import ArrayDataset, partition_iid, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.driver.valuation import RoundValuation, RoundValuer
from fedgpu.node.agent import NodeAgent, NodeConfig
from fedgpu.rewards import flatten_params, shapley_exact
from fedgpu.rewards.utility import SMALL_VALIDATION, CohortGame

POOL = 100.0
_R = RewardsConfig()
STEPS, MOMENTA = len(_R.step_sizes), len(_R.momentum_steps)


def most_passes(cohorts: int, validation: int) -> float:
    """Passes over the validation set a round may cost: each coalition once in the game over all cohorts
    and once in the one over the kept (plus the free step in each, its momentum chosen on the choice
    set), the robust rule's best step of every set it tries and the shipped model's step x momentum
    grid in each game, both on the choice set (a quarter, or all of a small validation set)."""
    share = 1.0 if validation < SMALL_VALIDATION else 0.25
    coalitions = 2**cohorts - 1 + 1 + len({0.0, *_R.momentum_steps}) * share
    tried = cohorts * (cohorts + 1) / 2 + 1
    return 2 * coalitions + (tried * STEPS + 2 * STEPS * MOMENTA) * share + 1e-9


@pytest.fixture(scope="module")
def digits() -> tuple:
    return public_split("digits", seed=0)


def run(address: str, tmp: Path, digits, behaviours: list[str], k: int, rounds: int) -> tuple[dict, dict[str, str]]:  # type: ignore[no-untyped-def]
    train, test = digits
    agents: list[tuple[NodeAgent, threading.Thread]] = []
    names: dict[str, str] = {}
    try:
        for i, (idx, behaviour) in enumerate(zip(partition_iid(len(train), len(behaviours), seed=1), behaviours, strict=True)):
            f = tmp / f"node{i}.npz"
            save_npz(f, train.subset(idx))
            cfg = NodeConfig(aggregator=address, data={"digits": f}, identity_path=tmp / f"node{i}" / "id.pem", poll_seconds=1)
            apply_behaviour(cfg, behaviour)
            agent = NodeAgent(cfg)
            names[agent.node_id] = behaviour
            th = threading.Thread(target=agent.run, daemon=True)
            th.start()
            agents.append((agent, th))
        job = JobConfig(
            name="valuation", model="digits_cnn", dataset="digits", rounds=rounds, nodes_per_round=len(behaviours), min_nodes=len(behaviours),
            cohort_size=k, deadline_seconds=30, seed=0, training=TrainingConfig(epochs=1, batch_size=16, lr=0.05),
            encryption=EncryptionConfig("none"), rewards=RewardsConfig(pool_per_round=POOL),
        ).validate()
        report = JobDriver(address, job, tmp / "out", validation=test).run()
    finally:
        for agent, _ in agents:
            agent.stop()
        for agent, th in agents:
            th.join(15)
            agent.channel.close()
    return report, names


@pytest.mark.e2e
def test_single_node_cohorts_are_valued_exactly_and_paid_the_pool(aggregator, tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    report, names = run(aggregator.address, tmp_path, digits, ["honest"] * 3, k=1, rounds=3)
    mean_value = {n: 0.0 for n in names}
    paid_before = 0.0
    for rec in report["rounds"]:
        v = rec["valuation"]
        assert len(rec["cohorts"]) == 3 and all(len(c) == 1 for c in rec["cohorts"])
        # where the round's time went: each node's own encryption, the driver's fetch, decrypt and evaluation
        assert set(rec["encrypt_seconds"]) == set(rec["participants"]) and all(t > 0 for t in rec["encrypt_seconds"].values())
        assert all(rec[f"{phase}_seconds"] > 0 for phase in ("fetch", "decrypt", "evaluate", "publish"))
        # every non-empty subset once and the free reference
        assert v["evaluations"] <= most_passes(3, len(digits[1]))
        for members, value in zip(rec["cohorts"], v["cohort_values"], strict=True):
            assert v["node_values"][members[0]] == pytest.approx(value, abs=1e-12)  # k = 1: the node is its cohort
        rewards = v["rewards"]
        assert set(rewards) == set(names) and all(r >= 0 for r in rewards.values())
        # a round nobody helped pays nothing; its pool goes to the next round's positive values, one pool at a time
        paid = math.fsum(rewards.values())
        assert paid == 0.0 or paid == pytest.approx(POOL + min(POOL * (rec["round"] - 1) - paid_before, POOL))
        paid_before += paid
        # The regression sees values bounded by the round's scale (the kept cohorts' values and the noise
        # floor), so that a left-out cohort's large loss cannot swamp it, over the scale's square root.
        kept = [i for i in range(len(rec["cohorts"])) if i not in rec["excluded_cohorts"]]
        scale = max([abs(v["cohort_values"][i]) for i in kept] + [v["noise_floor"], 1e-12])
        for n, x in v["node_values"].items():
            mean_value[n] += float(np.clip(x, -scale, scale)) / math.sqrt(scale) / len(report["rounds"])
    assert paid_before > 0.0
    # With cohorts of one, the ridge estimate is each node's mean per-round (bounded, rescaled) value.
    assert report["valuation"]["estimates"] == pytest.approx(mean_value, abs=1e-5)


@pytest.mark.e2e
def test_cohort_values_are_recorded_as_estimates_and_withheld_until_proven(aggregator, tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    report, names = run(aggregator.address, tmp_path, digits, ["honest"] * 4, k=2, rounds=2)
    for rec in report["rounds"]:
        v = rec["valuation"]
        assert len(rec["cohorts"]) == 2 and all(len(c) == 2 for c in rec["cohorts"])
        assert v["evaluations"] <= most_passes(2, len(digits[1]))
        for members, value in zip(rec["cohorts"], v["cohort_values"], strict=True):
            recorded = math.fsum(v["node_values"][m] for m in members)
            # the ledger records each member's estimate: after one round they account for its cohort's value
            assert rec["round"] > 1 or value < 0 or recorded == pytest.approx(value, rel=1e-3)
        # nobody has a lower bound yet (2 rounds x 2 cohorts < 2 x 4 nodes): every gain waits
        assert math.fsum(v["rewards"].values()) == 0.0
    assert set(report["valuation"]["estimates"]) == set(names)
    assert report["valuation"]["unspent"] == pytest.approx(POOL * len(report["rounds"]))


def linear_problem(n: int, scale: float) -> tuple:  # type: ignore[type-arg]
    """Points labelled by the sign of x0, and a linear model already pointing that way with ``scale``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    factory = lambda: nn.Linear(2, 2)  # noqa: E731
    model = factory()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-scale, 0.0], [scale, 0.0]]))
        model.bias.zero_()
    return x, y, factory, flatten_params(model)


def test_zero_senders_earn_nothing_when_replaying_the_last_step_would_hurt() -> None:
    # Measured against L(w + b) alone, a zero update "beats" a harmful free step b and took the whole
    # pool; the reference must be the best free option, min(L(w), L(w + b)).
    x, y, factory, w = linear_problem(400, 4.0)
    valuer = RoundValuer(factory, ArrayDataset(x, y), budget=256, pool=POOL)
    valuer.baseline = -2.0 * w  # the last global change: taking it again would flip the classifier
    res = valuer.value(2, w, [["z1", "z2", "z3"]], [np.zeros_like(w)], [3.0])
    assert res.rewards == {"z1": 0.0, "z2": 0.0, "z3": 0.0}


def test_noisy_updates_that_only_help_together_are_kept_and_the_poisoner_is_not() -> None:
    # Four updates share the useful direction g but carry noise that cancels only in their average
    # (as DP noise does): each alone hurts, all four help. A sign-flipped x10 update must go.
    x, y, factory, w = linear_problem(1000, 0.3)
    g = np.array([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    honest = [g + 4.0 * s * np.array([0.0, 1.0, 0.0, -1.0, 0.0, 0.0]) for s in (1, -1, 1, -1)]
    valuer = RoundValuer(factory, ArrayDataset(x, y), budget=256, pool=POOL)
    res = valuer.value(1, w, [["h0"], ["h1"], ["h2"], ["h3"], ["p"]], [*honest, -10.0 * g], [1.0] * 5)
    assert res.kept == [0, 1, 2, 3]
    assert res.rewards["p"] == 0.0 and all(res.rewards[f"h{i}"] > 0 for i in range(4))
    assert math.fsum(res.rewards.values()) == pytest.approx(POOL)


def test_an_update_within_the_noise_of_the_free_step_is_shipped_and_a_clearly_harmful_one_is_not() -> None:
    """The round's model stays where it is only when the kept cohorts do *clearly* worse than the free
    step: late in training every honest update gains less than the held-out set can resolve, and a rule
    that wanted proof of a gain stalled the model (in scripts/bench_valuation.py, 2 to 10 of 20 rounds
    shipped nothing and the loss stopped falling where plain FedAvg went on)."""
    x, _, factory, w = linear_problem(400, 0.3)
    y = (x[:, 0] > 0.5).astype(np.int64)  # the boundary is off the origin
    tilt = np.array([0.0, -0.3, 0.0, 0.3, 0.0, 0.0])  # leans the boundary on x1: some samples gain, more lose
    away = np.array([0.0, 0.0, 0.0, 0.0, -0.3, 0.3])  # moves the boundary away from where it should go
    for update, kept in ((tilt, [0]), (away, [])):
        game = CohortGame(factory, w, None, [update], [1.0], x, y, step_sizes=(0.5, 1.0, 2.0))
        loss = game.best_losses(frozenset({0})) - game.best_losses(frozenset())  # per sample, on the choice quarter
        se = loss.std(ddof=1) / math.sqrt(len(loss))
        assert (loss.mean() > 0.0) and ((loss.mean() < 2.0 * se) == bool(kept))  # the premise: one within the noise, one beyond it
        assert RoundValuer.keep(game) == kept


def test_a_kept_cohorts_members_are_paid_at_the_end_on_their_proven_worth_not_a_share_of_its_value() -> None:
    x, y, factory, _ = linear_problem(50, 1.0)
    valuer = RoundValuer(factory, ArrayDataset(x, y), budget=256, pool=POOL, confidence=1.0)
    # A round credits a kept cohort of two or more nothing (its pool waits for the end); a cohort of one is its node's own.
    credit, recorded = valuer.credit([["h", "fr"], ["solo"]], np.array([1.0, 0.5]))
    assert credit == {"h": 0.0, "fr": 0.0, "solo": 0.5} and recorded["solo"] == 0.5
    # Twenty reshuffled rounds: a cohort with h gains about 1, one without it about nothing.
    pairs = [(["h", "x"], ["fr", "y"]), (["h", "y"], ["fr", "x"]), (["h", "fr"], ["x", "y"])]
    for r in range(20):
        valuer.estimator.observe_round(r, list(pairs[r % 3]), [1.0 + 0.02 * (r % 5 - 2), 0.02 * (r % 7 - 3)])
    for value in (2.0, 0.0):  # the same credit (none) whether the cohort was worth 2 or 0; selection reads the estimate
        credit, recorded = valuer.credit([["h", "fr"]], np.array([value]), unit=3.0)
        assert credit == {"h": 0.0, "fr": 0.0} and recorded["h"] == pytest.approx(3.0 * valuer.estimator.estimates()["h"])
    assert valuer.credit([["fr", "y0"]], np.array([-1.0]))[0]["fr"] <= 0.0
    # At the end the job's pools go by lower bound x kept cohorts: h takes nearly all, fr nothing.
    valuer.carried = 20 * POOL
    empty = RoundValuation([], [], 1.0, 0.0, np.zeros(1), {}, {}, 0.0, 0.0, 0.0, b"{}")
    paid = valuer.settle(empty).rewards
    assert paid.get("fr", 0.0) == 0.0 and paid["h"] > 0.9 * 20 * POOL and valuer.carried == 0.0


def test_the_pool_of_a_round_nobody_earned_is_paid_in_the_next() -> None:
    x, _, factory, w = linear_problem(400, 0.3)
    y = (x[:, 0] > 0.5).astype(np.int64)  # the boundary is off the origin: the bias has work to do
    g = np.array([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # sharpen along x0
    shift = np.array([0.0, 0.0, 0.0, 0.0, 0.3, -0.3])  # move the boundary: orthogonal to the last change
    valuer = RoundValuer(factory, ArrayDataset(x, y), budget=256, pool=POOL)
    first = valuer.value(1, w, [["a", "b"]], [2.0 * g], [2.0])  # a gain, but who earned it is unknown
    assert first.cohort_values[0] > 0 and sum(first.rewards.values()) == 0.0 and valuer.carried == POOL
    # the next round starts from the model the first one made; a cohort of one: its gain is its node's own
    second = valuer.value(2, w + first.update, [["c"]], [shift], [1.0])
    assert second.rewards["c"] == pytest.approx(2 * POOL) and valuer.carried == pytest.approx(0.0)


def test_the_learning_rate_is_the_servers_trust_region_not_the_senders() -> None:
    x, _, factory, w = linear_problem(400, 0.3)
    y = (x[:, 0] > 0.5).astype(np.int64)  # the boundary is off the origin: the bias has work to do
    g = np.array([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # sharpen along x0
    shift = np.array([0.0, 0.0, 0.0, 0.0, 0.3, -0.3])  # move the boundary: orthogonal to the last change
    valuer = RoundValuer(factory, ArrayDataset(x, y), budget=256, pool=POOL, step_sizes=(0.5, 1.0, 2.0))
    first = valuer.value(1, w, [["a"], ["b"]], [0.1 * g, 0.3 * g], [1.0, 1.0])
    # round 1 has no history: plain FedAvg (learning rate 1) times the step that won
    assert first.kept == [0, 1] and valuer.server_lr == first.step
    np.testing.assert_allclose(first.update, first.step * 0.2 * g)
    lr = valuer.server_lr
    # a cohort that pushes 1000x too far is left out, and the round's model is FedAvg over the kept one
    second = valuer.value(2, w + first.update, [["a"], ["b"]], [0.1 * shift, 100.0 * shift], [1.0, 1.0])
    assert second.kept == [0] and json.loads(second.evidence)["server_lr"] == lr
    np.testing.assert_allclose(second.update - second.momentum * first.update, second.step * lr * 0.1 * shift, atol=1e-12)
    assert second.rewards["b"] == 0.0
    # a round in which no cohort helps halves it
    lr = valuer.server_lr
    third = valuer.value(3, w + first.update + second.update, [["p"]], [-g], [1.0])
    assert third.kept == [] and valuer.server_lr == pytest.approx(0.5 * lr)


def test_the_momentum_is_the_one_the_server_shipped_last_round() -> None:
    """Every coalition (the empty one too) is valued at the momentum of last round's shipped model;
    the shipped model tunes step and momentum together, and that momentum is the next round's."""
    x, _, factory, w = linear_problem(400, 0.3)
    y = (x[:, 0] > 0.5).astype(np.int64)  # the boundary is off the origin: the bias has work to do
    g = np.array([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # sharpen along x0
    shift = np.array([0.0, 0.0, 0.0, 0.0, 0.3, -0.3])  # move the boundary: orthogonal to the last change
    valuer = RoundValuer(factory, ArrayDataset(x, y), budget=256, pool=POOL, step_sizes=(0.5, 1.0, 2.0), momenta=(0.0, 0.5, 1.0))
    first = valuer.value(1, w, [["a"], ["b"]], [2.0 * g, 3.0 * g], [1.0, 1.0])
    assert first.kept and valuer.momentum == first.momentum == 0.0  # no last change yet: nothing to go on along
    second = valuer.value(2, w + first.update, [["c"]], [shift], [1.0])
    assert second.kept == [0] and json.loads(second.evidence)["game_momentum"] == 0.0
    assert valuer.momentum == second.momentum
    lr = json.loads(second.evidence)["server_lr"]
    np.testing.assert_allclose(second.update, second.step * lr * shift + second.momentum * first.update)
    # the empty coalition and the cohort one candidate each (the server's momentum and step: 2 passes),
    # the robust rule the cohort's three steps on the quarter (0.75) and the shipped model the six
    # other (step, momentum) pairs (1.5)
    assert second.evaluations == pytest.approx(4.25)


def test_many_cohorts_are_valued_from_one_gradient_close_to_exact_and_the_poisoner_still_goes() -> None:
    # Past the exact limit (FedAvg) the values are the game's second-order ones: at 8 cohorts they rank
    # as exact Shapley does; at 20 and 40 cohorts a sign-flipped x10 update is left out and the round
    # costs about the same number of passes however many cohorts there are.
    x, y, factory, w = linear_problem(1000, 0.3)
    g = np.array([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    rng = np.random.default_rng(1)
    honest = [(0.2 + 0.1 * i) * g + 0.05 * rng.normal(size=6) for i in range(40)]
    game = CohortGame(factory, w, None, honest[:8], [1.0] * 8, x, y)
    exact = shapley_exact(8, game)
    linear = game.linear_values()
    assert np.argsort(linear).tolist() == np.argsort(exact.values).tolist()
    assert linear.sum() == pytest.approx(exact.values.sum(), rel=0.1)
    passes = {}
    for count in (20, 40):
        valuer = RoundValuer(factory, ArrayDataset(x, y), budget=256, pool=POOL)
        sums = [*honest[: count - 1], -10.0 * g]
        res = valuer.value(1, w, [[f"h{i}"] for i in range(count - 1)] + [["p"]], sums, [1.0] * count)
        assert res.kept == list(range(count - 1))
        assert json.loads(res.evidence)["estimator"] == "linear"
        assert res.rewards["p"] == 0.0 and res.cohort_values[-1] < 0
        assert res.cohort_values[count - 2] > max(res.cohort_values[0], 0.0)  # the larger honest update is worth more
        passes[count] = res.evaluations
    assert passes[40] <= 1.5 * passes[20]


def test_a_round_that_keeps_no_cohort_is_valued_and_ships_the_free_step() -> None:
    x, _, factory, w = linear_problem(400, 0.3)
    y = (x[:, 0] > 0.5).astype(np.int64)
    away = np.array([0.0, 0.0, 0.0, 0.0, -0.3, 0.3])  # every cohort moves the boundary the wrong way
    res = RoundValuer(factory, ArrayDataset(x, y), budget=256, pool=POOL).value(1, w, [["a"], ["b"], ["c"]], [away] * 3, [1.0] * 3)
    assert res.kept == [] and all(v <= 0 for v in res.cohort_values) and sum(res.rewards.values()) == 0.0
