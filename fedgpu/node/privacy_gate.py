"""The data owner's guard on a node: plan the noise, charge the owner's ledger, then train with DP-SGD.

Two checks guard the owner's cap. Before the first task of a job (``admit``), the node projects the
*whole* rest of the job, every planned round from this one to ``privacy.rounds``, onto the owner's
history, and declines the job up front if that would pass the cap: a job that could only be
served for a few rounds would spend the owner's epsilon on a model that never gets finished. Then
each round is charged on its own (``train``), committed (fsync) *before* any training: a crash
during or after training counts as spent, and a task that would still push the owner past their cap
(another job spent in between) is refused with nothing trained.

A job with ``[data] standardize`` starts with a DP statistics round (``statistics``): one Gaussian release
of the node's feature sums, charged as the segment ``(z, 1.0, 1)`` before the sums are computed. The
DP-SGD rounds (2..rounds) are planned to compose with it, so the whole job ends at its epsilon, and the
up-front check covers both.

Plans are kept next to the ledger (``privacy.plans.json``), so a restarted node does not search
again. Training uses book-keeping clipping where the model allows it (``auto``): same clipped sum,
same noise and accounting as Opacus's ``ew``, at a fraction of its cost (docs/privacy.md).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn

from fedgpu.datasets import ArrayDataset
from fedgpu.errors import PrivacyBudgetExceeded
from fedgpu.node.training import LocalTrainConfig, train_local_dp
from fedgpu.privacy.dp import GradSampleMode
from fedgpu.privacy.ledger import OwnerLedger, PrivacyEvent, dataset_fingerprint
from fedgpu.privacy.plan_cache import PlanCache
from fedgpu.privacy.planning import noise_for_job, statistics_noise
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
        self._admitted: set[tuple[str, str]] = set()  # (job, dataset) whose whole plan fit under the cap
        self._planned: set[str] = set()  # jobs whose plan was logged

    def _fingerprint(self, data: ArrayDataset) -> str:
        key = id(data)
        if key not in self._fingerprints:
            self._fingerprints[key] = dataset_fingerprint(data)
        return self._fingerprints[key]

    def _statistics_segment(self, task: Task) -> tuple[float, float, int] | None:
        """The job's statistics round as a ledger segment (noise multiplier, 1.0, 1); None: the job has none."""
        p = task.privacy
        if not p.statistics_epsilon > 0:
            return None
        return (statistics_noise(p.statistics_epsilon, p.delta, p.accountant or "prv", self.plans), 1.0, 1)

    def _training_rounds(self, task: Task) -> tuple[int, int]:
        """(the job's first DP-SGD round, its number of DP-SGD rounds): round 1 is the statistics round when it has one."""
        first = 2 if task.privacy.statistics_epsilon > 0 else 1
        return first, max(1, int(task.privacy.rounds) - first + 1)

    def _plan(self, task: Task, data: ArrayDataset, batch_size: int, epochs: int) -> tuple[float, float, int]:
        """(noise multiplier, sample rate, steps per round) this node runs for ``task``'s job; from the cache when planned before."""
        p = task.privacy
        t0 = time.perf_counter()
        stats = self._statistics_segment(task)
        sigma, sample_rate, steps = noise_for_job(
            p.epsilon, p.delta, len(data), batch_size, epochs, self._training_rounds(task)[1], p.accountant or "prv", cache=self.plans,
            before=(stats,) if stats is not None else (),
        )
        self.last_plan_seconds = time.perf_counter() - t0
        if task.job_id not in self._planned:
            self._planned.add(task.job_id)
            log.info("DP plan for job %s: sigma %.4f, q %.4g, %d steps a round, in %.3f s", task.job_id, sigma, sample_rate, steps, self.last_plan_seconds)
        return sigma, sample_rate, steps

    def admit(self, task: Task, data: ArrayDataset) -> None:
        """Decline a job whose planned rounds, from ``task.round`` to the last, would take the owner past the cap.

        Checked once per job and dataset in this process (so again after a restart, for the rounds
        left). Raises ``PrivacyBudgetExceeded`` with nothing trained or recorded.
        """
        fp = self._fingerprint(data)
        if (task.job_id, fp) in self._admitted:
            return
        p = task.privacy
        sigma, sample_rate, steps = self._plan(task, data, task.training.batch_size, task.training.epochs)
        first, _ = self._training_rounds(task)
        start = max(int(task.round), first)
        left = max(1, int(p.rounds) - start + 1)
        planned = [PrivacyEvent(self.owner, fp, task.job_id, start, sigma, sample_rate, steps * left, p.delta)]
        stats = self._statistics_segment(task)
        if stats is not None and int(task.round) < first:  # the statistics round is still ahead
            planned.insert(0, PrivacyEvent(self.owner, fp, task.job_id, int(task.round), *stats, p.delta))
        projected = self.ledger.project_all(planned)
        if projected > self.cap:
            spent = self.ledger.epsilon(p.delta, dataset_fp=fp)
            rounds = f"round {start}" if left == 1 else f"rounds {start}..{p.rounds}"
            what = " and its DP statistics round before them" if len(planned) > 1 else ""
            raise PrivacyBudgetExceeded(
                f"owner {self.owner!r}, dataset {fp[:19]}: job {task.job_id!r} plans {left} more round(s) of DP-SGD ({rounds}, "
                f"epsilon {p.epsilon:g} for the job){what} that would raise this data's epsilon from {spent:.4f} to {projected:.4f} "
                f"(delta {p.delta:g}), above the cap {self.cap:g}. Declined before training anything, so nothing was spent. "
                "Raise the cap (--epsilon-cap), ask for a job with a smaller epsilon, or stop serving this dataset"
            )
        self._admitted.add((task.job_id, fp))

    def train(self, task: Task, model: nn.Module, data: ArrayDataset, cfg: LocalTrainConfig, device: torch.device) -> float:
        """Charge, then train ``model`` in place; returns the owner's epsilon on this dataset afterwards."""
        p = task.privacy
        sigma, sample_rate, steps = self._plan(task, data, cfg.batch_size, cfg.epochs)
        event = PrivacyEvent(self.owner, self._fingerprint(data), task.job_id, int(task.round), sigma, sample_rate, steps, p.delta)
        epsilon = self.ledger.charge(event, self.cap)  # raises PrivacyBudgetExceeded: nothing trained
        train_local_dp(model, data, cfg, sigma, p.max_grad_norm, device, grad_sample_mode=GradSampleMode.AUTO)
        self.last_epsilon = epsilon
        return epsilon

    def statistics(self, task: Task, data: ArrayDataset) -> tuple[float, float]:
        """Charge the job's DP statistics round; returns (its noise multiplier, the owner's epsilon on this dataset afterwards).
        The caller releases the noisy sums only after this returns (PrivacyBudgetExceeded: nothing released)."""
        stats = self._statistics_segment(task)
        if stats is None:
            raise PrivacyBudgetExceeded(f"job {task.job_id!r} asks for a statistics round on DP data but plans no budget for it; declined")
        event = PrivacyEvent(self.owner, self._fingerprint(data), task.job_id, int(task.round), *stats, task.privacy.delta)
        epsilon = self.ledger.charge(event, self.cap)
        self.last_epsilon = epsilon
        return stats[0], epsilon


__all__ = ["NO_CAP", "PrivacyGate"]
