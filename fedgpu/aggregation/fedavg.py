"""Weighted FedAvg over cohort sums: the one FedAvg of fedgpu (the driver's and valuation's).

``Σ S_c / Σ W_c``: every member's update counts by its weight, whichever cohort it sat in, which is
what plain FedAvg over the nodes would give. A cohort of weight 0 is left out and a round of total
weight 0 gives the zero update (the zero-weight rule of :mod:`fedgpu.aggregation.interface`).

The sums are added in cohort order and divided once by the weights' plain sum, so valuation's
coalition models are what they were before this module existed, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedgpu.aggregation.interface import Cohort, checked_weights


def fedavg(cohorts: Sequence[Cohort]) -> np.ndarray:
    """``Σ S_c / Σ W_c`` over the cohorts of positive weight; zeros when the total weight is 0."""
    weights = checked_weights(cohorts)
    total = float(sum(weights))
    if total <= 0.0:
        return np.zeros(np.shape(cohorts[0].weighted))
    out: np.ndarray = np.add.reduce([np.asarray(c.weighted, dtype=np.float64) for c, w in zip(cohorts, weights, strict=True) if w > 0.0])
    return out / total


@dataclass(frozen=True)
class FedAvg:
    """:func:`fedavg` as a rule (``[aggregation] rule = "fedavg"``, the default)."""

    name: ClassVar[str] = "fedavg"

    def __call__(self, cohorts: Sequence[Cohort], /) -> np.ndarray:
        return fedavg(cohorts)


__all__ = ["FedAvg", "fedavg"]
