"""A round's cohort sums as the driver sees them: decrypted, checked against the job's bounded claims,
and the valuation of the survivors told over all the round's cohorts (docs/protocol.md, "Bounded claims").

A node's garbage (any well-formed ciphertext decrypts to something) or a claim beyond the job's cap
or norm bound spoils its cohort's sum; that cohort is dropped from the round and the job goes on.
What the aggregator itself got wrong (a sum of fewer than k, missing chunks) still fails the job.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedgpu import crypto
from fedgpu.claims import SumTolerance, check_cohort_sum
from fedgpu.config import JobConfig
from fedgpu.crypto.decrypt_pool import Chunk
from fedgpu.datasets import Schema
from fedgpu.datasets.statistics import FeatureStats, statistics_sensitivity, stats_from_noisy_sums, stats_from_sums
from fedgpu.driver.valuation import RoundValuation, RoundValuer
from fedgpu.errors import ProtocolError

log = logging.getLogger("fedgpu.driver")


@dataclass(frozen=True)
class CohortSum:
    members: list[str]
    weighted: np.ndarray   # per parameter: sum over members of w_i * delta_i
    weights: np.ndarray    # per parameter: sum over members of w_i (the weight slot of its chunk)
    cohort: int = 0        # its index among the round's cohorts (JobEvent.cohorts)

    @property
    def weight(self) -> float:
        """The cohort's weight as the aggregation rules and valuation take it: its chunks' weight slots
        averaged (fetch_sums checks they agree)."""
        return float(self.weights.mean())


@dataclass(frozen=True)
class DroppedCohort:
    """A cohort whose decrypted sum broke the job's bounded claims (fedgpu.claims): left out of the round."""

    cohort: int
    members: list[str]
    weight: float | None   # what its weight slots say (None: not a finite number)
    rule: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"cohort": self.cohort, "members": list(self.members), "rule": self.rule, "reason": self.reason}


def decrypt_sums(
    by_cohort: dict[int, tuple[list[str], list[bytes]]], decryptor: crypto.Decryptor, layout: crypto.ChunkLayout, keys: crypto.KeyPair, job: JobConfig, where: str,
    *, statistics: bool = False,
) -> tuple[list[CohortSum], list[DroppedCohort]]:
    """Each cohort's chunks (as fetched, in order) decrypted here, one after another: see :func:`check_sums`."""
    lazy: dict[int, tuple[list[str], list[Chunk]]] = {ci: (members, [functools.partial(decryptor.decrypt, p, layout.chunk_values(i)) for i, p in enumerate(parts)]) for ci, (members, parts) in by_cohort.items()}
    return check_sums(lazy, layout, keys, job, where, statistics=statistics)


def check_sums(
    by_cohort: dict[int, tuple[list[str], list[Chunk]]], layout: crypto.ChunkLayout, keys: crypto.KeyPair, job: JobConfig, where: str,
    *, statistics: bool = False,
) -> tuple[list[CohortSum], list[DroppedCohort]]:
    """Each cohort's decrypted chunks (in order; each asked for only once its cohort's counts check): the
    sums that keep the job's bounded claims, and those dropped.
    ``statistics``: a statistics round's feature moments, held to the weight cap only (no norm bound)."""
    bounds = job.claim_bounds
    if statistics:
        bounds = dataclasses.replace(bounds, update_norm_bound=math.inf)
    dp = job.privacy
    noise_std = dp.client_noise_multiplier * dp.client_clip / math.sqrt(job.cohort_size) if dp.enabled and dp.mode == "client" else 0.0
    out, dropped = [], []
    for ci in sorted(by_cohort):
        members, parts = by_cohort[ci]
        if len(members) < job.cohort_size:
            raise ProtocolError(f"aggregator sent a sum of {len(members)} nodes, fewer than k = {job.cohort_size}")
        if len(parts) != layout.num_chunks:
            raise ProtocolError(f"cohort {ci} sum has {len(parts)} chunks, expected {layout.num_chunks}")
        weighted, chunk_weights = layout.join([values() for values in parts])
        value_error, weight_error = crypto.sum_error(keys.scheme, keys.params, len(members))
        rejected = check_cohort_sum(weighted, chunk_weights, len(members), bounds, SumTolerance(value_error, weight_error, noise_std))
        if rejected is not None:
            weight = float(chunk_weights.mean())
            dropped.append(DroppedCohort(ci, members, weight if math.isfinite(weight) else None, rejected.rule.value, rejected.reason))
            log.warning("%s: cohort %d (%s) dropped: %s", where, ci, ", ".join(members), rejected.reason)
            continue
        weights = np.repeat(chunk_weights, [layout.chunk_values(i) - 1 for i in range(layout.num_chunks)])
        out.append(CohortSum(members, weighted, weights, ci))
    return out, dropped


