"""The DP statistics round (issue #17): each node's feature sums carry Gaussian noise of the planned sigma,
the owner's ledger is charged for it before anything is released, and it composes with DP-SGD in one epsilon."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedgpu.datasets import ArrayDataset, Schema
from fedgpu.datasets.statistics import (
    DP_WEIGHT,
    dp_statistics_update,
    statistics_sensitivity,
    stats_from_noisy_sums,
)
from fedgpu.errors import ConfigError, PrivacyBudgetExceeded
from fedgpu.models import ModelSpec, build_model
from fedgpu.node.privacy_gate import PrivacyGate
from fedgpu.node.training import LocalTrainConfig
from fedgpu.privacy.dp import epsilon_of
from fedgpu.privacy.ledger import OwnerLedger, PrivacyEvent
from fedgpu.privacy.planning import noise_for_job, statistics_noise
from fedgpu.proto.fedgpu.v1 import common_pb2, node_pb2

SCHEMA = Schema("cells", (3,), 2, ("a", "b", "c"), "label", "float32", ((0.0, 10.0), (-1.0, 1.0), (0.0, 100.0)))


def cells(n: int, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    x = np.stack([rng.uniform(2, 8, n), rng.uniform(-0.5, 0.9, n), rng.uniform(0, 30, n)], axis=1).astype(np.float32)
    return ArrayDataset(x, rng.integers(0, 2, n))


def test_the_upload_is_the_exact_sums_plus_noise_of_the_planned_sigma() -> None:
    data, sigma = cells(40), 2.0
    z = (data.x.astype(np.float64) - [5.0, 0.0, 50.0]) / [5.0, 1.0, 50.0]
    exact = np.concatenate([z.sum(0), (z * z).sum(0), [40.0]])
    rng = np.random.default_rng(0)  # seeded for the test only; the node seeds from the OS
    draws = np.array([dp_statistics_update(data, SCHEMA, 10, sigma, 1e6, 3, rng)[0] for _ in range(4000)])
    assert statistics_sensitivity(3) == math.sqrt(7)  # one record moves (sum z, sum z^2, n) by (z, z^2, 1): |.| <= sqrt(3 + 3 + 1)
    np.testing.assert_allclose(draws[:, :7].mean(0), exact, atol=4 * sigma * math.sqrt(7) / math.sqrt(4000))
    np.testing.assert_allclose(draws[:, :7].std(0), sigma * math.sqrt(7), rtol=0.05)  # 4000 draws: std's error ~1.1 %
    assert np.all(draws[:, 7:] == 0)
    one = dp_statistics_update(data, SCHEMA, 10, sigma, 1e6, 3, rng)
    assert one[1] == DP_WEIGHT == dp_statistics_update(cells(400), SCHEMA, 10, sigma, 1e6, 3, rng)[1]  # the weight says nothing of n
    with pytest.raises(ConfigError, match="declare them in \\[schema\\]"):
        dp_statistics_update(data, Schema("cells", (3,), 2), 10, sigma, 1e6, 3, rng)


def test_the_driver_recovers_the_moments_and_clamps_what_noise_made_impossible() -> None:
    data = cells(300)
    rng = np.random.default_rng(1)
    weighted = sum(DP_WEIGHT * dp_statistics_update(data, SCHEMA, 10, 1e-6, None, 1, rng)[0] for _ in range(2))
    stats = stats_from_noisy_sums(weighted, SCHEMA, 0.0, 0.0)  # (almost) no noise: the pooled moments
    pooled = np.concatenate([data.x, data.x]).astype(np.float64)
    np.testing.assert_allclose(stats.mean, pooled.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.std, pooled.std(0), rtol=1e-6)
    assert stats.samples == pytest.approx(600) and not stats.count_clamped and stats.imprecise == ()
    # a tiny node under heavy noise: count below 1, a mean outside the range, a negative variance
    bad = DP_WEIGHT * np.array([5.0, -3.0, 0.2, -2.0, 0.1, 0.05, -4.0, 0.0])
    worst = stats_from_noisy_sums(bad, SCHEMA, 0.005, 0.0)
    assert worst.count_clamped and worst.samples == 1.0
    assert worst.mean.tolist() == [10.0, -1.0, 60.0]  # clamped into the public ranges
    assert np.all(worst.std > 0) and np.all(worst.std <= [5.0, 1.0, 50.0]) and worst.imprecise == (0, 1)


def _task(rnd: int, epsilon: float, statistics_epsilon: float, rounds: int = 3) -> node_pb2.Task:
    plan = common_pb2.PrivacyPlan(
        enabled=True, epsilon=epsilon, delta=1e-5, max_grad_norm=1.0, rounds=rounds, accountant="rdp", mode="sample", statistics_epsilon=statistics_epsilon
    )
    return node_pb2.Task(job_id="j", round=rnd, privacy=plan, training=common_pb2.TrainingPlan(epochs=1, batch_size=50), statistics=rnd == 1)


def test_the_statistics_round_is_charged_first_and_the_job_ends_at_its_epsilon(tmp_path: Path) -> None:
    gate = PrivacyGate(tmp_path / "privacy.db", cap=100.0, owner="o")
    gate.ledger = OwnerLedger(tmp_path / "privacy.db", accountant="rdp")  # RDP: PRV is too slow for a unit test
    data = cells(200)
    gate.admit(_task(1, 3.0, 0.5), data)
    noise, after_stats = gate.statistics(_task(1, 3.0, 0.5), data)
    assert noise == statistics_noise(0.5, 1e-5, "rdp") and 0.499 <= after_stats <= 0.5
    [stored] = gate.ledger.events()
    assert (stored.event.round, stored.event.noise_multiplier, stored.event.sample_rate, stored.event.steps) == (1, noise, 1.0, 1)
    cfg = LocalTrainConfig(epochs=1, batch_size=50, lr=0.1)
    for rnd in (2, 3):
        gate.admit(_task(rnd, 3.0, 0.5), data)
        gate.train(_task(rnd, 3.0, 0.5), build_model("tab_mlp", ModelSpec((3,), 2), seed=0), data, cfg, torch.device("cpu"))
    sigma, q, steps = noise_for_job(3.0, 1e-5, 200, 50, 1, 2, "rdp", before=((noise, 1.0, 1),))
    composed = epsilon_of([(noise, 1.0, 1), (sigma, q, 2 * steps)], 1e-5, "rdp")
    assert gate.ledger.epsilon(1e-5) == pytest.approx(composed, abs=1e-9)  # the ledger is the accountant on the composed history
    assert 2.997 <= composed <= 3.0  # one epsilon for the whole job, statistics included
    assert epsilon_of([(sigma, q, 2 * steps)], 1e-5, "rdp") < composed  # the statistics round is charged on top of the same DP-SGD
    assert sigma > noise_for_job(3.0, 1e-5, 200, 50, 1, 2, "rdp")[0]  # so DP-SGD gets a little more noise than without it


def test_a_job_whose_training_fits_but_not_with_its_statistics_is_declined_up_front(tmp_path: Path) -> None:
    gate = PrivacyGate(tmp_path / "privacy.db", cap=100.0, owner="o")
    gate.ledger = OwnerLedger(tmp_path / "privacy.db", accountant="rdp")
    data = cells(200)
    noise = statistics_noise(1.0, 1e-5, "rdp")
    sigma, q, steps = noise_for_job(3.0, 1e-5, 200, 50, 1, 2, "rdp", before=((noise, 1.0, 1),))
    fp = "sha256:x"
    training = gate.ledger.project(PrivacyEvent("o", fp, "j", 2, sigma, q, 2 * steps, 1e-5))
    gate.cap = training + 0.05  # the job's DP-SGD alone fits, with its statistics round it does not
    with pytest.raises(PrivacyBudgetExceeded, match=r"rounds 2\.\.3, epsilon 3 for the job\) and its DP statistics round before them .*Declined before"):
        gate.admit(_task(1, 3.0, 1.0), data)
    assert gate.ledger.events() == []
    gate.cap = 3.0
    gate.admit(_task(1, 3.0, 1.0), data)  # the whole plan ends at the job's epsilon: admitted


def test_a_retried_statistics_task_resends_the_same_noisy_sums_and_charges_nothing_more(tmp_path: Path) -> None:
    from fedgpu.node.agent import NodeAgent, NodeConfig
    from fedgpu.wire.records import EncryptionContext, PrivacyPlan, Task, TrainingPlan

    agent = NodeAgent(NodeConfig(aggregator="127.0.0.1:9", data={}, identity_path=tmp_path / "id.pem", extra_datasets={"cells": cells(60)}))
    try:
        plan = PrivacyPlan(enabled=True, epsilon=3.0, delta=1e-5, max_grad_norm=1.0, rounds=3, accountant="rdp", mode="sample", statistics_epsilon=0.5)

        def attempt(job: str) -> Task:
            return Task(
                task_id=job + "-t", job_id=job, round=1, model_version=0, model="tab_mlp", dataset="cells", training=TrainingPlan(epochs=1, batch_size=20),
                privacy=plan, encryption=EncryptionContext(scheme="none"), deadline_ms=0, num_params=10, num_chunks=1, schema=SCHEMA, statistics=True,
            )

        first, again, other = agent._train(attempt("j")), agent._train(attempt("j")), agent._train(attempt("k"))
        np.testing.assert_array_equal(first[0], again[0])  # the same release, not a second draw
        assert first[3] == again[3] > 0 and not np.array_equal(first[0], other[0])
        assert agent.privacy is not None and [e.event.job_id for e in agent.privacy.ledger.events()] == ["j", "k"]  # one charge per job
    finally:
        agent.channel.close()


def test_a_retried_dp_sgd_task_resends_its_update_and_a_new_round_trains_and_charges(tmp_path: Path) -> None:
    """A DP-SGD round retried from the same global model (an aggregator restart, too few updates) costs the
    owner nothing more; the next round, or another model version of the round, is trained and charged."""
    from fedgpu.models.flat import flatten
    from fedgpu.node.agent import NodeAgent, NodeConfig
    from fedgpu.wire.records import EncryptionContext, PrivacyPlan, Task, TrainingPlan

    agent = NodeAgent(NodeConfig(aggregator="127.0.0.1:9", data={}, identity_path=tmp_path / "id.pem", extra_datasets={"cells": cells(60)}))
    try:
        model = build_model("tab_mlp", ModelSpec(SCHEMA.input_shape, SCHEMA.num_classes), seed=0)
        for version in (0, 1):  # the global models the tasks name, as if downloaded
            agent._models[("j", version)] = {k: v.clone() for k, v in model.state_dict().items()}
        plan = PrivacyPlan(enabled=True, epsilon=3.0, delta=1e-5, max_grad_norm=1.0, rounds=4, accountant="rdp", mode="sample")

        def task(task_id: str, rnd: int, version: int) -> Task:
            return Task(
                task_id=task_id, job_id="j", round=rnd, model_version=version, model="tab_mlp", dataset="cells",
                training=TrainingPlan(epochs=1, batch_size=20, lr=0.1, seed=int(task_id[-1])), privacy=plan,
                encryption=EncryptionContext(scheme="none"), deadline_ms=0, num_params=flatten(model.state_dict()).size, num_chunks=1, schema=SCHEMA,
            )

        first = agent._train(task("a1", 1, 0))
        again = agent._train(task("a2", 1, 0))  # attempt 2 of round 1: another task id and seed, the same model
        np.testing.assert_array_equal(first[0], again[0])
        assert first[1:] == again[1:] and np.abs(first[0]).max() > 0
        assert agent.privacy is not None and [(e.event.round) for e in agent.privacy.ledger.events()] == [1]  # charged once
        later = agent._train(task("a3", 2, 1))  # the next round: trained and charged
        assert not np.array_equal(first[0], later[0]) and later[3] > first[3]
        assert [e.event.round for e in agent.privacy.ledger.events()] == [1, 2]
    finally:
        agent.channel.close()
