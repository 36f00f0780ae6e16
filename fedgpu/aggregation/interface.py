"""What an aggregation rule is: the round's cohort sums in, the update the round applies out.

A rule sees cohorts, never nodes: each is a decrypted sum ``S = Σ wᵢΔᵢ`` over at least k members, its
weight ``W = Σ wᵢ`` (the nodes' sample counts x 1e-3, as they claim them) and its member list. It
returns the change to apply to the global model, a flat vector in the order of
:mod:`fedgpu.models.flat`. Rules are pure functions of their inputs: the driver calls one on the
round's sums, and valuation calls the same one on every coalition it evaluates (with the cohorts
outside the coalition sending zeros), so a cohort is valued for what it does under the rule in force.

The zero-weight rule, the same for every rule here: a cohort of weight 0 holds no update a rule can
use (it has no mean ``S / W``, and a sum that no weight stands behind must not move the model), so it
is left out; a round whose cohorts weigh 0 in total gives the zero update: the model stays where it
is. A negative or non-finite weight, or sums of different shapes, are the senders' fault
(:class:`~fedgpu.errors.ProtocolError`). Sums are not checked for NaN here: the driver refuses a
non-finite decryption and valuation a non-finite sum before any rule runs, and a rule runs once per
coalition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedgpu.errors import ProtocolError


class Cohort(Protocol):
    """What a rule reads of one cohort (the driver's decrypted ``CohortSum`` is one)."""

    @property
    def weighted(self) -> np.ndarray:
        """``S = Σ wᵢΔᵢ`` over the members, one float per model value."""
        ...

    @property
    def weight(self) -> float:
        """``W = Σ wᵢ``: the members' claimed weights, summed."""
        ...

    @property
    def members(self) -> Sequence[str]:
        """The members' node ids (at least k of them)."""
        ...


@dataclass(frozen=True)
class CohortRecord:
    """A plain :class:`Cohort`: what valuation builds for each coalition, and tests use."""

    weighted: np.ndarray
    weight: float
    members: Sequence[str] = field(default=())


class AggregationRule(Protocol):
    """A rule: the round's cohorts in (in the aggregator's cohort order), the update out.

    ``name`` is what the job file's ``[aggregation] rule`` says; see :mod:`fedgpu.aggregation.registry`.
    """

    @property
    def name(self) -> str: ...

    def __call__(self, cohorts: Sequence[Cohort], /) -> np.ndarray: ...


def checked_weights(cohorts: Sequence[Cohort]) -> list[float]:
    """Each cohort's weight as a float, after checking what every rule relies on: at least one
    cohort, one shape for all sums (a flat vector), weights finite and >= 0."""
    if not cohorts:
        raise ProtocolError("no cohort sums to aggregate: the round released none")
    shape = np.shape(cohorts[0].weighted)
    if len(shape) != 1:
        raise ProtocolError(f"cohort 0: sum has shape {shape}, expected a flat vector")
    weights = []
    for i, c in enumerate(cohorts):
        if np.shape(c.weighted) != shape:
            raise ProtocolError(f"cohort {i}: sum has shape {np.shape(c.weighted)}, cohort 0's has {shape}")
        w = float(c.weight)
        if not math.isfinite(w) or w < 0.0:
            raise ProtocolError(f"cohort {i}: weight {c.weight!r} is not a finite number >= 0")
        weights.append(w)
    return weights


def cohort_means(cohorts: Sequence[Cohort]) -> tuple[np.ndarray, np.ndarray]:
    """(means, weights): each positive-weight cohort's mean update ``S / W`` (one row each, in cohort
    order) and its weight; a cohort of weight 0 has no mean and is left out. ``means`` has 0 rows when
    no cohort has weight."""
    weights = checked_weights(cohorts)
    size = int(np.shape(cohorts[0].weighted)[0])
    rows = [np.asarray(c.weighted, dtype=np.float64) / w for c, w in zip(cohorts, weights, strict=True) if w > 0.0]
    means = np.stack(rows) if rows else np.zeros((0, size))
    return means, np.array([w for w in weights if w > 0.0], dtype=np.float64)


__all__ = ["AggregationRule", "Cohort", "CohortRecord", "checked_weights", "cohort_means"]
