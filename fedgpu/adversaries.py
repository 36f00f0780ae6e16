"""Simulated adversaries for the demo, tests and benchmarks: how free riders and poisoners behave.

Honest nodes never use this, and the production ``fedgpu node`` has no way to reach it: an
adversarial node is its own entry point, ``python -m fedgpu.adversaries BEHAVIOUR [fedgpu node
flags]``. Each behaviour replaces the honest update with what such a node would send (through
``NodeConfig.update_hook``), trains on flipped labels, or (``lazy``) skips half its local steps and
sends what that gives; rewards, robust aggregation and, on public-data jobs, replicated spot checks
(docs/verification.md) must make them earn nothing. ``slow`` trains honestly but takes
``--slow-factor`` times as long (a real delay after each task's training, ``NodeConfig.slowdown``):
what measured-speed selection must route around.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import numpy as np

from fedgpu.errors import ConfigError

if TYPE_CHECKING:  # the agent imports torch and gRPC; behaviours only set fields on its config
    from fedgpu.node.agent import NodeConfig, UpdateHook
    from fedgpu.wire.records import Task

BEHAVIOURS = ("honest", "zeros", "noise", "replay", "signflip", "labelflip", "lazy", "slow")
LAZY_SKIP = 0.5  # the share of its local steps a lazy node skips, each one at random


class _Replay:
    """Replays the last global change (global model now minus the one it saw before)."""

    def __init__(self) -> None:
        self.previous: np.ndarray | None = None

    def __call__(self, task: Task, start: np.ndarray, delta: np.ndarray) -> np.ndarray:
        out = np.zeros_like(delta) if self.previous is None or self.previous.shape != start.shape else start - self.previous
        self.previous = start.copy()
        return out


def update_hook(name: str) -> UpdateHook | None:
    """What replaces the honest update of a node that behaves as ``name``; None for those that send what
    they trained, or change how they train (honest, labelflip, lazy, slow; replay needs the node's history)."""
    if name not in BEHAVIOURS:
        raise ConfigError(f"behaviour {name!r}: allowed values are {', '.join(BEHAVIOURS)}")
    if name == "zeros":
        return lambda task, start, delta: np.zeros_like(delta)
    if name == "noise":
        rng = np.random.default_rng()
        return lambda task, start, delta: rng.normal(0.0, float(np.std(delta)) or 1e-2, size=delta.shape)
    if name == "signflip":
        return lambda task, start, delta: -10.0 * delta
    return None


def flip_labels(y: np.ndarray, classes: int) -> np.ndarray:
    """labelflip's data: y -> classes - 1 - y."""
    return classes - 1 - y


def apply_behaviour(cfg: NodeConfig, name: str, slow_factor: float = 4.0) -> None:
    """Make the node ``cfg`` configures behave as ``name`` (one of ``BEHAVIOURS``); ``slow``: ``slow_factor`` x slower."""
    hook = update_hook(name)
    if hook is not None:
        cfg.update_hook = hook
    elif name == "slow":
        if not slow_factor >= 1:
            raise ConfigError(f"--slow-factor {slow_factor}: must be >= 1 (how many times as long a task takes)")
        cfg.slowdown = slow_factor
    elif name == "replay":
        cfg.update_hook = _Replay()
    elif name == "lazy":  # a random half of the batches (its own coin, so two lazy replicas differ too)
        from fedgpu.node.training import LocalTrainer

        coin = np.random.default_rng()
        cfg.trainer = LocalTrainer(skip_step=lambda step: bool(coin.random() < LAZY_SKIP))
    elif name == "labelflip":  # trains honestly on wrong labels
        from fedgpu.datasets import ArrayDataset, get_schema, load_file

        for dataset, path in cfg.data.items():
            ds, classes = load_file(path, get_schema(dataset)), get_schema(dataset).num_classes
            cfg.extra_datasets[dataset] = ArrayDataset(ds.x, flip_labels(ds.y, classes))
        cfg.data = {}


def main(argv: list[str] | None = None) -> int:
    """``python -m fedgpu.adversaries BEHAVIOUR [fedgpu node flags]``: a node that behaves as BEHAVIOUR."""
    import argparse

    from fedgpu.cli import node as node_cli

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in BEHAVIOURS:
        print(f"usage: python -m fedgpu.adversaries {{{','.join(BEHAVIOURS)}}} [fedgpu node flags]", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="fedgpu.adversaries")
    node_cli.add_arguments(parser)
    parser.add_argument("--slow-factor", type=float, default=4.0, help="slow: a task takes this many times as long (default %(default)s)")
    ns = parser.parse_args(args[1:])
    cfg = node_cli.config_from_args(ns)
    apply_behaviour(cfg, args[0], ns.slow_factor)
    return node_cli.serve(cfg, ns)


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["BEHAVIOURS", "LAZY_SKIP", "apply_behaviour", "flip_labels", "main", "update_hook"]
