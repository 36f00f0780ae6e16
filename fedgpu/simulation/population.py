"""A simulated population of nodes that costs nothing until a node is chosen.

A node is its number: its data partition (indices into one shared training set), its speed and its
behaviour are drawn from (seed, number) when it is chosen, so memory stays flat in the number of
nodes. IID partitions are windows of one permutation of the training set (they repeat samples only
when nodes x samples exceeds the set); Dirichlet partitions draw each node's label proportions from
Dirichlet(alpha) and its samples from those classes (the per-client form of the usual non-IID split).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from fedgpu.adversaries import BEHAVIOURS
from fedgpu.errors import ConfigError

ALIASES = {"free_rider": "zeros"}  # what the issue calls a node that sends nothing useful
PARTITIONS = ("iid", "dirichlet")
_T = TypeVar("_T")


def parse_mix(text: str, flag: str, allowed: tuple[str, ...] | None = None) -> dict[str, float]:
    """``name=share,...`` (e.g. ``free_rider=0.1,signflip=0.05``) as {name: share}; shares sum to at most 1."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, share = part.partition("=")
        name = name.strip()
        try:
            value = float(share)
        except ValueError:
            value = math.nan
        if not sep or not (0.0 <= value <= 1.0):
            raise ConfigError(f"{flag} {text!r}: expected NAME=SHARE,... with shares in [0, 1], e.g. {flag} a=0.1,b=0.2")
        name = ALIASES.get(name, name) if allowed is not None else name
        if allowed is not None and name not in allowed:
            raise ConfigError(f"{flag}: {name!r} is unknown; allowed: free_rider, {', '.join(b for b in allowed if b != 'honest')}")
        mix[name] = mix.get(name, 0.0) + value
    if math.fsum(mix.values()) > 1.0 + 1e-9:
        raise ConfigError(f"{flag} {text!r}: the shares add up to more than 1")
    return mix


def parse_speeds(text: str) -> dict[float, float]:
    """``--speed-mix 1=0.8,0.2=0.2``: {speed factor: share}; the rest of the nodes have speed 1."""
    out: dict[float, float] = {}
    for name, share in parse_mix(text, "--speed-mix").items():
        try:
            speed = float(name)
        except ValueError:
            speed = math.nan
        if not (math.isfinite(speed) and speed > 0):
            raise ConfigError(f"--speed-mix: {name!r} is not a speed factor > 0 (1: as fast as this machine trains, 0.1: ten times slower)")
        out[speed] = out.get(speed, 0.0) + share
    return out


@dataclass(frozen=True)
class SimNode:
    """One chosen node, as its worker needs it (plain data: it travels to Ray workers)."""

    number: int
    name: str
    indices: np.ndarray   # its samples in the shared training set
    speed: float          # simulated seconds = measured training seconds / speed
    behaviour: str        # one of fedgpu.adversaries.BEHAVIOURS
    seed: int = 0         # its training seed this round (fedgpu.aggregator.rounds.task_seed)


@dataclass(frozen=True)
class Population:
    size: int
    train_labels: np.ndarray  # the shared training set's labels (the partitions are indices into it)
    samples_per_node: int
    seed: int = 0
    partition: str = "iid"
    alpha: float = 0.5
    speeds: Mapping[float, float] = field(default_factory=dict)
    behaviours: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"--nodes {self.size}: must be at least 1")
        if self.samples_per_node < 1:
            raise ConfigError(f"--samples-per-node {self.samples_per_node}: must be at least 1")
        if self.partition not in PARTITIONS:
            raise ConfigError(f"--partition {self.partition!r}: allowed values are {', '.join(PARTITIONS)}")
        if self.partition == "dirichlet" and not self.alpha > 0:
            raise ConfigError(f"--alpha {self.alpha}: must be > 0")
        unknown = sorted(set(self.behaviours) - set(BEHAVIOURS))
        if unknown:
            raise ConfigError(f"--behaviour-mix: {unknown[0]!r} is unknown; allowed: {', '.join(BEHAVIOURS)}")

    def name(self, number: int) -> str:
        return f"sim-{number:0{max(6, len(str(self.size - 1)))}d}"

    @property
    def repeats(self) -> float:
        """How many nodes hold each training sample, on average (> 1: partitions overlap)."""
        return self.size * self.samples_per_node / len(self.train_labels)

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, 0x5EED]).permutation(len(self.train_labels))

    def _classes(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.train_labels == c) for c in np.unique(self.train_labels)]

    def nodes(self, numbers: list[int]) -> list[SimNode]:
        """The chosen nodes, drawn from (seed, number): the same node is the same in every round."""
        perm = self._permutation() if self.partition == "iid" else None
        classes = self._classes() if self.partition == "dirichlet" else []
        out = []
        for i in numbers:
            if not 0 <= i < self.size:
                raise ConfigError(f"node {i} is outside the population of {self.size}")
            rng = np.random.default_rng([self.seed, i])
            s = self.samples_per_node
            if perm is not None:
                idx = perm[(i * s + np.arange(s)) % len(perm)]
            else:
                counts = rng.multinomial(s, rng.dirichlet(np.full(len(classes), self.alpha)))
                idx = np.concatenate([rng.choice(c, n, replace=n > len(c)) for c, n in zip(classes, counts, strict=True) if n])
            u_speed, u_behaviour = rng.random(2)
            out.append(SimNode(i, self.name(i), np.sort(idx), _pick(self.speeds, u_speed, 1.0), _pick(self.behaviours, u_behaviour, "honest")))
        return out


def _pick(mix: Mapping[_T, float], u: float, rest: _T) -> _T:
    """The mix's entry whose cumulative share bin holds u; ``rest`` beyond them."""
    edge = 0.0
    for value, share in mix.items():
        edge += share
        if u < edge:
            return value
    return rest


__all__ = ["ALIASES", "PARTITIONS", "Population", "SimNode", "parse_mix", "parse_speeds"]
