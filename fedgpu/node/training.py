"""Local training on a node: a few epochs of SGD on the owner's data, on CUDA when present.

``train_local`` is the plain path; :class:`LocalTrainer` is it as the node's :class:`Trainer` (the
other trainer is a Flower client, :mod:`fedgpu.node.flower`). ``train_local_dp`` is the same loop under DP-SGD (Opacus): the
model is privatised for this call only and trained in place. What a node runs for one round of a DP
job (plan sigma for its own data, charge the owner's ledger, then train) is
:class:`fedgpu.node.privacy_gate.PrivacyGate`. ``deterministic`` is what a public-data task trains
under: its replicas on other nodes must come out bit-identical (docs/verification.md).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedgpu.datasets import ArrayDataset
from fedgpu.errors import ConfigError
from fedgpu.evaluation import pick_device

if TYPE_CHECKING:  # Opacus is imported only when a DP task runs: the plain path stays light
    from fedgpu.privacy.dp import GradSampleMode
    from fedgpu.wire.records import Task


@dataclass(frozen=True)
class LocalTrainConfig:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9  # fresh momentum buffer every round: no optimiser state survives a task
    seed: int = 0


@dataclass(frozen=True)
class TrainResult:
    num_samples: int  # aggregation weight for FedAvg
    steps: int
    loss: float  # mean training loss over the last epoch
    seconds: float


@dataclass(frozen=True)
class DPTrainResult(TrainResult):
    """A DP round's result; (noise_multiplier, sample_rate, steps) is the segment the ledger composes."""

    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float


def make_loader(data: ArrayDataset, batch_size: int, seed: int, device: torch.device) -> DataLoader[tuple[torch.Tensor, ...]]:
    ds = TensorDataset(torch.from_numpy(np.ascontiguousarray(data.x)), torch.from_numpy(data.y))
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, generator=gen, pin_memory=device.type == "cuda")


_DETERMINISTIC_LOCK = threading.Lock()
_deterministic_users = 0
_deterministic_before: tuple[int, bool, bool, bool, bool] | None = None


@contextlib.contextmanager
def deterministic(threads: int = 1) -> Iterator[None]:
    """Deterministic kernels and a fixed number of CPU threads while it lasts (a CPU reduction's order
    depends on the thread count): a task's replicas on two nodes of one device class then train alike.
    The settings are process-wide, so nested or concurrent users (node threads in one process) share
    them: the first one in saves torch's settings and the last one out restores them."""
    global _deterministic_users, _deterministic_before
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic GEMMs
    with _DETERMINISTIC_LOCK:
        if _deterministic_users == 0:
            _deterministic_before = (
                torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
            )
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        _deterministic_users += 1
    try:
        yield
    finally:
        with _DETERMINISTIC_LOCK:
            _deterministic_users -= 1
            if _deterministic_users == 0 and _deterministic_before is not None:
                n, enabled, warn_only, cudnn_det, cudnn_bench = _deterministic_before
                torch.set_num_threads(n)
                torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, cudnn_bench


