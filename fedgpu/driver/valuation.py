"""Valuing each round's cohorts on the driver's held-out data, and turning values into rewards.

u(S) = L(w + beta * b) - L(w + g * P(agg(S)) + beta * b), where b is the last global change, beta the
round's momentum (the server's: the one it shipped last round), agg(S) the job's aggregation rule
(fedgpu.aggregation: FedAvg by default) over the round's cohorts with those outside S sending zeros,
P the projection that drops the part along b and g the server's learning rate (see
fedgpu.rewards.utility): a node that replays b or sends zeros is an exact null
player, one that sends noise worth 0 or less, not "a bit". g and beta are the server's trust region:
the learning rate and momentum that worked last round.

The game is the game of the rule in force, and the elimination below composes with it (docs/robust.md):
cohorts are left out of the round's model by backward elimination while leaving one out helps (at each set's best step) by more than the
paired evaluation noise, and nothing is kept when what is left does clearly worse than the free step (the model then
takes the best free step, which may be to stay). The round's model is the rule over the kept cohorts, and Shapley values (exact up to
8 cohorts, sampled above) are computed in the game over them. Without this, any cohort would earn by
*outweighing* a poisoner inside coalitions. Values below the evaluation's own noise count 0. A ridge
estimate across reshuffled cohorts says what each node is worth; each member of a kept cohort is
credited its proven worth (the lower bound, when it clears 0), and the round's pool is paid pro rata
to positive credit (a pool nobody has earned yet waits, at most one extra pool a round).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from fedgpu.aggregation import AggregationRule, FedAvg
from fedgpu.datasets import ArrayDataset
from fedgpu.errors import RewardsError
from fedgpu.rewards import (
    CohortGame,
    NodeValueEstimator,
    Reputation,
    ShapleyResult,
    encode_utilities,
    noise_floor,
    payout,
    proven_credit,
    round_observations,
    shapley,
    split_cohort_value,
    zero_below_floor,
)
from fedgpu.rewards.shapley import EXACT_HARD_MAX_PLAYERS

# Above SCREEN_ABOVE cohorts (FedAvg) the elimination tries only the SCREENED cohorts of lowest
# linearised value at each step, and a solo value is measured only for a cohort it leaves out.
SCREEN_ABOVE = 16
SCREENED = 3


@dataclass(frozen=True)
class RoundValuation:
    cohort_values: list[float]
    kept: list[int]          # cohorts the round's model is built from
    step: float              # the shipped model's multiple of the server's learning rate and
    momentum: float          # share of the last change added, tuned together on the validation quarter
    update: np.ndarray       # the change the round applies: step * g * P(rule(kept)) + momentum * last change
    node_values: dict[str, float]
    rewards: dict[str, float]
    evaluations: float        # passes over the validation set (a quarter of it counts 1/4)
    floor: float
    seconds: float
    evidence: bytes   # JSON: per-subset utilities etc., so anyone can recompute the values


# Global changes before the last one that a round is valued beside (fedgpu.rewards.utility.CohortGame,
# ``earlier_changes``): a node that sat out up to this many rounds and replays the change since its last
# task is a null player. With 6 of 10 nodes a round, a node sits out 4 rounds in a row 2.6 % of the time.
EARLIER_CHANGES = 3


class RoundValuer:
    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        validation: ArrayDataset,
        budget: int,
        pool: float,
        seed: int = 0,
        step_sizes: tuple[float, ...] = (1.0,),
        momenta: tuple[float, ...] = (0.0,),
        confidence: float = 1.0,
        rule: AggregationRule | None = None,
        samples: int | None = None,
    ) -> None:
        if samples is not None and samples < 2:
            raise RewardsError(f"valuation samples {samples}: a round needs at least 2 validation samples to value on (None: all of them)")
        self.samples = samples  # validation samples a round is valued on (round_validation); None: all
        self.rule: AggregationRule = rule if rule is not None else FedAvg()  # the job's: the update and the game
        self.step_sizes = tuple(step_sizes)
        self.momenta = tuple(momenta)
        self.model_factory = model_factory
        self.validation = validation
        self.budget = budget
        self.pool = pool
        self.seed = seed
        self.estimator = NodeValueEstimator()
        self.confidence = confidence  # z of the lower bounds that decide who is credited a gain
        self.reputation = Reputation()
        self.baseline: np.ndarray | None = None  # the last round's change (the valuer chose it)
        self.earlier: list[np.ndarray] = []  # the EARLIER_CHANGES changes before it, newest first
        self.server_lr = 1.0  # the server's multiple of the round's FedAvg step (1: plain FedAvg)
        self.momentum: float | None = None  # the share of the last change the server shipped last round
        self.totals: dict[str, float] = {}
        self.carried = 0.0  # pool of earlier rounds that no node has earned with evidence yet

    def value(self, rnd: int, global_flat: np.ndarray, cohorts: list[list[str]], sums: list[np.ndarray], weights: list[float]) -> RoundValuation:
        t0 = time.perf_counter()
        rng = np.random.default_rng(self.seed * 7919 + rnd)
        val_x, val_y = self.round_validation(rnd)
        full = CohortGame(
            self.model_factory, global_flat, self.baseline, sums, weights, val_x, val_y, self.rule,
            members=cohorts, step_sizes=self.step_sizes, momenta=self.momenta, server_lr=self.server_lr, momentum=self.momentum,
        )
        large = full.linear and len(sums) > SCREEN_ABOVE
        kept = self.keep(full, screen=full.linear_values() if large else None)
        # A solo value is measured only for a cohort left out: the kept ones' values come from the game
        # over the kept cohorts, so the round costs no pass per kept cohort.
        singles: list[float | None] = [None if c in kept else full(frozenset([c])) for c in range(len(sums))]
        # The round's model is the rule over the kept cohorts alone, at the server's learning rate: a cohort
        # left out is not a zero that shortens the step. The Shapley game is played over them.
        game = full if len(kept) in (0, len(sums)) else full.restrict(kept)
        grand = frozenset(range(len(kept)))
        step, momentum = game.tune(grand)  # the shipped model: the kept cohorts' best step and momentum
        # Values are played in the game that also knows the changes before the last: a replay of the change
        # since a task rounds ago adds nothing there (CohortGame.knowing); the shipped model is game's.
        worth = game.knowing(self.earlier)
        res = self.shapley(worth, len(kept), rng)
        floor = noise_floor(worth, coalition=grand)
        values = np.array([min(v or 0.0, 0.0) for v in singles])  # left-out cohorts keep their (negative) solo value
        values[kept] = res.values
        values = zero_below_floor(values, floor)
        scale = max([abs(float(values[i])) for i in kept] + [floor, 1e-12])
        self.estimator.observe_round(rnd, cohorts, round_observations(values, scale))
        credited, node_values = self.credit(cohorts, values, math.sqrt(scale))
        # An unearned pool waits, but a round releases at most one more: a node that is the first to be
        # proven must not collect every earlier round's pool on its first lower bound above 0.
        offered = self.pool + min(self.carried, self.pool)
        rewards = payout(credited, offered)
        self.carried += self.pool - math.fsum(rewards.values())
        for node, v in node_values.items():
            self.reputation.update(node, v)
            self.totals[node] = self.totals.get(node, 0.0) + rewards.get(node, 0.0)
        evidence = {
            "round": rnd,
            "cohorts": cohorts,
            "utilities": encode_utilities(res.utilities),
            "shapley": [float(x) for x in res.values],
            "kept": kept,
            "step": step,
            "momentum": momentum,
            "game_momentum": game.step(frozenset())[1],
            "server_lr": game.server_lr,
            "singles": singles,
            "noise_floor": floor,
            "exact": res.exact,
            "estimator": "exact" if res.exact else ("linear" if res.permutations == 0 and len(kept) > 0 else "sampled"),
            "seed": self.seed * 7919 + rnd,
            "rule": self.rule.name,  # the game's aggregation rule (the job spec carries its parameters)
            "validation_samples": [len(val_y), len(self.validation)],  # valued on (round_validation), of
        }
        if self.baseline is not None:
            self.earlier = [self.baseline, *self.earlier][:EARLIER_CHANGES]
        self.baseline = game.update(grand, (step, momentum))
        # A trust region the server keeps for itself: next round's learning rate is the one that worked
        # (eta times this one), halved when no cohort helped. What nodes send never sets it. Bounded, so
        # that a long run of rounds nobody helps cannot halve it to nothing.
        self.server_lr = min(max((step if kept else 0.5) * game.server_lr, 1e-6), 1e6)
        self.momentum = momentum
        return RoundValuation(
            cohort_values=[float(v) for v in values],
            kept=kept,
            step=step,
            momentum=momentum,
            update=self.baseline,
            node_values=node_values,
            rewards=rewards,
            evaluations=round(full.forward_passes + (game.forward_passes if game is not full else 0.0) + (worth.forward_passes if worth is not game else 0.0), 2),
            floor=floor,
            seconds=time.perf_counter() - t0,
            evidence=json.dumps(evidence, sort_keys=True, separators=(",", ":")).encode(),
        )

    def settle(self, valuation: RoundValuation) -> RoundValuation:
        """The job's last round, with the pool no node earned during the job (:attr:`carried`) paid too:
        in cohorts of k > 1 that is every pool, in cohorts of one the rounds nobody gained in.

        It goes by the whole job's evidence: each node that took part is credited its proven worth,
        ``max(estimate - confidence * se, 0)``, times the kept cohorts it was in (it is paid for the rounds
        it worked). The evidence names what was settled, so the ledger can be recomputed.
        """
        lower = self.estimator.lower_bounds(self.confidence)
        kept = Counter(m for o in self.estimator.observations if o.value >= 0 for m in o.members)
        credit = {n: b * kept[n] for n, b in proven_credit(list(lower), lower).items() if b > 0 and kept[n]}
        if self.carried <= 0 or not credit:
            return valuation
        settled = payout(credit, self.carried)
        self.carried = max(self.carried - math.fsum(settled.values()), 0.0)
        rewards = dict(valuation.rewards)
        for node, amount in settled.items():
            rewards[node] = rewards.get(node, 0.0) + amount
            self.totals[node] = self.totals.get(node, 0.0) + amount
        evidence = {
            **json.loads(valuation.evidence),
            "settled": {"confidence": self.confidence, "lower_bounds": {n: lower[n] for n in credit}, "kept_cohorts": {n: kept[n] for n in credit}, "rewards": settled},
        }
        return dataclasses.replace(valuation, rewards=rewards, evidence=json.dumps(evidence, sort_keys=True, separators=(",", ":")).encode())

    def round_validation(self, rnd: int) -> tuple[np.ndarray, np.ndarray]:
        """The validation samples round ``rnd`` is valued on: ``samples`` of them drawn afresh each round
        (``np.random.default_rng([seed, rnd]).choice(n, samples, replace=False)``, sorted), or all.

        A game costs forward passes over these, so the round's cost stops growing with the held-out set;
        the model's reported accuracy is still the whole set's. Fresh each round, so that no round's
        choice of cohorts and step is fitted to one subset. docs/protocol.md, "Valuation cost", measures
        what it does to the values."""
        n = len(self.validation)
        if self.samples is None or self.samples >= n:
            return self.validation.x, self.validation.y
        idx = np.sort(np.random.default_rng([self.seed, rnd]).choice(n, self.samples, replace=False))
        return self.validation.x[idx], self.validation.y[idx]

    def exact_fits(self, cohorts: int) -> bool:
        """Whether exact Shapley over this many cohorts fits the evaluation budget (2^n subsets)."""
        return cohorts <= EXACT_HARD_MAX_PLAYERS and (1 << cohorts) <= self.budget

    def shapley(self, game: CohortGame, n: int, rng: np.random.Generator) -> ShapleyResult:
        """The kept cohorts' Shapley values: exact while all 2^n subsets fit the budget; past that, under
        FedAvg, the game's second-order values from one gradient (:meth:`CohortGame.linear_values`,
        scaled to add up to u(all) when they agree with it in sign), whose cost does not grow with the
        cohorts; under other rules the sampled estimate within the budget. ``n``: the players, the
        game's cohorts or none (nothing kept: the game is then the full one, and nobody is valued in it)."""
        if self.exact_fits(n) or not game.linear:
            return shapley(n, lambda S: game(frozenset(S)), budget=self.budget, rng=rng)
        grand = frozenset(range(n))
        values = game.linear_values()
        total, u_all = float(values.sum()), game(grand)
        if total != 0.0 and u_all / total > 0.0:
            values = values * (u_all / total)
        return ShapleyResult(values=values, evaluations=2, utilities={frozenset(): 0.0, grand: u_all}, exact=False)

    def credit(self, cohorts: list[list[str]], values: np.ndarray, unit: float = 1.0) -> tuple[dict[str, float], dict[str, float]]:
        """(credit, value) of each node this round: what the pool is shared by, and what the ledger records.

        A cohort of one is its member's own measured value, both. A larger cohort that was kept (value >= 0)
        is credited nothing now: one cohort value is far noisier than a node's worth, and paying each round
        on the bounds of the rounds so far paid the first nodes proven nearly every pool (docs/selection.md).
        Its pool waits for the job's end (:meth:`settle`); its members' recorded value is their point
        estimate (``unit``: the round's scale back from the estimator's; selection reads it). A cohort left
        out (value < 0) is charged to the members with negative estimates, both.
        """
        est = self.estimator.estimates()
        credited: dict[str, float] = {}
        recorded: dict[str, float] = {}
        for v, members in zip(values, cohorts, strict=True):
            if len(members) == 1:
                credited[members[0]] = recorded[members[0]] = float(v)
            elif v >= 0:
                credited.update(dict.fromkeys(members, 0.0))
                recorded.update({m: est.get(m, 0.0) * unit for m in members})
            else:
                share = split_cohort_value(float(v), members, est)
                credited.update(share)
                recorded.update(share)
        return credited, recorded

    @staticmethod
    def keep(game: CohortGame, z_drop: float = 1.0, z: float = 2.0, screen: np.ndarray | None = None) -> list[int]:
        """Cohorts the real update uses: backward elimination from all of them.

        While leaving one cohort out makes the update better, sample by sample on the choice quarter,
        by more than ``z_drop`` standard errors of that paired difference, the cohort doing most harm is
        left out (a sign-flipping poisoner goes first). When even the remaining set does worse than the
        free step by ``z`` standard errors, nothing is kept and the model takes the best free step
        (momentum 0 included: it may stay where it is).

        Each comparison carries its own error, and the two bars differ because the two mistakes do:
        keeping a poisoner costs the round, dropping an honest cohort a share of it, and shipping
        nothing a whole round's progress. A tolerance taken from the all-cohorts model would grow with
        the poisoner's own harm and keep it in late rounds, where every step is small; and wanting
        proof of a gain before shipping anything would stall the model, since late in training an
        honest round gains less than the held-out set resolves (docs/protocol.md, "Measured").

        With ``screen`` (each cohort's linearised value, above SCREEN_ABOVE cohorts) only the
        SCREENED cohorts of lowest value are tried at each step, so a step costs a fixed number of
        evaluations however many cohorts there are; the test that decides a drop is the same.
        """

        def worse(a: frozenset[int], b: frozenset[int], z: float = z) -> bool:
            d = game.best_losses(a) - game.best_losses(b)
            return len(d) > 1 and float(d.mean()) > z * float(d.std(ddof=1)) / math.sqrt(len(d))

        kept = frozenset(range(game.num_cohorts))
        while len(kept) > 1:
            tried = sorted(kept) if screen is None else sorted(sorted(kept, key=lambda c: (screen[c], c))[:SCREENED])
            drop = max(tried, key=lambda c: game.best(kept - {c}))
            if not worse(kept, kept - {drop}, z_drop):
                break
            kept = kept - {drop}
        return [] if worse(kept, frozenset()) else sorted(kept)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Everything the valuer carries between rounds, as JSON-able data and arrays (for resuming)."""
        meta = {
            "observations": [[o.round, list(o.members), o.value] for o in self.estimator.observations],
            "reputation": self.reputation.as_dict(),
            "server_lr": self.server_lr,
            "momentum": self.momentum,
            "totals": dict(self.totals),
            "carried": self.carried,
        }
        arrays = {f"earlier{i}": c for i, c in enumerate(self.earlier)}
        return meta, (arrays if self.baseline is None else {"baseline": self.baseline, **arrays})

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned: the next round is valued as if nothing had stopped."""
        self.estimator = NodeValueEstimator()
        for rnd, members, value in meta["observations"]:
            self.estimator.observe(int(rnd), members, float(value))
        self.reputation = Reputation()
        self.reputation.load(meta["reputation"])
        self.server_lr = float(meta["server_lr"])
        self.momentum = None if meta["momentum"] is None else float(meta["momentum"])
        self.totals = {k: float(v) for k, v in meta["totals"].items()}
        self.carried = float(meta["carried"])
        self.baseline = arrays.get("baseline")
        self.earlier = [arrays[f"earlier{i}"] for i in range(EARLIER_CHANGES) if f"earlier{i}" in arrays]

    def summary(self) -> dict[str, Any]:
        return {
            "estimates": self.estimator.estimates(),
            "lower_bounds": {n: (b if math.isfinite(b) else None) for n, b in self.estimator.lower_bounds(self.confidence).items()},
            "reputation": self.reputation.as_dict(),
            "totals": dict(self.totals),
            "unspent": self.carried,
        }


__all__ = ["EARLIER_CHANGES", "RoundValuation", "RoundValuer", "SCREENED", "SCREEN_ABOVE"]
