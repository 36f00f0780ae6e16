"""Federated standardisation: per-feature statistics summed under encryption, never pooled.

In round 1 of a job with ``[data] standardize = true`` each node uploads, in place of a model change,
its per-feature mean and mean of squares (positions ``0..F-1`` and ``F..2F-1`` of the update vector),
with its sample count as the weight. The aggregator adds them into cohort sums like any update, so
the driver sees only sums over at least k nodes; dividing by the summed weight gives the global
moments, from which it derives each feature's mean and std (docs/tabular.md).

CKKS decrypts with an absolute error (~1e-5 per value), so a feature whose spread is tiny next to
its magnitude loses its variance to cancellation. A schema's declared ``ranges`` fix that: nodes
map each feature to [-1, 1] by its public range before the sums, and the driver maps back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedgpu.datasets import ArrayDataset, Schema, feature_moments
from fedgpu.errors import ConfigError, HeadroomExceeded

WEIGHT_PER_SAMPLE = 1e-3  # the weight a node claims per sample, as for its training updates


def public_scaling(schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """(center, half-width) per feature from the schema's declared ranges; (0, 1) without them."""
    f = schema.num_features
    if not schema.ranges:
        return np.zeros(f), np.ones(f)
    lo = np.array([r[0] for r in schema.ranges], dtype=np.float64)
    hi = np.array([r[1] for r in schema.ranges], dtype=np.float64)
    return (lo + hi) / 2, (hi - lo) / 2


def statistics_update(ds: ArrayDataset, schema: Schema, num_params: int, max_weight: float, headroom: float | None, summands: int) -> tuple[np.ndarray, float]:
    """A node's statistics upload: (vector of ``num_params`` values, weight).

    The vector holds the local moments of the publicly scaled features; the sum of ``summands`` such
    uploads must stay inside ``headroom`` (None: no limit), else HeadroomExceeded names the feature.
    """
    f = schema.num_features
    if num_params < 2 * f:
        raise ConfigError(f"the job's model has {num_params} values, fewer than the {2 * f} its statistics round needs: use model tab_mlp")
    center, half = public_scaling(schema)
    z = ArrayDataset(((np.asarray(ds.x, np.float64).reshape(len(ds), -1) - center) / half), ds.y)
    mean, sq = feature_moments(z)
    weight = min(len(ds) * WEIGHT_PER_SAMPLE, max_weight) if max_weight > 0 else len(ds) * WEIGHT_PER_SAMPLE
    if headroom is not None:
        peak = weight * sq * max(summands, 1)
        worst = int(np.argmax(peak))
        if peak[worst] > headroom:
            what = repr(schema.columns[worst]) if schema.columns else f"#{worst}"
            raise HeadroomExceeded(
                f"feature {what} reaches |x| ~ {math.sqrt(sq[worst]) * half[worst]:.3g}: its encrypted sum of squares would exceed the scheme's "
                f"headroom {headroom:.3g}. Declare ranges for it in the job's [schema] (nodes then scale it to [-1, 1] first)"
            )
    vec = np.zeros(num_params)
    vec[:f], vec[f : 2 * f] = mean, sq
    return vec, weight


@dataclass(frozen=True)
class FeatureStats:
    """The global per-feature mean and std (flattened order) and the features whose std is imprecise."""

    mean: np.ndarray
    std: np.ndarray
    samples: float           # the sample count the summed weights stand for (weights are capped: at most)
    imprecise: tuple[int, ...]  # features whose variance is within 10x the decryption error: std floored

    def to_dict(self) -> dict[str, object]:
        return {"samples": self.samples, "mean": self.mean.tolist(), "std": self.std.tolist(), "imprecise": list(self.imprecise)}


def stats_from_sums(weighted: np.ndarray, weight: float, schema: Schema, value_error: float) -> FeatureStats:
    """The global statistics from the round's summed uploads (``weighted``: sum of w_i v_i; ``weight``: sum of w_i)."""
    if not weight > 0:
        raise ConfigError(f"the statistics round's summed weight is {weight}: no samples were counted")
    f = schema.num_features
    mean_z = weighted[:f] / weight
    sq_z = weighted[f : 2 * f] / weight
    var_z = sq_z - mean_z**2
    err = value_error / weight * (1 + 2 * np.abs(mean_z))  # the error of E[z^2] - E[z]^2 from errors of both
    floor = 10 * err
    imprecise = tuple(int(j) for j in np.flatnonzero(var_z < floor))
    std_z = np.sqrt(np.maximum(var_z, floor))
    center, half = public_scaling(schema)
    std = std_z * half
    std = np.where(std > 0, std, 1.0)
    return FeatureStats(center + mean_z * half, std, weight / WEIGHT_PER_SAMPLE, imprecise)


__all__ = ["FeatureStats", "WEIGHT_PER_SAMPLE", "public_scaling", "statistics_update", "stats_from_sums"]
