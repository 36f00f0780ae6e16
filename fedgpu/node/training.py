"""Local training on a node: a few epochs of SGD on the owner's data, on CUDA when present."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedgpu.datasets import ArrayDataset


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


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_loader(data: ArrayDataset, batch_size: int, seed: int, device: torch.device) -> DataLoader:
    ds = TensorDataset(torch.from_numpy(np.ascontiguousarray(data.x)), torch.from_numpy(data.y))
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, generator=gen, pin_memory=device.type == "cuda")


def train_local(model: nn.Module, data: ArrayDataset, cfg: LocalTrainConfig, device: torch.device | None = None) -> TrainResult:
    """Train ``model`` in place on ``data``."""
    device = device or pick_device()
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    loss_fn = nn.CrossEntropyLoss()
    loader = make_loader(data, cfg.batch_size, cfg.seed, device)
    t0 = time.perf_counter()
    steps, last = 0, 0.0
    for _ in range(cfg.epochs):
        total, count = 0.0, 0
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            steps += 1
            total += float(loss) * len(yb)
            count += len(yb)
        last = total / max(count, 1)
    model.to("cpu")
    return TrainResult(num_samples=len(data), steps=steps, loss=last, seconds=time.perf_counter() - t0)


@torch.no_grad()
def evaluate(model: nn.Module, data: ArrayDataset, batch_size: int = 1024, device: torch.device | None = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy loss) of ``model`` on ``data``."""
    device = device or pick_device()
    model.to(device).eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    correct, total_loss = 0, 0.0
    for i in range(0, len(data), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(data.x[i : i + batch_size])).to(device)
        yb = torch.from_numpy(data.y[i : i + batch_size]).to(device)
        out = model(xb)
        total_loss += float(loss_fn(out, yb))
        correct += int((out.argmax(1) == yb).sum())
    model.to("cpu")
    n = max(len(data), 1)
    return correct / n, total_loss / n
