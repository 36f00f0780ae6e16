"""Spot checks on a public-data job: the driver compares replicated tasks and settles what they earn.

A public-data job runs at k = 1, so each cohort sum is one node's update. The round's record names the
tasks that ran twice (fedgpu.aggregator.replication). Before valuation the driver screens the sums:

- two replicas within the job's tolerance *match*: one of them enters the model (the other is left
  out as a duplicate) and both are verified; what the task earns is split between them;
- two that differ are *disputed*: neither enters the model nor earns, and the task goes to a third node
  in the next round; the majority of the three settles it: the agreeing nodes share the task's pay
  (held back from its round as if it were one more paid task) and the outvoted one is flagged; if no
  two agree, the driver re-executes the task itself (:func:`reexecute`, deterministic on the CPU):
  replicas that match its result are paid and verified, the others flagged; when its result matches
  none (the nodes trained on another device class) nobody is paid for the task (its pay returns to the
  pool) and all three lose reputation, none flagged. The third is a node whose own checks matched
  when the round has one, so an honest disputant is rarely left without an honest majority;
- a flagged node loses reputation (the valuer's), forfeits what it holds, earns nothing more in the
  job and its later updates are left out of the model.

With ``pay_after_check`` a node's rewards are held until one of its replicated tasks matches, then
paid with its next round: a cheat is flagged at its first check, before it was ever paid.
docs/verification.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedgpu.config import JobConfig
from fedgpu.driver.sums import CohortSum, DroppedCohort
from fedgpu.driver.valuation import RoundValuation, RoundValuer
from fedgpu.rewards.replicas import majority, relative_distance
from fedgpu.wire.records import JobEvent, ReplicaDispute

RULE = "replica"  # DroppedCohort.rule of a sum screened out here


@dataclass
class _Dispute:
    round: int
    shard: int
    seed: int
    updates: dict[str, np.ndarray]
    pay: float = 0.0  # its share of its round's pool, held back: paid to the majority once settled
    start: np.ndarray | None = None  # the model the task started from (for the driver's own re-execution)


# The driver's own run of a disputed task: (start model, shard, seed) -> the weighted update a node sends.
Referee = Callable[[np.ndarray, int, int], np.ndarray]


def reexecute(job: JobConfig, start: np.ndarray, shard: int, seed: int, weight_scale: float = 1e-3) -> np.ndarray:
    """The task (shard, seed, starting model) trained here as an honest node trains it, on the CPU with
    deterministic kernels: ``weight * delta``, what the node's decrypted sum holds (fedgpu.node.agent)."""
    import torch

    from fedgpu.claims import clamp_claim
    from fedgpu.datasets import get_schema, public_shard
    from fedgpu.models import ModelSpec, build_model
    from fedgpu.node.training import LocalTrainConfig, deterministic, train_local
    from fedgpu.wire import tensors

    pd, t = job.public_data, job.training
    schema = get_schema(job.dataset)
    data = public_shard(job.dataset, pd.samples, pd.data_seed, shard, pd.shards or job.nodes_per_round)
    model = build_model(job.model, ModelSpec(schema.input_shape, schema.num_classes))
    model.load_state_dict(tensors.unflatten(start, model.state_dict()))
    with deterministic():
        train_local(model, data, LocalTrainConfig(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum, seed=seed), torch.device("cpu"))
    delta, weight, _ = clamp_claim(tensors.flatten(model.state_dict()) - start, len(data) * weight_scale, job.claim_bounds)
    return np.asarray(delta * weight)


@dataclass
class Screen:
    """One round's screening: the sums valuation sees, those left out, and what payment must follow."""

    kept: list[CohortSum]
    dropped: list[DroppedCohort]
    twins: dict[str, list[str]] = field(default_factory=dict)  # kept node -> the replicas it matched
    disputes: list[ReplicaDispute] = field(default_factory=list)
    settled: list[tuple[list[str], float]] = field(default_factory=list)  # (majority, the task's pay)
    flagged_now: list[str] = field(default_factory=list)
    unsettled_now: list[str] = field(default_factory=list)  # three replicas of which no two agree: all lose reputation
    returned: float = 0.0  # pay held back for disputes that ended unsettled
    checks: list[dict[str, Any]] = field(default_factory=list)  # report.json: each comparison and its outcome


