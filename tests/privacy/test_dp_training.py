"""DP-SGD on the node: plain keys back, fresh wrapper every call, BatchNorm refused, refusal before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedgpu.datasets import ArrayDataset
from fedgpu.errors import ConfigError, PrivacyBudgetExceeded
from fedgpu.models import ModelSpec, build_model
from fedgpu.node.privacy_gate import PrivacyGate
from fedgpu.node.training import DPTrainResult, LocalTrainConfig, train_local, train_local_dp
from fedgpu.privacy.dp import Accountant, planned_steps
from fedgpu.privacy.ledger import OwnerLedger, PrivacyEvent
from fedgpu.privacy.plan_cache import PlanCache
from fedgpu.privacy.planning import noise_for_job, plan_key
from fedgpu.proto.fedgpu.v1 import common_pb2, node_pb2

SPEC = ModelSpec((40,), 10)


def data(n: int, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.normal(size=(n, 40)).astype(np.float32), rng.integers(0, 10, n))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["ew", "hooks", "bk"])
def test_dp_training_returns_plain_keys_and_can_run_every_round(mode: str) -> None:
    model = build_model("cnn1d", SPEC, seed=0)
    keys = list(build_model("cnn1d", SPEC, seed=0).state_dict())
    cfg = LocalTrainConfig(epochs=2, batch_size=64, lr=0.5, momentum=0.0)
    before = weights(model)
    for _ in range(2):  # a second privatisation of the same module must not stack hooks (#608)
        res = train_local_dp(model, data(200), cfg, noise_multiplier=1.0, max_grad_norm=1.0, device=torch.device("cpu"), grad_sample_mode=mode)
    assert isinstance(res, DPTrainResult)
    assert list(model.state_dict()) == keys  # no "_module." prefix
    assert (res.sample_rate, res.steps) == planned_steps(200, 64, 2)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
    for p in model.parameters():
        assert not hasattr(p, "grad_sample") and not hasattr(p, "summed_grad")
    train_local(model, data(100), LocalTrainConfig(epochs=1, batch_size=32))  # the plain path still works on it


@pytest.mark.parametrize("mode", ["ew", "bk"])
def test_steps_and_sample_rate_match_the_plan_where_opacus_would_round_down(mode: str) -> None:
    # int(1 / (1 / 93)) == 92: Opacus's own DPDataLoader would take 92 steps at q = 1/92
    model = build_model("mlp", SPEC, seed=0)
    cfg = LocalTrainConfig(epochs=1, batch_size=1, lr=0.1, momentum=0.0)
    res = train_local_dp(model, data(93), cfg, 1.0, 1.0, torch.device("cpu"), grad_sample_mode=mode, max_physical_batch_size=None)
    assert (res.sample_rate, res.steps) == (1 / 93, 93)  # empty Poisson batches still count as steps


def test_batchnorm_is_refused_with_the_layer_named_and_the_model_untouched() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(40, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    before = weights(model)
    with pytest.raises(ConfigError, match=r"BatchNorm layers \(2\).*GroupNorm"):
        train_local_dp(model, data(64), LocalTrainConfig(batch_size=16), 1.0, 1.0, torch.device("cpu"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_physical_batches_split_a_large_logical_batch() -> None:
    model = build_model("cnn1d", SPEC, seed=0)
    cfg = LocalTrainConfig(epochs=1, batch_size=300, lr=0.5, momentum=0.0)
    res = train_local_dp(model, data(600), cfg, 1.0, 1.0, torch.device("cpu"), max_physical_batch_size=64)
    assert res.steps == 2  # logical steps, as the accountant counts them


def test_over_budget_round_is_refused_before_any_training(tmp_path: Path) -> None:
    gate = PrivacyGate(tmp_path / "privacy.db", cap=1.0, owner="o")
    gate.ledger = OwnerLedger(tmp_path / "privacy.db", accountant="rdp")  # RDP: PRV is too slow for a unit test
    model = build_model("cnn1d", SPEC, seed=0)
    before = weights(model)
    plan = common_pb2.PrivacyPlan(enabled=True, epsilon=3.0, delta=1e-5, max_grad_norm=1.0, rounds=1, accountant="rdp")
    task = node_pb2.Task(job_id="j", round=0, privacy=plan)
    cfg = LocalTrainConfig(epochs=1, batch_size=50, lr=0.1)
    with pytest.raises(PrivacyBudgetExceeded, match="above the cap 1"):
        gate.train(task, model, data(200), cfg, torch.device("cpu"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert gate.ledger.events() == []
    gate.cap = 3.0
    epsilon = gate.train(task, model, data(200), cfg, torch.device("cpu"))
    [stored] = gate.ledger.events()
    assert (stored.event.noise_multiplier, stored.event.sample_rate, stored.event.steps) == noise_for_job(3.0, 1e-5, 200, 50, 1, 1, "rdp")
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert 2.99 <= gate.ledger.epsilon(1e-5) <= 3.0 and epsilon == gate.last_epsilon
    assert gate.last_plan_seconds is not None
    plans = tmp_path / "privacy.plans.json"  # next to the ledger: a restarted node reads its plan
    assert PlanCache(plans).get(plan_key(3.0, 1e-5, 1 / 4, 4, Accountant.RDP, 3e-3)) is not None


def test_a_job_that_cannot_finish_under_the_cap_is_declined_before_its_first_round(tmp_path: Path) -> None:
    """Issue #17: a second job whose first rounds fit but whose whole plan does not is refused up front,
    so the owner does not spend epsilon on a job that would fail half-way."""
    gate = PrivacyGate(tmp_path / "privacy.db", cap=100.0, owner="o")
    gate.ledger = OwnerLedger(tmp_path / "privacy.db", accountant="rdp")  # RDP: PRV is too slow for a unit test
    owner_data = data(200)
    cfg = LocalTrainConfig(epochs=1, batch_size=50, lr=0.1)

    def task(job: str, rnd: int, epsilon: float) -> node_pb2.Task:
        plan = common_pb2.PrivacyPlan(enabled=True, epsilon=epsilon, delta=1e-5, max_grad_norm=1.0, rounds=4, accountant="rdp")
        return node_pb2.Task(job_id=job, round=rnd, privacy=plan, training=common_pb2.TrainingPlan(epochs=1, batch_size=50))

    for rnd in range(1, 5):  # an earlier job spent epsilon 6 on this data
        gate.train(task("first", rnd, 6.0), build_model("mlp", SPEC, seed=0), owner_data, cfg, torch.device("cpu"))
    fp = gate.ledger.datasets()[0]
    sigma, q, steps = noise_for_job(6.0, 1e-5, 200, 50, 1, 4, "rdp")
    one_round = gate.ledger.project(PrivacyEvent("o", fp, "second", 1, sigma, q, steps, 1e-5))
    whole_job = gate.ledger.project(PrivacyEvent("o", fp, "second", 1, sigma, q, 4 * steps, 1e-5))
    gate.cap = (one_round + whole_job) / 2  # its first round fits (the old check let it start), the job does not
    with pytest.raises(PrivacyBudgetExceeded, match=r"plans 4 more round\(s\).*rounds 1\.\.4.*Declined before training anything"):
        gate.admit(task("second", 1, 6.0), owner_data)
    assert [e.event.job_id for e in gate.ledger.events()] == ["first"] * 4  # nothing of the second job recorded
    gate.cap = whole_job + 0.01
    gate.admit(task("second", 1, 6.0), owner_data)
    for rnd in range(1, 5):  # admitted: every planned round then fits
        gate.admit(task("second", rnd, 6.0), owner_data)
        gate.train(task("second", rnd, 6.0), build_model("mlp", SPEC, seed=0), owner_data, cfg, torch.device("cpu"))
    assert gate.ledger.epsilon(1e-5) == pytest.approx(whole_job, abs=1e-6)
