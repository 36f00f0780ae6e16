"""Replication on public-data jobs: which task each chosen node runs, and which tasks run twice.

Once a round's members are chosen, each gets a task: a shard of the public dataset, a seed and the
model version to start from. A random share of the tasks (the job's ``public_data.replication``) is
given to a second member as well, with the same shard and seed, so the driver can compare the two
updates; a task disputed in the round before (its two updates differed) is given to a third node,
which is neither of the two (and, when one is in the round, a node whose own checks matched), from the
model version they started from. Every member runs exactly one
task and the tasks look alike: a node cannot tell a checked task from an unchecked one, nor does a
check cost a round more time. docs/verification.md.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fedgpu.wire.records import PublicDataPlan, PublicDataShard, ReplicaDispute, ReplicaSet


@dataclass(frozen=True)
class PlannedTask:
    """One task of a public-data round and the members that run it (two or more: a replicated task)."""

    members: tuple[str, ...]
    shard: int
    seed: int
    model_version: int
    settles: int = 0  # > 0: the re-run of the task disputed in that round


@dataclass
class ReplicaPlan:
    tasks: list[PlannedTask] = field(default_factory=list)

    def task_of(self, node_id: str) -> PlannedTask:
        return next(t for t in self.tasks if node_id in t.members)

    def replica_sets(self, complete: set[str]) -> tuple[ReplicaSet, ...]:
        """What the round's record tells the driver: replicated tasks with two or more members that reported,
        and the re-runs of disputed tasks that reported."""
        out = []
        for t in self.tasks:
            done = tuple(sorted(m for m in t.members if m in complete))
            if (t.settles and done) or len(done) >= 2:
                out.append(ReplicaSet(done, t.shard, t.seed, t.settles))
        return tuple(out)


def task_seed(job_seed: int, rnd: int, shard: int) -> int:
    """The training seed of a public-data task: from the job, round and shard alone, so replicas share it."""
    return (job_seed * 7919 + rnd * 104729 + shard * 15485863) % (2**63)


def plan_round(
    plan: PublicDataPlan, job_seed: int, rnd: int, version: int, chosen: list[str], rng: random.Random, disputes: Sequence[ReplicaDispute] = (),
    device: Mapping[str, str] | None = None,
) -> ReplicaPlan:
    """Tasks for the round's ``chosen`` members. ``rng`` must be one the nodes cannot predict (the
    aggregator's CSPRNG), or a cheat could learn when it is checked. ``device``: each node's device class
    (what it registered: "cpu", "cuda:NAME"); replicas of a task stay within one class, since training is
    deterministic only within one (a node that lies about its class only makes its own replicas differ)."""
    cls = {n: (device or {}).get(n, "") for n in chosen}
    order = list(chosen)
    rng.shuffle(order)
    out = ReplicaPlan()
    for d in disputes:  # a third node for each dispute, never one of its two; one the driver trusts when it can
        others = [n for n in order if n not in d.members]
        alike = [n for n in others if cls[n] in {cls.get(m, "") for m in d.members}]
        others = alike or others
        third = next((n for n in others if n in d.prefer), others[0] if others else None)
        if third is None:
            continue
        order.remove(third)
        out.tasks.append(PlannedTask((third,), d.shard, d.seed, d.model_version, settles=d.round))
    # R of the n members left join a task of another (each a different one), so that R / (n - R), the share
    # of the round's tasks that run twice, is the job's replication f on average: R = n f / (1 + f), its
    # fraction rounded up at random.
    n = len(order)
    want = n * plan.replication / (1.0 + plan.replication)
    replicas = min(int(want) + (rng.random() < want - int(want)), n // 2)
    fresh: list[list[str]] = [[node] for node in order[: n - replicas]]
    for node in order[n - replicas :]:
        singles = [t for t in fresh if len(t) == 1 and cls[t[0]] == cls[node]]
        if singles:
            rng.choice(singles).append(node)
        else:  # nobody of its device class to check it against this round
            fresh.append([node])
    shards = max(plan.shards, 1)
    for i, members in enumerate(fresh):
        shard = ((rnd - 1) * len(chosen) + i) % shards  # round-robin: every shard is used as rounds go by
        out.tasks.append(PlannedTask(tuple(members), shard, task_seed(job_seed, rnd, shard), version))
    return out


def shard_of(plan: PublicDataPlan, task: PlannedTask) -> PublicDataShard:
    return PublicDataShard(samples=plan.samples, data_seed=plan.data_seed, shard=task.shard, shards=max(plan.shards, 1))


__all__ = ["PlannedTask", "ReplicaPlan", "plan_round", "shard_of", "task_seed"]
