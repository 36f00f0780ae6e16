"""Robust rules over cohort means: coordinate-wise median, trimmed mean, norm-bounded mean.

Each works on the cohorts' mean updates ``m_c = S_c / W_c`` (a cohort of weight 0 has none and is
left out), so a Byzantine node acts through its cohort: with random cohorts of k, a cohort is
Byzantine when any member is. What each rule tolerates, and what valuation does with it, is in
docs/robust.md.

The median and the trimmed mean are Flower's (``flwr.server.strategy.aggregate``:
``aggregate_median``, ``aggregate_trimmed_avg``), called with each cohort's mean as a one-layer
model. Both ignore the example counts they are given and treat every client alike, and that is the
right semantics here, not a loss: weights are what the nodes claim, and an order statistic weighted
by them would let one node buy the median by claiming a large weight. Over cohort means each cohort
counts once, which is what the tolerance argument (a majority of clean cohorts) counts. Flower is
imported on the first call, so importing this module stays numpy-only.

The norm-bounded mean keeps the weights (it is FedAvg of clipped cohort means, and FedAvg bit for
bit when no cohort reaches the bound), so a cohort's claimed weight still buys it a share of the
average, at most ``norm_bound`` long.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedgpu.aggregation.interface import Cohort, checked_weights, cohort_means
from fedgpu.errors import ConfigError


def coordinate_median(cohorts: Sequence[Cohort]) -> np.ndarray:
    """Per coordinate, the median of the cohorts' mean updates (the mean of the middle two for an even
    count); zeros when no cohort has weight."""
    means, _ = cohort_means(cohorts)
    if len(means) == 0:
        return np.zeros(means.shape[1])
    from flwr.server.strategy.aggregate import aggregate_median

    # the count beside each mean is ignored by Flower's median (see the module docstring)
    return np.asarray(aggregate_median([([m], 1) for m in means])[0], dtype=np.float64)


def trimmed_mean(cohorts: Sequence[Cohort], trim_fraction: float) -> np.ndarray:
    """Per coordinate, the mean of the cohorts' mean updates after the ``int(trim_fraction * n)``
    largest and as many smallest of the n are cut; zeros when no cohort has weight."""
    _check_trim_fraction(trim_fraction)
    means, _ = cohort_means(cohorts)
    if len(means) == 0:
        return np.zeros(means.shape[1])
    from flwr.server.strategy.aggregate import aggregate_trimmed_avg

    return np.asarray(aggregate_trimmed_avg([([m], 1) for m in means], trim_fraction)[0], dtype=np.float64)


def norm_bounded_mean(cohorts: Sequence[Cohort], norm_bound: float) -> np.ndarray:
    """FedAvg of the cohorts' mean updates, each first scaled down to an L2 norm of at most
    ``norm_bound``: ``Σ W_c clip(m_c) / Σ W_c``. Computed as ``Σ s_c S_c / Σ W_c`` with ``s_c`` the
    clipping factor, so a round in which no cohort reaches the bound is exactly FedAvg."""
    _check_norm_bound(norm_bound)
    weights = checked_weights(cohorts)
    total = float(sum(weights))
    if total <= 0.0:
        return np.zeros(np.shape(cohorts[0].weighted))
    parts = []
    for c, w in zip(cohorts, weights, strict=True):
        if w <= 0.0:
            continue
        s = np.asarray(c.weighted, dtype=np.float64)
        norm = float(np.linalg.norm(s)) / w  # the norm of the cohort's mean update
        parts.append(s if norm <= norm_bound else s * (norm_bound / norm))
    out: np.ndarray = np.add.reduce(parts)
    return out / total


def _check_trim_fraction(trim_fraction: float) -> None:
    if not (isinstance(trim_fraction, (int, float)) and math.isfinite(trim_fraction) and 0.0 <= trim_fraction < 0.5):
        raise ConfigError(f"trim_fraction: must be a number in [0, 0.5), got {trim_fraction!r}")


def _check_norm_bound(norm_bound: float) -> None:
    if not (isinstance(norm_bound, (int, float)) and math.isfinite(norm_bound) and norm_bound > 0.0):
        raise ConfigError(f"norm_bound: must be a finite number > 0, got {norm_bound!r}")


@dataclass(frozen=True)
class CoordinateMedian:
    """:func:`coordinate_median` as a rule (``rule = "median"``)."""

    name: ClassVar[str] = "median"

    def __call__(self, cohorts: Sequence[Cohort], /) -> np.ndarray:
        return coordinate_median(cohorts)


@dataclass(frozen=True)
class TrimmedMean:
    """:func:`trimmed_mean` as a rule (``rule = "trimmed_mean"``, ``trim_fraction`` of the cohorts cut
    from each end, per coordinate)."""

    trim_fraction: float
    name: ClassVar[str] = "trimmed_mean"

    def __post_init__(self) -> None:
        _check_trim_fraction(self.trim_fraction)

    def __call__(self, cohorts: Sequence[Cohort], /) -> np.ndarray:
        return trimmed_mean(cohorts, self.trim_fraction)


@dataclass(frozen=True)
class NormBoundedMean:
    """:func:`norm_bounded_mean` as a rule (``rule = "norm_bounded"``, each cohort's mean update at
    most ``norm_bound`` long)."""

    norm_bound: float
    name: ClassVar[str] = "norm_bounded"

    def __post_init__(self) -> None:
        _check_norm_bound(self.norm_bound)

    def __call__(self, cohorts: Sequence[Cohort], /) -> np.ndarray:
        return norm_bounded_mean(cohorts, self.norm_bound)


__all__ = ["CoordinateMedian", "NormBoundedMean", "TrimmedMean", "coordinate_median", "norm_bounded_mean", "trimmed_mean"]
