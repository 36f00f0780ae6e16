"""Scoring a model on a dataset, for whoever holds both: the job driver on its held-out set, a benchmark.

A leaf: it imports torch, numpy and the dataset type, never a role (node, driver, aggregator).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedgpu.datasets import ArrayDataset
from fedgpu.errors import ConfigError


def pick_device() -> torch.device:
    """Where models run: CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_device(choice: str | None, flag: str = "--device") -> torch.device:
    """The device an operator chose: ``auto`` (or None: CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    text = (choice or "auto").strip().lower()
    if text == "auto":
        return pick_device()
    if text == "cpu":
        return torch.device("cpu")
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"{flag} {choice!r}: expected auto, cpu, cuda or cuda:N (e.g. cuda:1)")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"{flag} {choice}: torch here ({torch.__version__}, {build}) sees no CUDA device; use --device cpu or install the CUDA build of torch")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise ConfigError(f"{flag} {choice}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1} (CUDA_VISIBLE_DEVICES may hide others)")
    return torch.device(text)


@torch.no_grad()
def evaluate(model: nn.Module, data: ArrayDataset, batch_size: int = 1024, device: torch.device | None = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy loss) of ``model`` on ``data``; the model is left on the CPU."""
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


__all__ = ["evaluate", "parse_device", "pick_device"]
