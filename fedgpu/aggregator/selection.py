"""Which eligible nodes a round offers tasks to: uniformly at random, or by measured value per second.

``utility`` (opt-in; ``uniform`` is the default, docs/selection.md says why) is in the spirit of Oort, on what the aggregator and the
driver measured, never on what a node claims: a node's score is its recent value estimate (the
driver's ``node_values``) divided by its measured offer-to-upload time in this job. Each round
  * an exploration share of the slots goes to nodes not tried yet, then to tried ones at random;
  * the other slots go to the highest scores;
  * a few extra tasks are offered (over-selection) and the round closes once ``enough`` updates are
    in, so one straggler does not hold it to its deadline; never on a DP job unless the job allows it;
  * a node whose measured time for this job's tasks exceeds the deadline is skipped (on top of the
    registry's liveness rules), unless too few nodes would be left;
  * a node whose latest value estimates were all non-positive has its score and its chance in
    exploration scaled by 2^-(streak - usual), so it gets less and less work (usual: GRACE, or the
    median node's streak when that is longer: late in a job most gains are valued 0).
At k > 1 (cohorts of several nodes) a node's value is a running estimate from cohort values, too noisy
to act on: the slots are drawn uniformly among the nodes in time for the deadline, without over-selection.
Claimed hardware is not an input: nothing here can read it.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedgpu.config import SelectionConfig
from fedgpu.wire.records import SelectionPlan

RULES = ("uniform", "utility")
RECENT = 5  # value estimates a score averages: the node's latest, so a node that changes is seen soon
# Non-positive estimates in a row that cost nothing: an honest node's gain is often below the driver's
# noise floor (valued 0) for a round or two; after that each one halves its chances.
GRACE = 2


@dataclass(frozen=True)
class NodeHistory:
    """What selection knows of one node in one job, all measured by the aggregator or the driver."""

    tasks: int = 0                    # tasks it completed in this job
    cut: int = 0                      # tasks still open when an over-selected round had enough (it was too slow that time)
    seconds: float = 0.0              # its offer-to-upload time on this job's tasks (moving average); 0: none yet
    misses: int = 0                   # deadlines it missed in this job
    values: tuple[float, ...] = ()    # its value estimates in this job, oldest first

    @property
    def tried(self) -> bool:
        return self.tasks > 0 or self.cut > 0 or self.misses > 0 or bool(self.values)

    @property
    def nonpositive_streak(self) -> int:
        """How many of its latest value estimates in a row were <= 0."""
        n = 0
        for v in reversed(self.values):
            if v > 0:
                break
            n += 1
        return n


def plan_of(plan: SelectionPlan) -> SelectionPlan:
    """The plan a job's spec stands for: a spec without one (an older driver) gets the job file's defaults (uniform)."""
    if plan.rule:
        return plan
    d = SelectionConfig()
    return SelectionPlan(rule=d.rule, exploration=d.exploration, over_select=d.over_select, dp_over_selection=d.dp_over_selection)


@dataclass(frozen=True)
class Selection:
    chosen: list[str]
    enough: int  # the round closes once this many updates are in (or at its deadline)


def _weighted_pick(pool: list[str], weight: Mapping[str, float], count: int, rng: random.Random) -> list[str]:
    """``count`` distinct nodes of ``pool`` drawn with probability proportional to ``weight``."""
    pool, out = list(pool), list[str]()
    while pool and len(out) < count:
        total = math.fsum(weight[n] for n in pool)
        x, acc = rng.random() * total, 0.0
        pick = pool[-1]
        for n in pool:
            acc += weight[n]
            if acc >= x:
                pick = n
                break
        pool.remove(pick)
        out.append(pick)
    return out


def _in_time(nodes: Sequence[str], h: Mapping[str, NodeHistory], deadline_seconds: float, minimum: int) -> list[str]:
    """Too slow for this job's deadline, on its own measured record: skipped while enough others remain."""
    in_time = [n for n in nodes if not (h[n].tried and h[n].seconds > deadline_seconds)]
    if len(in_time) < minimum:
        late = sorted((n for n in nodes if n not in in_time), key=lambda n: h[n].seconds)
        in_time += late[: minimum - len(in_time)]
    return in_time


def _weights(nodes: Sequence[str], h: Mapping[str, NodeHistory]) -> dict[str, float]:
    """2^-(streak - usual) per node. Against the typical node: once the model has converged most gains
    are valued 0, and a long streak that everyone shares says nothing about the node."""
    usual = max(GRACE, int(statistics.median(h[n].nonpositive_streak for n in nodes)) if nodes else 0)
    return {n: 0.5 ** max(0, h[n].nonpositive_streak - usual) for n in nodes}


