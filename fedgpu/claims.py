"""Bounded claims: what a node may claim, clamped where it is made and checked where it can be.

A node's update reaches the driver only inside its cohort's sum, so nobody can check one node's claim:
neither the weight ``w_i`` it puts in the weight slot of every chunk nor the change ``Delta_i`` it
multiplies by it. A job therefore declares two bounds (``JobConfig.max_weight``,
``JobConfig.update_norm_bound``):

* the cap: the largest weight a node may claim, ``w_i <= cap``;
* ``B``: the largest L2 norm of a node's change, ``||Delta_i|| <= B``, i.e. ``||w_i Delta_i|| <= w_i B``
  (the same quantity as client-level DP's clip, which is its default in that mode).

Honest nodes clamp to both before encrypting (:func:`clamp_claim`). The driver checks each decrypted
cohort sum ``(S, W)`` of ``m`` members against what ``m`` honest members could have sent
(:func:`check_cohort_sum`): every value finite, every chunk's weight slot the same ``W``, ``W`` in
``(0, m * cap]`` and ``||S|| <= W * B`` (so ``<= m * cap * B``), each with the scheme's error on top, and
under client-level DP the noise shares' norm too. A cohort that fails is dropped from the round, not
the job: garbage spoils at most its own cohort.

What it buys: every cohort that survives has a mean change ``S / W`` of norm at most ``B`` whatever
its members claimed, and the round's FedAvg is a weighted mean of those, so it has norm at most ``B``
too (before the server's own step), and one cohort's pull on it is at most ``m * cap / sum(W)``. Within the
bounds a lie is undetectable here; valuation and the robust rule deal with it.

A leaf: numpy only, so that nodes, the driver and the aggregator (through the job spec) share it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from fedgpu.errors import ConfigError

# The default cap: 10,000 samples at an honest node's weight of 1e-3 per sample (fedgpu.node.agent).
DEFAULT_MAX_WEIGHT = 10.0
# The largest cap a job may declare: a sum of 370 such weights still fits ckks's headroom (3.7e5) and
# one fits bfv8-32's weight slot (8,192).
MAX_MAX_WEIGHT = 1000.0
# The default B outside client-level DP: about 10x the largest honest first-round change measured on
# the shipped models (||Delta|| 3.0-3.2 for cnn1d on MNIST-1D, 7.6-11.3 for mlp and digits_cnn on
# digits, docs/protocol.md "Measured"), so it never clamps an honest node, and finite, so that no
# cohort can move the model by more.
DEFAULT_NORM_BOUND = 100.0
# Relative slack of every bound: float32 rounding of a plain payload (2**-24 per value) and of the
# norms the driver computes.
RELATIVE_SLACK = 1e-6
# How many standard deviations past sqrt(d) the norm of d Gaussian noise values may reach
# (P[||g|| > sqrt(d) + t] <= exp(-t**2 / 2): 2e-11 at t = 7).
NOISE_TAIL = 7.0


@dataclass(frozen=True)
class ClaimBounds:
    """The cap on a node's weight and the bound ``B`` on the norm of its change (inf: no bound)."""

    max_weight: float
    update_norm_bound: float

    def __post_init__(self) -> None:
        if not (self.max_weight > 0):  # also refuses NaN
            raise ConfigError(f"max_weight: must be > 0, got {self.max_weight}")
        if not (self.update_norm_bound > 0):
            raise ConfigError(f"update_norm_bound: must be > 0, got {self.update_norm_bound}")

    @classmethod
    def declared(cls, max_weight: float, update_norm_bound: float, client_clip: float | None) -> ClaimBounds:
        """The bounds a job declares, with its defaults filled in (0 is "the default" for either).

        ``client_clip`` is the clip of client-level DP when the job uses it (None otherwise): then B
        defaults to it, since honest nodes already clip their changes to it.
        """
        default_norm = client_clip if client_clip is not None else DEFAULT_NORM_BOUND
        return cls(max_weight or DEFAULT_MAX_WEIGHT, update_norm_bound or default_norm)

    @classmethod
    def from_wire(cls, max_weight: float, update_norm_bound: float) -> ClaimBounds:
        """The bounds a task carries; 0 means the aggregator sent none (no bound)."""
        return cls(max_weight or math.inf, update_norm_bound or math.inf)


