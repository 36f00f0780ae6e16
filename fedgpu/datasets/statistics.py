"""Federated standardisation: per-feature statistics summed under encryption, never pooled.

In round 1 of a job with ``[data] standardize = true`` each node uploads, in place of a model change,
its per-feature mean and mean of squares (positions ``0..F-1`` and ``F..2F-1`` of the update vector),
with its sample count as the weight. The aggregator adds them into cohort sums like any update, so
the driver sees only sums over at least k nodes; dividing by the summed weight gives the global
moments, from which it derives each feature's mean and std (docs/tabular.md).

CKKS decrypts with an absolute error (~1e-5 per value), so a feature whose spread is tiny next to
its magnitude loses its variance to cancellation. A schema's declared ``ranges`` fix that: nodes
map each feature to [-1, 1] by its public range before the sums, and the driver maps back.

On a DP job (record-level, ``[privacy]`` in sample mode) the round is a Gaussian mechanism on each node,
so the driver's cohort sums and any cohort-mate see only noised figures (local DP). The node clips each
publicly scaled feature to [-1, 1] (so ``ranges`` are required) and releases the sums (sum z, sum z^2, n)
plus N(0, (z_noise * sqrt(2F + 1))^2) per value: adding or removing one record moves that vector by
(z, z^2, 1), whose L2 norm is at most sqrt(F + F + 1). Sums, not means: a mean's sensitivity depends on
n, which is private. The upload's weight is a constant, so it reveals nothing; the driver divides the
noisy sums by the noisy count and clamps what noise made impossible (docs/tabular.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedgpu.datasets import ArrayDataset, Schema, feature_moments
from fedgpu.errors import ConfigError, HeadroomExceeded

WEIGHT_PER_SAMPLE = 1e-3  # the weight a node claims per sample, as for its training updates
DP_WEIGHT = WEIGHT_PER_SAMPLE  # a DP statistics upload's weight, the same on every node: the noisy count travels as a value


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


def statistics_sensitivity(num_features: int) -> float:
    """L2 sensitivity of (sum z, sum z^2, n) over records with z in [-1, 1]^F to adding or removing one record."""
    return math.sqrt(2 * num_features + 1)


def dp_statistics_update(
    ds: ArrayDataset, schema: Schema, num_params: int, noise_multiplier: float, headroom: float | None, summands: int, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """A node's DP statistics upload: (vector, weight) with the vector ``[sum z, sum z^2, n]`` (positions
    0..2F) plus Gaussian noise of std ``noise_multiplier * statistics_sensitivity(F)`` on each value.

    ``rng`` must be seeded from the OS (the job's seed is known to the aggregator); the weight is
    ``DP_WEIGHT`` whatever the node's size. The caller charges the owner's ledger first.
    """
    f = schema.num_features
    if not schema.ranges:
        raise ConfigError("a DP statistics round needs the schema's ranges (they bound one record's share of the sums): declare them in [schema]")
    if num_params < 2 * f + 1:
        raise ConfigError(f"the job's model has {num_params} values, fewer than the {2 * f + 1} its DP statistics round needs: use model tab_mlp")
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"noise_multiplier must be a positive number, got {noise_multiplier}")
    center, half = public_scaling(schema)
    z = np.clip((np.asarray(ds.x, np.float64).reshape(len(ds), -1) - center) / half, -1.0, 1.0)
    sums = np.concatenate([z.sum(0), (z * z).sum(0), [float(len(ds))]])
    noisy = sums + rng.normal(0.0, noise_multiplier * statistics_sensitivity(f), size=sums.size)
    if headroom is not None:
        peak = DP_WEIGHT * float(np.max(np.abs(noisy))) * max(summands, 1)
        if peak > headroom:
            raise HeadroomExceeded(
                f"the DP statistics sums of {len(ds)} samples reach {peak:.3g} in the encrypted sum, beyond the scheme's headroom {headroom:.3g}: "
                "split the data over more nodes or lower nodes_per_round"
            )
    vec = np.zeros(num_params)
    vec[: 2 * f + 1] = noisy
    return vec, DP_WEIGHT


@dataclass(frozen=True)
class FeatureStats:
    """The global per-feature mean and std (flattened order) and the features whose std is imprecise."""

    mean: np.ndarray
    std: np.ndarray
    samples: float           # the sample count the summed weights stand for (weights are capped: at most)
    imprecise: tuple[int, ...]  # features whose variance is within 10x the decryption error (DP: the noise's): std floored
    noise_std: float = 0.0      # DP: the std of the Gaussian noise on each summed value (0: no DP)
    count_clamped: bool = False  # DP: the noisy count came out below 1 and was clamped to 1

    def to_dict(self) -> dict[str, object]:
        return {
            "samples": self.samples, "mean": self.mean.tolist(), "std": self.std.tolist(), "imprecise": list(self.imprecise),
            "noise_std": self.noise_std, "count_clamped": self.count_clamped,
        }


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


def stats_from_noisy_sums(weighted: np.ndarray, schema: Schema, noise_std: float, value_error: float) -> FeatureStats:
    """The global statistics from a DP statistics round's summed uploads (``weighted``: sum of ``DP_WEIGHT`` x the
    nodes' noisy ``[sum z, sum z^2, n]``), with ``noise_std`` the std of the noise on each summed value.

    Noise can make the count < 1, a mean leave [-1, 1] or a variance <= 0: the count is clamped to 1,
    the moments to what z in [-1, 1] allows, and a variance below the noise's 1-sigma error is floored
    there (those features are listed as imprecise), so no feature is blown up by a too-small std.
    """
    f = schema.num_features
    total = np.asarray(weighted[: 2 * f + 1], np.float64) / DP_WEIGHT
    err_value = value_error / DP_WEIGHT + noise_std  # per summed value: decryption error and the noise
    count = float(total[2 * f])
    clamped = not count >= 1.0
    n = max(count, 1.0) if math.isfinite(count) else 1.0
    mean_z = np.clip(total[:f] / n, -1.0, 1.0)
    sq_z = np.clip(total[f : 2 * f] / n, 0.0, 1.0)
    var_z = sq_z - mean_z**2
    floor = np.maximum(err_value / n * (1 + 2 * np.abs(mean_z)), 1e-12)
    imprecise = tuple(int(j) for j in np.flatnonzero(var_z < floor))
    std_z = np.sqrt(np.clip(var_z, floor, 1.0))
    center, half = public_scaling(schema)
    return FeatureStats(center + mean_z * half, std_z * half, n, imprecise, noise_std, clamped)


__all__ = [
    "DP_WEIGHT",
    "FeatureStats",
    "WEIGHT_PER_SAMPLE",
    "dp_statistics_update",
    "public_scaling",
    "statistics_sensitivity",
    "statistics_update",
    "stats_from_noisy_sums",
    "stats_from_sums",
]
