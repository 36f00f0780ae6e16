"""Valuing each round's cohorts on the driver's held-out data, and turning values into rewards.

u(S) = L(w + b) - L(w + agg(S)) where b is the free baseline step (the last global change): a node
that replays it, sends zeros or sends noise is worth about 0 or less, not "a bit".

The aggregation rule is robust and the game uses the same rule: cohorts are left out of the round's
model by backward elimination while leaving one out helps by more than the evaluation noise (and
nothing is kept when what is left does worse than no update, L(w + agg(S)) > L(w)), and Shapley values
(exact up to 8 cohorts, sampled above) are computed over the kept cohorts only. Without this, a
zero-sending free rider would earn by *diluting* a poisoner inside coalitions. Values below the
evaluation's own noise count 0; they are spread over nodes by a ridge estimate across reshuffled
cohorts and paid pro rata if positive.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from torch import nn

from fedgpu.datasets import ArrayDataset
from fedgpu.rewards import (
    CohortGame,
    NodeValueEstimator,
    Reputation,
    encode_utilities,
    noise_floor,
    payout,
    shapley,
    split_cohort_value,
    zero_below_floor,
)


@dataclass(frozen=True)
class RoundValuation:
    cohort_values: list[float]
    kept: list[int]          # cohorts the round's model is built from
    step: float              # the server step along their average, chosen like every coalition's
    node_values: dict[str, float]
    rewards: dict[str, float]
    evaluations: int
    floor: float
    seconds: float
    evidence: bytes   # JSON: per-subset utilities etc., so anyone can recompute the values


class RoundValuer:
    def __init__(
        self, model_factory: Callable[[], nn.Module], validation: ArrayDataset, budget: int, pool: float, seed: int = 0, step_sizes: tuple[float, ...] = (1.0,)
    ) -> None:
        self.step_sizes = tuple(step_sizes)
        self.model_factory = model_factory
        self.validation = validation
        self.budget = budget
        self.pool = pool
        self.seed = seed
        self.estimator = NodeValueEstimator()
        self.confidence = 2.0  # z of the reported lower bounds of the per-node estimates
        self.reputation = Reputation()
        self.baseline: np.ndarray | None = None
        self.totals: dict[str, float] = {}

    def value(self, rnd: int, global_flat: np.ndarray, cohorts: list[list[str]], sums: list[np.ndarray], weights: list[float]) -> RoundValuation:
        t0 = time.perf_counter()
        game = CohortGame(self.model_factory, global_flat, self.baseline, sums, weights, self.validation.x, self.validation.y, step_sizes=self.step_sizes)
        # The reference is the best *free* option: the last global change b, or no update at all when b hurts.
        free_gain = float(game._losses_of(game.global_params).mean() - game.sample_losses(frozenset()).mean())
        passes = 0
        if self.baseline is not None and free_gain < 0:
            passes = game.forward_passes
            game = CohortGame(self.model_factory, global_flat, None, sums, weights, self.validation.x, self.validation.y, step_sizes=self.step_sizes)
            free_gain = 0.0
        rng = np.random.default_rng(self.seed * 7919 + rnd)
        singles = [game(frozenset([c])) for c in range(len(sums))]
        kept = self.keep(game, free_gain)
        res = shapley(len(kept), lambda S: game(frozenset(kept[i] for i in S)), budget=self.budget, rng=rng)
        floor = noise_floor(game, coalition=frozenset(kept), rng=np.random.default_rng(rnd))
        values = np.array([min(v, 0.0) for v in singles])  # left-out cohorts keep their (negative) solo value
        values[kept] = res.values
        values = zero_below_floor(values, floor)
        # Observations are bounded by the round's own scale: a poisoned cohort's huge loss must not drown
        # its honest members' estimates in the regression (it is already excluded and paid nothing).
        scale = max([abs(float(values[i])) for i in kept] + [floor, 1e-12])
        self.estimator.observe_round(rnd, cohorts, [float(v) for v in np.clip(values, -scale, scale)])
        est = self.estimator.estimates()
        node_values: dict[str, float] = {}
        for v, members in zip(values, cohorts):
            node_values.update(split_cohort_value(float(v), members, est))
        rewards = payout(node_values, self.pool)
        for node, v in node_values.items():
            self.reputation.update(node, v)
            self.totals[node] = self.totals.get(node, 0.0) + rewards.get(node, 0.0)
        evidence = {
            "round": rnd,
            "cohorts": cohorts,
            "utilities": encode_utilities(res.utilities),
            "shapley": [float(x) for x in res.values],
            "kept": kept,
            "step": game.step_size(frozenset(kept)) if kept else 0.0,
            "singles": singles,
            "noise_floor": floor,
            "exact": res.exact,
            "seed": self.seed * 7919 + rnd,
        }
        return RoundValuation(
            cohort_values=[float(v) for v in values],
            kept=kept,
            step=game.step_size(frozenset(kept)) if kept else 0.0,
            node_values=node_values,
            rewards=rewards,
            evaluations=passes + game.forward_passes,
            floor=floor,
            seconds=time.perf_counter() - t0,
            evidence=json.dumps(evidence, sort_keys=True, separators=(",", ":")).encode(),
        )

    @staticmethod
    def keep(game: CohortGame, free_gain: float) -> list[int]:
        """Cohorts the real update uses: backward elimination from all of them.

        While leaving one cohort out makes the update better by more than the evaluation's noise, the
        cohort doing most harm is left out (a sign-flipping poisoner goes first). A cohort is never
        dropped merely for being noisy alone: DP updates are, and only their average helps. When even
        the remaining set does worse than no update at all, nothing is kept and the model stays.
        """
        kept = set(range(game.num_cohorts))
        tol = noise_floor(game, rng=np.random.default_rng(0))
        current = game(frozenset(kept))
        while len(kept) > 1:
            drop = max(sorted(kept), key=lambda c: game(frozenset(kept - {c})))
            without = game(frozenset(kept - {drop}))
            if without <= current + tol:
                break
            kept.discard(drop)
            current = without
        # u(S) + free_gain = L(w) - L(w + agg(S)): the kept update must do no harm against no update.
        return sorted(kept) if current + free_gain >= -1e-9 else []

    def after_step(self, delta: np.ndarray) -> None:
        self.baseline = delta.copy()

    def summary(self) -> dict[str, Any]:
        return {
            "estimates": self.estimator.estimates(),
            "lower_bounds": {n: (b if math.isfinite(b) else None) for n, b in self.estimator.lower_bounds(self.confidence).items()},
            "reputation": self.reputation.as_dict(),
            "totals": dict(self.totals),
        }