class MomentumSGD:
    """SGD with heavy-ball momentum, step for step what ``torch.optim.SGD(params, lr, momentum)`` computes
    (no dampening, weight decay or Nesterov). Why not torch.optim: building any torch optimiser imports
    torch._dynamo (with sympy, ~800 modules): ~70 MB resident and seconds of start-up in every node process."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float, momentum: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.momentum = lr, momentum
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            if self.momentum != 0:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = torch.clone(grad).detach()
                else:
                    buf.mul_(self.momentum).add_(grad)
                grad = buf
            p.add_(grad, alpha=-self.lr)


def train_local(
    model: nn.Module, data: ArrayDataset, cfg: LocalTrainConfig, device: torch.device | None = None, *, skip_step: Callable[[int], bool] | None = None
) -> TrainResult:
    """Train ``model`` in place on ``data``. ``skip_step(i)`` true: batch i is skipped (the simulated lazy
    node of fedgpu.adversaries; an honest node never passes it)."""
    device = device or pick_device()
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    opt = MomentumSGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    loss_fn = nn.CrossEntropyLoss()
    loader = make_loader(data, cfg.batch_size, cfg.seed, device)
    t0 = time.perf_counter()
    steps, last, batch = 0, 0.0, -1
    for _ in range(cfg.epochs):
        total, count = 0.0, 0
        for xb, yb in loader:
            batch += 1
            if skip_step is not None and skip_step(batch):
                continue
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            steps += 1
            total += float(loss.detach()) * len(yb)
            count += len(yb)
        last = total / max(count, 1)
    model.to("cpu")
    return TrainResult(num_samples=len(data), steps=steps, loss=last, seconds=time.perf_counter() - t0)


class Trainer(Protocol):
    """What trains the model for one task on a node. The agent does the rest (download, the change, claims,
    client-level DP, encryption, signing, upload), so a trainer only turns global weights into local ones."""

    def check(self, task: Task) -> None:
        """Raise :class:`fedgpu.errors.UnsupportedTask` for a task this trainer cannot run as asked (declined)."""

    def train(self, model: nn.Module, data: ArrayDataset, cfg: LocalTrainConfig, round: int, device: torch.device) -> int:
        """Train ``model`` (holding the global weights) in place; return the example count it claims."""


@dataclass
class LocalTrainer:
    """fedgpu's own loop (:func:`train_local`): every task it is offered, sample-level DP included (the agent runs that).
    ``skip_step`` is for the simulated lazy node of fedgpu.adversaries only: the batches it skips."""

    skip_step: Callable[[int], bool] | None = None

    def check(self, task: Task) -> None:
        return None

    def train(self, model: nn.Module, data: ArrayDataset, cfg: LocalTrainConfig, round: int, device: torch.device) -> int:
        return train_local(model, data, cfg, device, skip_step=self.skip_step).num_samples


def train_local_dp(
    model: nn.Module,
    data: ArrayDataset,
    cfg: LocalTrainConfig,
    noise_multiplier: float,
    max_grad_norm: float,
    device: torch.device | None = None,
    *,
    poisson_sampling: bool = True,
    grad_sample_mode: str | GradSampleMode = "ew",
    max_physical_batch_size: int | None = None,
    noise_seed: int | None = None,
) -> DPTrainResult:
    """Train ``model`` in place with DP-SGD: ``cfg.epochs`` epochs of ceil(n/B) Poisson batches each.

    ``cfg.batch_size`` is the expected (logical) batch; ``max_physical_batch_size`` splits it to
    bound memory. ``cfg.seed`` does not seed the sampling or the noise (the aggregator knows it);
    ``noise_seed`` does, for tests and benchmarks only. The caller charges the ledger first.
    """
    from fedgpu.privacy.dp import private_round, zero_grad_sample

    device = device or pick_device()
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    loss_fn = nn.CrossEntropyLoss()
    ds = TensorDataset(torch.from_numpy(np.ascontiguousarray(data.x)), torch.from_numpy(data.y))
    t0 = time.perf_counter()
    last = 0.0
    try:
        with private_round(
            model,
            opt,
            ds,
            batch_size=cfg.batch_size,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=poisson_sampling,
            grad_sample_mode=grad_sample_mode,
            max_physical_batch_size=max_physical_batch_size,
            device=device,
            seed=noise_seed,
        ) as rnd:
            for _ in range(cfg.epochs):
                total, count = 0.0, 0
                for xb, yb in rnd.loader:
                    rnd.optimizer.zero_grad(set_to_none=True)
                    if len(yb) == 0:  # an empty Poisson batch still takes a (noise-only) step
                        zero_grad_sample(rnd.optimizer)
                    else:
                        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                        loss = loss_fn(rnd.module(xb), yb)
                        with warnings.catch_warnings():  # Opacus hooks on an input without grad: expected
                            warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*")
                            loss.backward()
                        total += float(loss.detach()) * len(yb)
                        count += len(yb)
                    rnd.optimizer.step()
                last = total / max(count, 1)
            steps = rnd.steps_taken()
            sample_rate = rnd.sample_rate
    finally:
        model.to("cpu")
    if not math.isfinite(last):
        raise ConfigError(f"DP training diverged (loss {last}); lower lr or max_grad_norm")
    return DPTrainResult(
        num_samples=len(data),
        steps=steps,
        loss=last,
        seconds=time.perf_counter() - t0,
        sample_rate=sample_rate,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
    )


__all__ = ["DPTrainResult", "LocalTrainConfig", "LocalTrainer", "MomentumSGD", "TrainResult", "Trainer", "deterministic", "make_loader", "train_local", "train_local_dp"]
