"""Per-node values from cohort values across rounds, the split of a cohort's value, and reputation.

The driver never sees a single update, only the value of each cohort. Cohorts are reshuffled every
round, so a node's own value is identifiable across rounds: cohort value ~ sum of its members'
values, solved by ridge regression over every (members, value) observation (the group-testing view of
Shapley). With cohorts of one node it reduces to each node's mean per-round value; for nodes that
were always together it gives the minimum-norm answer, i.e. an equal split, until reshuffling
separates them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedgpu.errors import RewardsError


@dataclass(frozen=True)
class Observation:
    round: int
    members: tuple[str, ...]
    value: float


class NodeValueEstimator:
    """Ridge regression of cohort values on cohort membership, accumulated round by round.

    ``ridge`` is the L2 penalty. The small default only makes the system solvable while nodes are
    still confounded; raise it (to about noise variance / prior variance of a node's value) to shrink
    the estimates of nodes seen only a few times towards 0.
    """

    def __init__(self, ridge: float = 1e-6) -> None:
        if not ridge >= 0.0:
            raise RewardsError(f"ridge must be >= 0, got {ridge}")
        self.ridge = ridge
        self._index: dict[str, int] = {}
        self._gram = np.zeros((0, 0))  # X^T X: how often each pair of nodes shared a cohort
        self._target = np.zeros(0)  # X^T v
        self._observations: list[Observation] = []

    @property
    def observations(self) -> tuple[Observation, ...]:
        return tuple(self._observations)

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self._index)

    def observe(self, round: int, members: Sequence[str], value: float) -> None:
        """Record that the cohort ``members`` was worth ``value`` in ``round``."""
        cohort = tuple(members)
        if not cohort:
            raise RewardsError("a cohort needs at least one member")
        if len(set(cohort)) != len(cohort):
            raise RewardsError(f"cohort {list(cohort)} names a node twice")
        if not math.isfinite(value):
            raise RewardsError(f"cohort value must be finite, got {value}")
        for node in cohort:
            if node not in self._index:
                self._grow(node)
        idx = np.array([self._index[node] for node in cohort])
        self._gram[np.ix_(idx, idx)] += 1.0
        self._target[idx] += value
        self._observations.append(Observation(int(round), cohort, float(value)))

    def observe_round(self, round: int, cohorts: Sequence[Sequence[str]], values: Sequence[float]) -> None:
        if len(cohorts) != len(values):
            raise RewardsError(f"{len(cohorts)} cohorts but {len(values)} values")
        for members, value in zip(cohorts, values, strict=True):
            self.observe(round, members, float(value))

    def estimates(self) -> dict[str, float]:
        """Each node's estimated value per round it takes part in."""
        if not self._index:
            return {}
        n = len(self._index)
        if self.ridge > 0.0:
            x = np.linalg.solve(self._gram + self.ridge * np.eye(n), self._target)
        else:
            x = np.linalg.lstsq(self._gram, self._target, rcond=None)[0]  # minimum-norm solution
        return {node: float(x[i]) for node, i in self._index.items()}

    def lower_bounds(self, z: float = 2.0) -> dict[str, float]:
        """``estimate - z * standard error`` per node: > 0 when the evidence says the node is worth something.

        The error is the ridge solution's, sigma^2 * diag((G + lambda I)^-1), with sigma^2 the residual
        variance. It is -inf for every node until there are twice as many observations as nodes (a
        residual variance from a handful of degrees of freedom is often far too small), and stays large
        for nodes that were always in the same cohorts (reshuffling has not separated them yet).
        """
        n, m = len(self._index), len(self._observations)
        if n == 0:
            return {}
        if m < 2 * n:
            return {node: -math.inf for node in self._index}
        inv = np.linalg.pinv(self._gram + self.ridge * np.eye(n))
        x = inv @ self._target
        resid = [o.value - sum(x[self._index[node]] for node in o.members) for o in self._observations]
        sigma2 = math.fsum(r * r for r in resid) / (m - n)
        se = np.sqrt(np.maximum(np.diag(inv), 0.0) * sigma2)
        return {node: float(x[i] - z * se[i]) for node, i in self._index.items()}

    def _grow(self, node: str) -> None:
        n = len(self._index)
        gram = np.zeros((n + 1, n + 1))
        gram[:n, :n] = self._gram
        self._gram = gram
        self._target = np.append(self._target, 0.0)
        self._index[node] = n


def split_cohort_value(cohort_value: float, members: Sequence[str], estimates: Mapping[str, float]) -> dict[str, float]:
    """Share a cohort's value among its members in proportion to their evidence.

    A positive value goes to members with positive estimates, pro rata; a negative one is charged to
    members with negative estimates. Members without an estimate weigh as the mean of those with one
    (a newcomer is neither favoured nor punished), and with no evidence at all the split is equal.
    Observe the round in the estimator first, so that every member has an estimate.
    """
    if not math.isfinite(cohort_value):
        raise RewardsError(f"cohort value must be finite, got {cohort_value}")
    cohort = list(members)
    if not cohort:
        return {}
    if len(set(cohort)) != len(cohort):
        raise RewardsError(f"cohort {cohort} names a node twice")
    sign = 1.0 if cohort_value >= 0 else -1.0
    known = {m: max(sign * estimates[m], 0.0) for m in cohort if m in estimates}
    fill = float(np.mean(list(known.values()))) if known else 0.0
    weights = np.array([known.get(m, fill) for m in cohort])
    total = float(weights.sum())
    if total <= 0.0:
        return {m: cohort_value / len(cohort) for m in cohort}
    return {m: cohort_value * float(w) / total for m, w in zip(cohort, weights, strict=True)}


class Reputation:
    """Exponential moving average of each node's per-round value: r <- (1 - alpha) r + alpha v.

    Starts at ``initial`` (0: reputation is earned, as Yuma's bonds are); selection can drop nodes
    whose reputation stays <= 0. A node that skips a round is not updated.
    """

    def __init__(self, alpha: float = 0.2, initial: float = 0.0) -> None:
        if not 0.0 < alpha <= 1.0:
            raise RewardsError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.initial = initial
        self._scores: dict[str, float] = {}

    def update(self, node: str, value: float) -> float:
        if not math.isfinite(value):
            raise RewardsError(f"value of node {node!r} must be finite, got {value}")
        score = (1.0 - self.alpha) * self._scores.get(node, self.initial) + self.alpha * value
        self._scores[node] = score
        return score

    def get(self, node: str) -> float:
        return self._scores.get(node, self.initial)

    def as_dict(self) -> dict[str, float]:
        return dict(self._scores)

    def load(self, scores: Mapping[str, float]) -> None:
        """Restore scores saved with :meth:`as_dict`."""
        self._scores = {str(k): float(v) for k, v in scores.items()}


def round_observations(values: Sequence[float] | np.ndarray, scale: float) -> list[float]:
    """A round's cohort values as the estimator should observe them, given the round's scale (its largest
    kept value, or the noise floor when that is larger).

    Bounded by the scale: a poisoned cohort's huge loss must not drown its honest members' estimates in
    the regression (it is already excluded and paid nothing). Divided by the scale's square root: what a
    node adds shrinks with what the round had to gain (early rounds are worth 100x late ones), so raw
    values let the first rounds decide every estimate, while shares of the round (dividing by the scale)
    let late rounds' noise do it (docs/protocol.md, "Measured").
    """
    if not (math.isfinite(scale) and scale > 0):
        raise RewardsError(f"scale must be a finite number > 0, got {scale}")
    root = math.sqrt(scale)
    return [max(min(float(v), scale), -scale) / root for v in values]


__all__ = ["NodeValueEstimator", "Observation", "Reputation", "round_observations", "split_cohort_value"]