def _draw_at_k(nodes: Sequence[str], want: int, history: Mapping[str, NodeHistory], rng: random.Random, deadline_seconds: float, minimum: int) -> Selection:
    """Selection at k > 1: a uniform draw among the nodes in time for the deadline, no over-selection.

    A node's values are then the driver's running estimates from cohort values, and within a job of
    tens of rounds they are too noisy to act on: ranking by them handed the job to a few nodes, whose
    cohort-mates, free riders included, shared their credit, and the 2^-streak weight starved honest
    nodes whose estimate dipped below 0, so they were never observed enough to be paid (both measured,
    docs/selection.md). A uniform draw keeps every node seen in reshuffled cohorts, which is what the
    estimates need; the payout's lower bound is what keeps free riders' pay down. Over-selection would
    cut the slowest, and on private data the slowest are mostly the nodes with the most data.
    """
    h = {n: history.get(n, NodeHistory()) for n in nodes}
    in_time = _in_time(nodes, h, deadline_seconds, minimum)
    chosen = rng.sample(sorted(in_time), min(len(in_time), want))
    return Selection(chosen, len(chosen))


def offered(policy: SelectionPlan, want: int, dp: bool = False, cohort_size: int = 1) -> int:
    """How many tasks a round of ``want`` updates hands out: over-selection only under the utility rule
    at k = 1, and on a DP job only where the job allows it (an extra task spends an owner's ε)."""
    if policy.rule == "uniform" or cohort_size > 1 or (dp and not policy.dp_over_selection):
        return want
    return want + math.ceil(policy.over_select * want)


def select(
    nodes: Sequence[str],
    want: int,
    history: Mapping[str, NodeHistory],
    policy: SelectionPlan,
    rng: random.Random,
    deadline_seconds: float,
    minimum: int = 1,
    dp: bool = False,
    cohort_size: int = 1,
) -> Selection:
    """Pick the round's nodes among ``nodes`` (eligible, sorted); deterministic for a given ``rng``.
    ``minimum``: fewer cannot close the round (the deadline rule gives way to it); ``dp``: a DP job;
    ``cohort_size``: the job's k (above 1, see :func:`_draw_at_k`)."""
    if policy.rule == "uniform":
        chosen = rng.sample(list(nodes), min(len(nodes), want))
        return Selection(chosen, len(chosen))
    if cohort_size > 1:
        return _draw_at_k(nodes, want, history, rng, deadline_seconds, minimum)
    h = {n: history.get(n, NodeHistory()) for n in nodes}
    in_time = _in_time(nodes, h, deadline_seconds, minimum)
    total = min(len(in_time), offered(policy, want, dp, cohort_size))
    fresh = [n for n in in_time if not h[n].tried]
    tried = [n for n in in_time if h[n].tried]
    weight = _weights(in_time, h)
    # Nodes with no value estimate yet (rewards off, or not valued yet) are scored at the median of the
    # others'. A floor of a tenth of the typical positive value keeps speed deciding once gains fall below
    # the driver's noise floor (late rounds value most nodes at 0), and the 2^-streak weight still applies.
    recent = {n: statistics.fmean(h[n].values[-RECENT:]) for n in tried if h[n].values}
    positive = [v for v in recent.values() if v > 0]
    typical = statistics.median(recent.values()) if recent else 1.0
    floor = 0.1 * statistics.median(positive) if positive else 1.0
    fastest = min((h[n].seconds for n in tried if h[n].seconds > 0), default=1.0)
    score = {n: weight[n] * (max(recent.get(n, typical), 0.0) + floor) / max(h[n].seconds or fastest, 1e-3) for n in tried}

    explore = min(total, round(policy.exploration * total)) if len(in_time) > total else 0
    chosen = rng.sample(fresh, min(len(fresh), explore))
    rng.shuffle(tried)  # ties are broken at random, not by node id
    ranked = sorted(tried, key=lambda n: -score[n])
    chosen += ranked[: max(0, total - explore)]
    if len(chosen) < total:  # the exploration slots left, then whatever is still short
        rest = [n for n in fresh + tried if n not in chosen]
        chosen += _weighted_pick(rest, weight, total - len(chosen), rng)
    return Selection(chosen, min(len(chosen), want))


__all__ = [
    "GRACE",
    "NodeHistory",
    "RECENT",
    "RULES",
    "Selection",
    "offered",
    "plan_of",
    "select",
]