def with_dropped(
    valuer: RoundValuer | None, rnd: int, valuation: RoundValuation | None, sums: list[CohortSum], dropped: list[DroppedCohort], start: np.ndarray
) -> RoundValuation:
    """The valuation of the surviving cohorts (None: none survived) told over all the round's cohorts.

    Indices are mapped back to the round's cohorts, a dropped cohort is worth 0 and its members are
    valued and paid 0 (so that the ledger still records them), and the evidence names the mapping and
    the dropped cohorts. A round nobody's cohort survived values nothing, and its pool carries over.
    """
    if valuation is None:
        if valuer is not None:
            valuer.carried += valuer.pool
        empty = {"round": rnd, "cohorts": [], "kept": [], "step": 0.0, "momentum": 0.0}
        valuation = RoundValuation([], [], 0.0, 0.0, np.zeros_like(start), {}, {}, 0.0, 0.0, 0.0, json.dumps(empty).encode())
    if not dropped:
        return valuation
    index = [s.cohort for s in sums]
    values = [0.0] * (len(sums) + len(dropped))
    for i, v in zip(index, valuation.cohort_values, strict=True):
        values[i] = v
    zeros = {m: 0.0 for d in dropped for m in d.members}
    evidence = {**json.loads(valuation.evidence), "cohort_index": index, "dropped": [d.to_dict() for d in dropped]}
    return dataclasses.replace(
        valuation,
        cohort_values=values,
        kept=[index[k] for k in valuation.kept],
        node_values={**zeros, **valuation.node_values},
        rewards={**zeros, **valuation.rewards},
        evidence=json.dumps(evidence, sort_keys=True, separators=(",", ":")).encode(),
    )


def feature_statistics(sums: list[CohortSum], job: JobConfig, keys: crypto.KeyPair, schema: Schema, where: str) -> FeatureStats:
    """The global feature mean and std from a statistics round's cohort sums of moments (Σx, Σx², n).
    On a DP job the sums are the nodes' noisy releases (docs/tabular.md): what noise made impossible is
    clamped, and said; features too flat for their encrypted (or noised) sums get a floored std, and said."""
    weighted = np.sum([s.weighted for s in sums], axis=0)
    value_error = sum(crypto.sum_error(keys.scheme, keys.params, len(s.members))[0] for s in sums)
    dp = job.statistics_epsilon > 0
    if dp:
        from fedgpu.privacy.planning import statistics_noise

        p = job.privacy
        noise = statistics_noise(job.statistics_epsilon, p.delta, p.accountant)
        members = sum(len(s.members) for s in sums)
        noise_std = noise * statistics_sensitivity(schema.num_features) * math.sqrt(members)
        stats = stats_from_noisy_sums(weighted, schema, noise_std, value_error)
        if stats.count_clamped:
            log.warning("%s: the noisy sample count of the DP statistics round came out below 1 and was clamped to 1", where)
    else:
        stats = stats_from_sums(weighted, float(sum(s.weight for s in sums)), schema, value_error)
    if stats.imprecise and dp:
        log.warning(
            "%s: %d features' noisy variance lies below the DP noise's error (first #%d); their std is floored there. "
            "More data per node or a larger privacy.statistics_epsilon makes them precise",
            where, len(stats.imprecise), stats.imprecise[0],
        )
    elif stats.imprecise:
        log.warning(
            "%s: %d features vary too little for their encrypted statistics (first #%d); their std is floored. Declare ranges in [schema]",
            where, len(stats.imprecise), stats.imprecise[0],
        )
    return stats


__all__ = ["CohortSum", "DroppedCohort", "check_sums", "decrypt_sums", "feature_statistics", "with_dropped"]