class ReplicaChecks:
    def __init__(self, tolerance: float, pay_after_check: bool = True, referee: Referee | None = None) -> None:
        self.tolerance = tolerance
        self.referee = referee
        self.pay_after_check = pay_after_check
        self.verified: set[str] = set()          # nodes whose replicated task matched at least once
        self.flagged: dict[str, str] = {}        # node -> why (it earns nothing more in the job)
        self.held: dict[str, float] = {}         # rewards waiting for the node's first matched check
        self.forfeited = 0.0
        self.open: dict[tuple[int, int], _Dispute] = {}  # (round, shard) -> the two disputed updates
        self.released: dict[str, float] = {}     # held rewards paid at the job's end without a matched check
        self.counts = {"checks": 0, "matched": 0, "disputed": 0, "settled": 0, "refereed": 0, "unsettled": 0}

    # ---- before valuation ----------------------------------------------------------------------
    def screen(self, ev: JobEvent, sums: list[CohortSum], start: np.ndarray | None = None) -> Screen:
        """Compare the round's replicas; the sums left for the model and valuation, and the rest as dropped.
        ``start``: the model the round's tasks started from (kept with a dispute for :func:`reexecute`)."""
        by_node = {s.members[0]: s for s in sums if len(s.members) == 1}
        out: dict[str, str] = {}  # node -> why its sum is left out
        sc = Screen([], [])
        for node in by_node:
            if node in self.flagged:
                out[node] = f"flagged earlier ({self.flagged[node]}): its updates are left out"
        for rs in ev.replicas:
            present = [m for m in rs.members if m in by_node and m not in self.flagged]
            if rs.settles:
                self._settle(ev, rs.settles, rs.shard, present, by_node, out, sc)
                continue
            if len(present) < 2:
                continue
            self.counts["checks"] += 1
            verdict = majority({m: by_node[m].weighted for m in present}, self.tolerance)
            check = {"round": ev.round, "shard": rs.shard, "members": present, "distance": max(verdict.distances.values())}
            if verdict.settled and not verdict.outvoted:
                self.counts["matched"] += 1
                first, *rest = verdict.agreed
                sc.twins[first] = rest
                self.verified.update(verdict.agreed)
                for m in rest:
                    out[m] = f"the same task as {first}'s and matched it: its update enters the model once"
                check["outcome"] = "match"
            else:  # two replicas that differ (three are only ever a dispute's re-run)
                self.counts["disputed"] += 1
                self.open[(ev.round, rs.shard)] = _Dispute(ev.round, rs.shard, rs.seed, {m: by_node[m].weighted for m in present[:2]}, start=start)
                trusted = tuple(sorted(self.verified - set(self.flagged) - set(present)))
                sc.disputes.append(ReplicaDispute(ev.round, rs.shard, rs.seed, ev.round - 1, tuple(present[:2]), trusted))
                for m in present:
                    out[m] = "differs from its replica: left out and unpaid until a third node re-runs the task"
                check["outcome"] = "disputed"
            sc.checks.append(check)
        for s in sums:
            if s.members[0] in out and len(s.members) == 1:
                sc.dropped.append(DroppedCohort(s.cohort, s.members, s.weight, RULE, out[s.members[0]]))
            else:
                sc.kept.append(s)
        return sc

    def _settle(self, ev: JobEvent, disputed: int, shard: int, present: list[str], by_node: dict[str, CohortSum], out: dict[str, str], sc: Screen) -> None:
        d = self.open.get((disputed, shard))
        if d is None or not present:
            return
        del self.open[(disputed, shard)]
        third = present[0]
        out[third] = f"re-ran the task disputed in round {disputed}: it settles that task, not this round's model"
        check: dict[str, Any] = {"round": ev.round, "settles": disputed, "shard": shard, "third": third}
        self._decide(d, {**d.updates, third: by_node[third].weighted}, check, sc)

    def _decide(self, d: _Dispute, replicas: dict[str, np.ndarray], check: dict[str, Any], sc: Screen) -> None:
        """Settle dispute ``d`` over its ``replicas`` (its two, and a third's when one re-ran it): by majority,
        else by the driver's own run when it matches one, else nobody is paid and all lose reputation."""
        verdict = majority(replicas, self.tolerance)
        check["members"] = sorted(replicas)
        check["distances"] = {f"{a}/{b}": v for (a, b), v in verdict.distances.items()}
        agreed, outvoted = list(verdict.agreed), list(verdict.outvoted)
        why = f"outvoted by two of three replicas of its task of round {d.round}"
        if not verdict.settled and self.referee is not None and d.start is not None:
            mine = self.referee(d.start, d.shard, d.seed)  # no two agree: the driver's own run decides, if it matches one
            near = {n: relative_distance(u, mine) for n, u in replicas.items()}
            check["referee_distances"] = near
            if any(v <= self.tolerance for v in near.values()):
                self.counts["refereed"] += 1
                agreed = sorted(n for n, v in near.items() if v <= self.tolerance)
                outvoted = sorted(n for n in replicas if n not in agreed)
                why = f"differs from the driver's own run of its task of round {d.round}"
        if agreed:
            self.counts["settled"] += 1
            self.verified.update(agreed)
            sc.settled.append((agreed, d.pay))
            for n in outvoted:
                self.flagged.setdefault(n, why)
                sc.flagged_now.append(n)
            check["outcome"], check["flagged"] = "settled", outvoted
        else:  # nobody is proven right: nobody is paid the task, all of its replicas lose reputation, none is flagged
            self.counts["unsettled"] += 1
            sc.unsettled_now.extend(sorted(replicas))
            sc.returned += d.pay
            check["outcome"], check["flagged"] = "unsettled", []
        sc.checks.append(check)

    def settle_leftovers(self, ev: JobEvent, sc: Screen, final: bool) -> None:
        """Disputes no third node will re-run, settled now by the driver's own run (:meth:`_decide` over their two
        replicas): those of earlier rounds whose re-run did not come in (the third failed, or none was free; the
        aggregator keeps a model only for the round after), and, in the job's last round (``final``), every one
        still open, this round's own included, so that no pay stays held when the job ends."""
        for key in sorted(self.open):
            d = self.open[key]
            if d.round < ev.round or final:
                del self.open[key]
                how = "the job's last round" if final and d.round == ev.round else "no third replica reported"
                self._decide(d, dict(d.updates), {"round": ev.round, "settles": d.round, "shard": d.shard, "third": None, "by": how}, sc)
        if final:
            sc.disputes = []  # settled here: nothing for a third node to re-run

    # ---- after valuation -----------------------------------------------------------------------
    def pay(self, ev: JobEvent, sc: Screen, valuation: RoundValuation, valuer: RoundValuer, final: bool = False) -> RoundValuation:
        """The round's rewards once the checks have spoken: twins share, the held wait, the flagged get nothing.
        ``final``: the job's last round: every dispute is settled here and every node never flagged is paid
        what it still holds (:attr:`released`), so nothing stays held when the job ends."""
        rewards = dict(valuation.rewards)
        values = dict(valuation.node_values)
        before = dict(rewards)
        # A disputed task's share of the round (as if it were one more paid task) is held back with the dispute
        # (not in the valuer's pool, which the next round pays out): the other tasks of its round get the rest.
        paid = [r for r in rewards.values() if r > 0]
        new = [key for key in ((d.round, d.shard) for d in sc.disputes) if key in self.open]
        total = math.fsum(paid)
        if new and total > 0:
            reserve = total * len(new) / (len(paid) + len(new))
            for key in new:
                self.open[key].pay = reserve / len(new)
            rewards = {n: r * (1 - reserve / total) for n, r in rewards.items()}
        self.settle_leftovers(ev, sc, final)
        for first, rest in sc.twins.items():
            share = rewards.get(first, 0.0) / (1 + len(rest))
            for n in (first, *rest):
                rewards[n] = share
                values[n] = values.get(first, 0.0)
        for agreed, pay in sc.settled:  # the disputed task's pay, held back since its round
            for n in agreed:
                self.held[n] = self.held.get(n, 0.0) + pay / len(agreed)
        valuer.carried += sc.returned  # the pay of tasks nobody was proven right on goes back to the pool
        scale = max([abs(v) for v in values.values()] + [1e-12])
        for n in sc.unsettled_now:
            valuer.reputation.update(n, -scale)
        for n in sc.flagged_now:
            valuer.reputation.update(n, -scale)
            self.forfeited += self.held.get(n, 0.0)
            valuer.carried += self.held.pop(n, 0.0)
        participants = set(ev.participants)
        for n in list(rewards):
            if n in self.flagged:
                valuer.carried += rewards[n]
                rewards[n] = 0.0
            elif self.pay_after_check and n not in self.verified:
                self.held[n] = self.held.get(n, 0.0) + rewards[n]
                rewards[n] = 0.0
        for n in sorted(self.verified & participants):
            if n in self.held and n not in self.flagged:
                rewards[n] = rewards.get(n, 0.0) + self.held.pop(n)
        if final:  # the end-of-job rule: what a node never flagged still holds is paid (docs/verification.md)
            for n in sorted(self.held):
                if n not in self.flagged:
                    amount = self.held.pop(n)
                    rewards[n] = rewards.get(n, 0.0) + amount
                    self.released[n] = self.released.get(n, 0.0) + amount
        for n, r in rewards.items():
            valuer.totals[n] = valuer.totals.get(n, 0.0) + r - before.get(n, 0.0)
        return dataclasses.replace(valuation, rewards=rewards, node_values=values)

    # ---- report and state ----------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {
            "tolerance": self.tolerance,
            "pay_after_check": self.pay_after_check,
            **self.counts,
            "flagged": dict(self.flagged),
            "verified": sorted(self.verified),
            "held": dict(self.held),
            "forfeited": self.forfeited,
            "released_at_end": dict(self.released),
            "open_disputes": [[r, s] for r, s in sorted(self.open)],
        }

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        # a copy each: a round's disputes share one starting model, and the state file stores no shared memory
        arrays = {f"dispute:{d.round}:{d.shard}:{n}": np.array(u) for d in self.open.values() for n, u in d.updates.items()}
        arrays.update({f"dispute:{d.round}:{d.shard}": np.array(d.start) for d in self.open.values() if d.start is not None})
        meta = {
            "verified": sorted(self.verified), "flagged": self.flagged, "held": self.held, "forfeited": self.forfeited, "counts": self.counts,
            "released": self.released,
            "open": [{"round": d.round, "shard": d.shard, "seed": d.seed, "pay": d.pay, "members": sorted(d.updates)} for d in self.open.values()],
        }
        return meta, arrays

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.verified = set(meta["verified"])
        self.flagged = dict(meta["flagged"])
        self.held = {k: float(v) for k, v in meta["held"].items()}
        self.forfeited = float(meta["forfeited"])
        self.counts = dict(meta["counts"])
        self.released = {k: float(v) for k, v in meta.get("released", {}).items()}
        self.open = {
            (int(d["round"]), int(d["shard"])): _Dispute(
                int(d["round"]), int(d["shard"]), int(d["seed"]), {n: arrays[f"dispute:{d['round']}:{d['shard']}:{n}"] for n in d["members"]}, float(d["pay"]),
                arrays.get(f"dispute:{d['round']}:{d['shard']}"),
            )
            for d in meta["open"]
        }


__all__ = ["RULE", "Referee", "ReplicaChecks", "Screen", "reexecute"]
