"""A Flower ``NumPyClient`` as a fedgpu node's trainer: ``fedgpu node --flower-client module:attr``.

fedgpu hands the client's ``fit`` the global weights (the model's floating-point state entries as NumPy
arrays, in the order of :mod:`fedgpu.models.flat`) and the task's training config; it takes back the
weights and the example count, and the agent computes the change, clamps the claim, applies
client-level DP, encrypts, signs and uploads as for any node. What the client trains on is its own
business, so the claimed count is capped at the rows of the file mapped with ``--data``, and
sample-level DP (DP-SGD inside the training loop) is declined: fedgpu cannot enforce it in foreign
code. docs/flower.md says where the privacy ledger applies.

``module:attr`` is local code the operator names (never network data): ``module`` is a dotted module
name (imported with the working folder on the path) or a ``.py`` file; ``attr`` is a NumPyClient
instance, a class constructed with no arguments, or a zero-argument factory returning one.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedgpu.datasets import ArrayDataset
from fedgpu.errors import ConfigError, FedgpuError, UnsupportedTask
from fedgpu.models.flat import float_keys
from fedgpu.node.training import LocalTrainConfig
from fedgpu.wire.records import Task

log = logging.getLogger("fedgpu.node")


def load_attr(spec: str) -> Any:
    """``module:attr`` or ``path/to/file.py:attr``: the object it names."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--flower-client {spec!r}: expected MODULE:ATTR, e.g. --flower-client my_client:client_fn or examples/flower_client.py:client_fn")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ConfigError(f"--flower-client {spec!r}: no file {path}")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ConfigError(f"--flower-client {spec!r}: {path} cannot be imported as a module")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[path.stem] = module
        mod_spec.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # as `flwr run` does: the operator's own modules beside them
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"--flower-client {spec!r}: cannot import {module_name!r} ({exc}); run from its folder or give a .py path") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"--flower-client {spec!r}: module {module_name!r} has no attribute {attr!r}") from exc


def resolve_client(obj: Any, spec: str = "") -> Any:
    """A NumPyClient from an instance, a class (built with no arguments) or a zero-argument factory."""
    if inspect.isclass(obj) or (callable(obj) and not callable(getattr(obj, "fit", None))):
        try:
            obj = obj()
        except TypeError as exc:
            raise ConfigError(f"--flower-client {spec}: could not call {obj!r} with no arguments ({exc}); name an instance, a class or a zero-argument factory") from exc
    if not callable(getattr(obj, "fit", None)):
        raise ConfigError(f"--flower-client {spec}: {type(obj).__name__} has no fit(parameters, config); name a Flower NumPyClient")
    return obj


class FlowerTrainer:
    """Runs one task's training through a NumPyClient's ``fit``; see the module's docstring."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def from_spec(cls, spec: str) -> FlowerTrainer:
        return cls(resolve_client(load_attr(spec), spec))

    def check(self, task: Task) -> None:
        if task.public_data is not None:
            raise UnsupportedTask(f"job {task.job_id} is a public-data job: a Flower client trains on its own data, not on the shard the task names")
        if task.privacy.enabled and task.privacy.mode == "sample":
            raise UnsupportedTask(
                f"job {task.job_id} asks for sample-level DP (DP-SGD), which fedgpu cannot apply inside a Flower client's fit; "
                "serve it from a native node, or run the job with client-level DP ([privacy] mode = \"client\")"
            )

    def train(self, model: nn.Module, data: ArrayDataset, cfg: LocalTrainConfig, round: int, device: torch.device) -> int:
        state = model.state_dict()
        keys = float_keys(state)
        parameters = [state[k].detach().cpu().numpy().copy() for k in keys]
        config: dict[str, bool | bytes | float | int | str] = {
            "server_round": round, "local_epochs": cfg.epochs, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "lr": cfg.lr, "learning_rate": cfg.lr, "momentum": cfg.momentum, "seed": cfg.seed, "device": str(device),
        }
        torch.manual_seed(cfg.seed)
        result = self.client.fit(parameters, config)
        if not isinstance(result, tuple) or len(result) != 3:
            raise FedgpuError(f"the Flower client's fit returned {type(result).__name__}; a NumPyClient returns (parameters, num_examples, metrics)")
        returned, examples, _metrics = result
        if len(returned) != len(keys):
            raise FedgpuError(f"the Flower client returned {len(returned)} arrays; the job's model has {len(keys)} ({', '.join(keys)}): use the job's architecture")
        new = dict(state)
        for k, arr in zip(keys, returned, strict=True):
            a = np.asarray(arr)
            if tuple(a.shape) != tuple(state[k].shape):
                raise FedgpuError(f"the Flower client returned shape {a.shape} for {k}; the job's model has {tuple(state[k].shape)}")
            new[k] = torch.from_numpy(np.ascontiguousarray(a)).to(state[k].dtype)
        model.load_state_dict(new)
        examples = int(examples)
        if examples > len(data):  # fedgpu cannot see what the client trained on: the mapped file is the owner's word
            log.info("the Flower client claims %d examples; capped at the %d rows mapped with --data", examples, len(data))
        return max(0, min(examples, len(data)))


__all__ = ["FlowerTrainer", "load_attr", "resolve_client"]
