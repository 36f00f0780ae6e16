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
from typing import Any

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

    Memory grows with the observations, not with the square of the nodes: the normal equations are
    sparse (two nodes meet only by sharing a cohort), and they split into independent blocks, one
    per connected set of nodes (linked by shared cohorts), each solved on its own. A block is solved
    densely up to ``dense_limit`` nodes (the same arithmetic as one dense system), above it by a
    sparse factorisation. A simulation of 10^5 nodes thus never holds an n x n matrix.
    """

    def __init__(self, ridge: float = 1e-6, dense_limit: int = 4096) -> None:
        if not ridge >= 0.0:
            raise RewardsError(f"ridge must be >= 0, got {ridge}")
        if dense_limit < 1:
            raise RewardsError(f"dense_limit must be >= 1, got {dense_limit}")
        self.ridge = ridge
        self.dense_limit = dense_limit
        self._index: dict[str, int] = {}
        self._target = np.zeros(16)  # X^T v, grown by doubling (the first len(self._index) entries are used)
        self._observations: list[Observation] = []
        self._rows: list[np.ndarray] = []  # per observation: its members' indices
        self._blocks: list[tuple[np.ndarray, list[np.ndarray]]] | None = None  # connected sets of nodes, cached until the next observation
        self._gram: Any = None  # X^T X as a scipy.sparse CSR matrix: how often each pair of nodes shared a cohort

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
        self._target[idx] += value
        self._rows.append(idx)
        self._observations.append(Observation(int(round), cohort, float(value)))
        self._blocks, self._gram = None, None

    def observe_round(self, round: int, cohorts: Sequence[Sequence[str]], values: Sequence[float]) -> None:
        if len(cohorts) != len(values):
            raise RewardsError(f"{len(cohorts)} cohorts but {len(values)} values")
        for members, value in zip(cohorts, values, strict=True):
            self.observe(round, members, float(value))

    def estimates(self) -> dict[str, float]:
        """Each node's estimated value per round it takes part in."""
        if not self._index:
            return {}
        x = np.zeros(len(self._index))
        target = self._target[: len(self._index)]
        for block, rows in self._connected():
            gram = self._block_gram(len(block), rows)
            if len(block) > self.dense_limit:
                x[block] = self._sparse_solve(gram, target[block])
            elif self.ridge > 0.0:
                x[block] = np.linalg.solve(gram + self.ridge * np.eye(len(block)), target[block])
            else:
                x[block] = np.linalg.lstsq(gram, target[block], rcond=None)[0]  # minimum-norm solution
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
        x, var = np.zeros(n), np.zeros(n)
        target = self._target[:n]
        for block, rows in self._connected():
            gram = self._block_gram(len(block), rows)
            if len(block) > self.dense_limit:
                x[block], var[block] = self._sparse_inverse_diag(gram, target[block])
            else:
                inv = np.linalg.pinv(gram + self.ridge * np.eye(len(block)))
                x[block], var[block] = inv @ target[block], np.diag(inv)
        resid = [o.value - sum(x[i] for i in idx) for o, idx in zip(self._observations, self._rows, strict=True)]
        sigma2 = math.fsum(r * r for r in resid) / (m - n)
        se = np.sqrt(np.maximum(var, 0.0) * sigma2)
        return {node: float(x[i] - z * se[i]) for node, i in self._index.items()}

    def _grow(self, node: str) -> None:
        n = len(self._index)
        if n == len(self._target):
            self._target = np.concatenate([self._target, np.zeros(n)])
        self._index[node] = n

    def _gram_matrix(self) -> Any:
        if self._gram is None:
            from scipy import sparse

            n = len(self._index)
            rows = np.concatenate([np.repeat(idx, len(idx)) for idx in self._rows])
            cols = np.concatenate([np.tile(idx, len(idx)) for idx in self._rows])
            self._gram = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()  # duplicates add up
        return self._gram

    def _connected(self) -> list[tuple[np.ndarray, list[np.ndarray]]]:
        """The sets of nodes linked through shared cohorts, each in index order (one set: the dense system),
        with its observations' members in the set's own numbering."""
        if self._blocks is None:
            from scipy.sparse.csgraph import connected_components

            count, labels = connected_components(self._gram_matrix(), directed=False)
            order = np.argsort(labels, kind="stable")
            cuts = np.flatnonzero(np.diff(labels[order])) + 1
            blocks = np.split(order, cuts) if count > 1 else [order]
            local = np.empty(len(labels), dtype=np.int64)
            for block in blocks:
                local[block] = np.arange(len(block))
            rows: list[list[np.ndarray]] = [[] for _ in blocks]
            for idx in self._rows:
                rows[labels[idx[0]]].append(local[idx])
            self._blocks = list(zip(blocks, rows, strict=True))  # blocks are in label order
        return self._blocks

    def _block_gram(self, size: int, rows: list[np.ndarray]) -> Any:
        """A block's X^T X: dense up to dense_limit nodes, else sparse (CSR)."""
        if size <= self.dense_limit:
            gram = np.zeros((size, size))
            for idx in rows:
                gram[np.ix_(idx, idx)] += 1.0
            return gram
        from scipy import sparse

        r = np.concatenate([np.repeat(idx, len(idx)) for idx in rows])
        c = np.concatenate([np.tile(idx, len(idx)) for idx in rows])
        return sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(size, size)).tocsr()

    def _factor(self, gram: Any) -> Any:
        from scipy import sparse
        from scipy.sparse.linalg import splu

        if self.ridge <= 0.0:
            raise RewardsError(f"a block of {gram.shape[0]} linked nodes (over dense_limit {self.dense_limit}) needs ridge > 0")
        return splu((gram + self.ridge * sparse.identity(gram.shape[0], format="csr")).tocsc())

    def _sparse_solve(self, gram: Any, target: np.ndarray) -> np.ndarray:
        return np.asarray(self._factor(gram).solve(target))

    def _sparse_inverse_diag(self, gram: Any, target: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """The solution and diag((G + lambda I)^-1) from one factorisation, a batch of unit columns at a time."""
        lu = self._factor(gram)
        n = gram.shape[0]
        diag = np.empty(n)
        for lo in range(0, n, batch):
            hi = min(lo + batch, n)
            unit = np.zeros((n, hi - lo))
            unit[np.arange(lo, hi), np.arange(hi - lo)] = 1.0
            diag[lo:hi] = lu.solve(unit)[np.arange(lo, hi), np.arange(hi - lo)]
        return np.asarray(lu.solve(target)), diag


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
    return {m: cohort_value * (float(w) / total) for m, w in zip(cohort, weights, strict=True)}  # the share first: subnormal weights must not underflow the product


def proven_credit(members: Sequence[str], lower_bounds: Mapping[str, float], unit: float = 1.0) -> dict[str, float]:
    """What each member of a kept cohort of two or more is credited this round: its proven worth.

    That is ``max(lower bound, 0) * unit`` (``unit`` turns the estimator's scale back into the round's
    value), not a share of the cohort's value: one cohort's value is far noisier than a node's worth
    (docs/selection.md), and a share of it pays whoever sat with a good
    cohort. A node seen in few cohorts has a wide error and a lower bound <= 0, so it is paid nothing
    on noise; a free rider's bound clears 0 only as often as the confidence allows. Members without
    a bound (never observed) are credited 0.
    """
    if not (math.isfinite(unit) and unit >= 0):
        raise RewardsError(f"unit must be a finite number >= 0, got {unit}")
    cohort = list(members)
    if len(set(cohort)) != len(cohort):
        raise RewardsError(f"cohort {cohort} names a node twice")
    out = {}
    for m in cohort:
        b = lower_bounds.get(m, -math.inf)
        out[m] = max(b, 0.0) * unit if math.isfinite(b) else 0.0
    return out


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


__all__ = ["NodeValueEstimator", "Observation", "Reputation", "proven_credit", "round_observations", "split_cohort_value"]
