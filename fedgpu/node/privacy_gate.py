"""The data owner's guard on a node: plan the noise, charge the owner's ledger, then train with DP-SGD.

The charge is committed (fsync) *before* any training: a crash during or after training counts as
spent, and a task that would push the owner past their cap is refused with nothing trained. Plans
are kept next to the ledger (``privacy.plans.json``), so a restarted node does not search again.
Training uses book-keeping clipping where the model allows it (``auto``): same clipped sum, same
noise and accounting as Opacus's ``ew``, at a fraction of its cost (docs/privacy.md).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn

from fedgpu.datasets import ArrayDataset
from fedgpu.node.training import LocalTrainConfig, train_local_dp
from fedgpu.privacy.dp import GradSampleMode, noise_for_job
from fedgpu.privacy.ledger import OwnerLedger, PrivacyEvent, dataset_fingerprint
from fedgpu.privacy.plan_cache import PlanCache
from fedgpu.wire.records import Task

NO_CAP = 1e6  # an owner who set no cap still has every task recorded

log = logging.getLogger("fedgpu.node")


class PrivacyGate:
    def __init__(self, ledger_path: Path, cap: float | None, owner: str) -> None:
        self.ledger = OwnerLedger(ledger_path)
        self.plans = PlanCache(self.ledger.path.with_suffix(".plans.json"))
        self.cap = cap if cap is not None else NO_CAP
        self.owner = owner
        self.last_epsilon: float | None = None
        self.last_plan_seconds: float | None = None  # planning sigma, apart from training
        self._fingerprints: dict[int, str] = {}
        self._planned: set[str] = set()

    def _fingerprint(self, data: ArrayDataset) -> str:
        key = id(data)
        if key not in self._fingerprints:
            self._fingerprints[key] = dataset_fingerprint(data)
        return self._fingerprints[key]

    def train(self, task: Task, model: nn.Module, data: ArrayDataset, cfg: LocalTrainConfig, device: torch.device) -> float:
        """Charge, then train ``model`` in place; returns the owner's epsilon on this dataset afterwards."""
        p = task.privacy
        t0 = time.perf_counter()
        sigma, sample_rate, steps = noise_for_job(
            p.epsilon, p.delta, len(data), cfg.batch_size, cfg.epochs, int(p.rounds), p.accountant or "prv", cache=self.plans
        )
        self.last_plan_seconds = time.perf_counter() - t0
        if task.job_id not in self._planned:
            self._planned.add(task.job_id)
            log.info("DP plan for job %s: sigma %.4f, q %.4g, %d steps a round, in %.3f s", task.job_id, sigma, sample_rate, steps, self.last_plan_seconds)
        event = PrivacyEvent(self.owner, self._fingerprint(data), task.job_id, int(task.round), sigma, sample_rate, steps, p.delta)
        epsilon = self.ledger.charge(event, self.cap)  # raises PrivacyBudgetExceeded: nothing trained
        train_local_dp(model, data, cfg, sigma, p.max_grad_norm, device, grad_sample_mode=GradSampleMode.AUTO)
        self.last_epsilon = epsilon
        return epsilon


__all__ = ["NO_CAP", "PrivacyGate"]
