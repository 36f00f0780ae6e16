"""Simulated adversaries for demos and benchmarks: how free riders and poisoners behave.

Honest nodes never use this. Each behaviour replaces the honest update with what such a node
would send; rewards and robust aggregation must make them earn nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedgpu.errors import ConfigError

if TYPE_CHECKING:  # the agent imports torch and gRPC; behaviours only set fields on its config
    from fedgpu.node.agent import NodeConfig
    from fedgpu.wire.records import Task

BEHAVIOURS = ("honest", "zeros", "noise", "replay", "signflip", "labelflip")


class _Replay:
    """Replays the last global change (global model now minus the one it saw before)."""

    def __init__(self) -> None:
        self.previous: np.ndarray | None = None

    def __call__(self, task: Task, start: np.ndarray, delta: np.ndarray) -> np.ndarray:
        out = np.zeros_like(delta) if self.previous is None or self.previous.shape != start.shape else start - self.previous
        self.previous = start.copy()
        return out


def apply_behaviour(cfg: NodeConfig, name: str) -> None:
    """Make the node ``cfg`` configures behave as ``name`` (one of ``BEHAVIOURS``)."""
    if name not in BEHAVIOURS:
        raise ConfigError(f"--behaviour {name!r}: allowed values are {', '.join(BEHAVIOURS)}")
    if name == "zeros":
        cfg.update_hook = lambda task, start, delta: np.zeros_like(delta)
    elif name == "noise":
        rng = np.random.default_rng()
        cfg.update_hook = lambda task, start, delta: rng.normal(0.0, float(np.std(delta)) or 1e-2, size=delta.shape)
    elif name == "replay":
        cfg.update_hook = _Replay()
    elif name == "signflip":
        cfg.update_hook = lambda task, start, delta: -10.0 * delta
    elif name == "labelflip":
        cfg.label_flip = True


__all__ = ["BEHAVIOURS", "apply_behaviour"]