def clamp_claim(delta: np.ndarray, weight: float, bounds: ClaimBounds) -> tuple[np.ndarray, float, bool]:
    """What an honest node sends: ``(delta scaled to norm <= B, min(weight, cap), whether anything changed)``."""
    clamped = weight > bounds.max_weight
    weight = min(weight, bounds.max_weight)
    norm = float(np.linalg.norm(np.asarray(delta, dtype=np.float64).ravel()))
    if norm > bounds.update_norm_bound:
        delta = (delta * (bounds.update_norm_bound / norm)).astype(delta.dtype, copy=False)
        clamped = True
    return delta, weight, clamped


class Rule(enum.Enum):
    """The rule a cohort sum broke (the first one, in this order)."""

    NON_FINITE = "non_finite"
    WEIGHTS_DISAGREE = "weights_disagree"
    WEIGHT_OUT_OF_RANGE = "weight_out_of_range"
    NORM_TOO_LARGE = "norm_too_large"


@dataclass(frozen=True)
class Rejection:
    """Why a cohort sum is not one its members could have sent honestly."""

    rule: Rule
    reason: str


@dataclass(frozen=True)
class SumTolerance:
    """How far an honest sum may decrypt from the exact one, per value and in the weight slot (absolute),
    and the standard deviation of each member's noise share per value (client-level DP; 0 without)."""

    value: float = 0.0
    weight: float = 0.0
    noise_std: float = 0.0


def check_cohort_sum(
    weighted: np.ndarray, chunk_weights: np.ndarray, members: int, bounds: ClaimBounds, tolerance: SumTolerance = SumTolerance()
) -> Rejection | None:
    """None if ``members`` honest nodes clamped to ``bounds`` could have sent this sum, else why not.

    ``weighted`` is the decrypted sum of ``w_i Delta_i`` (one value per parameter), ``chunk_weights``
    the weight slot of each chunk (each the sum of ``w_i``).
    """
    if members < 1:
        raise ConfigError(f"a cohort has at least one member, got {members}")
    if not (np.isfinite(weighted).all() and np.isfinite(chunk_weights).all()):
        return Rejection(Rule.NON_FINITE, "decrypts to NaN or infinite values")
    cap = bounds.max_weight
    top = members * cap
    low, high = float(chunk_weights.min()), float(chunk_weights.max())
    if high - low > 2 * (tolerance.weight + RELATIVE_SLACK * max(abs(low), abs(high))):
        return Rejection(Rule.WEIGHTS_DISAGREE, f"its chunks' weight slots disagree ({low:.6g}..{high:.6g})")
    weight = float(np.mean(chunk_weights))
    if not tolerance.weight < weight <= top * (1 + RELATIVE_SLACK) + tolerance.weight:
        return Rejection(Rule.WEIGHT_OUT_OF_RANGE, f"weight {weight:.6g} is not in (0, {members} x {cap:g} = {top:.6g}]")
    norm = float(np.linalg.norm(weighted))
    limit = weight * bounds.update_norm_bound * (1 + RELATIVE_SLACK) + tolerance.value * math.sqrt(weighted.size)
    if tolerance.noise_std > 0:
        # sum_i w_i n_i is Gaussian with variance noise_std**2 * sum_i w_i**2 per value, and
        # sum_i w_i**2 <= W * min(W, cap) for weights in [0, cap].
        limit += tolerance.noise_std * math.sqrt(weight * min(weight, cap)) * (math.sqrt(weighted.size) + NOISE_TAIL)
    if norm > limit:
        return Rejection(Rule.NORM_TOO_LARGE, f"norm {norm:.6g} is above weight x update_norm_bound ({limit:.6g})")
    return None


__all__ = [
    "ClaimBounds",
    "DEFAULT_MAX_WEIGHT",
    "DEFAULT_NORM_BOUND",
    "MAX_MAX_WEIGHT",
    "NOISE_TAIL",
    "RELATIVE_SLACK",
    "Rejection",
    "Rule",
    "SumTolerance",
    "check_cohort_sum",
    "clamp_claim",
]
