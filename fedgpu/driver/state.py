"""The driver's own state file: what it needs to value and apply every round exactly once.

One safetensors file in the driver's ``--out`` folder holds the model the driver has computed up to
``version``, its arrays (server momentum, the valuer's last change) and, as JSON metadata, everything
else it carries between rounds (the valuer's observations and reputation, the report so far, and the
round result it has yet to see published). It is written atomically (temporary file, fsync, rename,
fsync of the folder) *before* a round is published, so a driver killed at any step resumes either
before the round (and values it again from the same sums) or after it (and re-sends, or recognises,
the same publish). Safetensors and JSON only: nothing in it is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from fedgpu.errors import StorageError
from fedgpu.files import write_atomic

STATE_FILE = "driver_state.safetensors"
_FORMAT = "fedgpu.driver.state.v1"


@dataclass
class DriverState:
    version: int                       # the model version ``model`` is (0: the initial model)
    model: dict[str, torch.Tensor]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def save_state(directory: Path, state: DriverState) -> None:
    """Write the state durably and atomically: after a crash the file is the old state or the new one."""
    tensors = {f"model/{k}": v.detach().contiguous() for k, v in state.model.items()}
    tensors.update({f"array/{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.arrays.items()})
    meta = {"format": _FORMAT, "version": str(state.version), "meta": json.dumps(state.meta, allow_nan=False)}
    write_atomic(directory / STATE_FILE, save(tensors, metadata=meta), 0o600)


def load_state(directory: Path) -> DriverState:
    path = directory / STATE_FILE
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except FileNotFoundError as exc:
        raise StorageError(f"{path} does not exist: {directory} holds no driver state to resume") from exc
    except (OSError, SafetensorError) as exc:
        raise StorageError(f"cannot read the driver's state {path}: {exc}") from exc
    if header.get("format") != _FORMAT:
        raise StorageError(f"{path} is not a fedgpu driver state ({_FORMAT})")
    model = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    arrays = {k.removeprefix("array/"): v.numpy() for k, v in tensors.items() if k.startswith("array/")}
    return DriverState(int(header["version"]), model, arrays, json.loads(header["meta"]))


__all__ = [
    "DriverState",
    "STATE_FILE",
    "load_state",
    "save_state",
]
