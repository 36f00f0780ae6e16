"""Aggregation rules: how the driver turns the round's cohort sums into the update it applies.

A pure leaf (numpy only; Flower's order statistics are imported when a rule that uses them runs):
it imports no role, no wire and no torch, and both the driver and valuation call it.

* :mod:`~fedgpu.aggregation.interface` — :class:`Cohort`, :class:`AggregationRule`, the zero-weight rule;
* :mod:`~fedgpu.aggregation.fedavg` — weighted FedAvg over cohort sums, the default;
* :mod:`~fedgpu.aggregation.robust` — coordinate-wise median, trimmed mean and norm-bounded mean over
  cohort means (docs/robust.md: what each tolerates with random cohorts of k);
* :mod:`~fedgpu.aggregation.registry` — rules by name (``[aggregation] rule`` in the job file).
"""

from __future__ import annotations

from fedgpu.aggregation.fedavg import FedAvg, fedavg
from fedgpu.aggregation.interface import AggregationRule, Cohort, CohortRecord, checked_weights, cohort_means
from fedgpu.aggregation.registry import RuleFactory, RuleParams, available_rules, get_rule, register_rule
from fedgpu.aggregation.robust import (
    CoordinateMedian,
    NormBoundedMean,
    TrimmedMean,
    coordinate_median,
    norm_bounded_mean,
    trimmed_mean,
)

__all__ = [
    "AggregationRule",
    "Cohort",
    "CohortRecord",
    "CoordinateMedian",
    "FedAvg",
    "NormBoundedMean",
    "RuleFactory",
    "RuleParams",
    "TrimmedMean",
    "available_rules",
    "checked_weights",
    "cohort_means",
    "coordinate_median",
    "fedavg",
    "get_rule",
    "norm_bounded_mean",
    "register_rule",
    "trimmed_mean",
]
