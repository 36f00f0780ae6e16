"""Replicated spot checks: the comparison and majority, the aggregator's plan, the driver's screening and pay."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fedgpu.aggregator.replication import plan_round
from fedgpu.driver.sums import CohortSum
from fedgpu.driver.valuation import RoundValuation
from fedgpu.driver.verification import RULE, ReplicaChecks
from fedgpu.rewards import Reputation
from fedgpu.rewards.replicas import majority, relative_distance
from fedgpu.wire.records import JobEvent, JobEventKind, PublicDataPlan, ReplicaDispute, ReplicaSet

TOL = 1e-3
rng = np.random.default_rng(0)
HONEST = rng.normal(size=500)
NOISE = HONEST * 1e-6 * rng.normal(size=500)  # what the encryption adds


def test_relative_distance_is_scale_free() -> None:
    assert relative_distance(HONEST, HONEST) == 0.0
    assert relative_distance(3 * HONEST, 3 * HONEST + 3 * NOISE) == pytest.approx(relative_distance(HONEST, HONEST + NOISE))
    assert relative_distance(HONEST, np.zeros_like(HONEST)) == 1.0
    assert relative_distance(HONEST, HONEST[:-1]) == float("inf")
    assert relative_distance(HONEST, np.full_like(HONEST, np.nan)) == float("inf")


def test_two_replicas_agree_or_are_disputed() -> None:
    v = majority({"a": HONEST, "b": HONEST + NOISE}, TOL)
    assert v.agreed == ("a", "b") and v.outvoted == ()
    v = majority({"a": HONEST, "b": 0.5 * HONEST}, TOL)  # half the work
    assert not v.settled and v.outvoted == ("a", "b")


def test_three_replicas_settle_by_majority_or_not_at_all() -> None:
    v = majority({"honest": HONEST, "lazy": 0.5 * HONEST, "third": HONEST + NOISE}, TOL)
    assert v.agreed == ("honest", "third") and v.outvoted == ("lazy",)
    v = majority({"a": HONEST, "b": 0.5 * HONEST, "c": np.zeros_like(HONEST)}, TOL)
    assert not v.settled and v.outvoted == ("a", "b", "c")


def test_plan_replicates_the_share_asked_and_keeps_one_task_per_node() -> None:
    nodes = [f"n{i}" for i in range(10)]
    plan = PublicDataPlan(shards=20, replication=0.1)
    r = random.Random(1)
    twice = total = 0
    for rnd in range(1, 401):
        p = plan_round(plan, 0, rnd, rnd - 1, nodes, r)
        assert sorted(m for t in p.tasks for m in t.members) == nodes  # every member runs exactly one task
        assert len({t.shard for t in p.tasks}) == len(p.tasks)
        twice += sum(len(t.members) == 2 for t in p.tasks)
        total += len(p.tasks)
    assert 0.08 < twice / total < 0.12
    every = plan_round(PublicDataPlan(shards=4, replication=1.0), 0, 1, 0, nodes[:4], r)
    assert sorted(len(t.members) for t in every.tasks) == [2, 2]
    assert all(len({(t.shard, t.seed)}) == 1 for t in every.tasks)


def test_replicas_stay_within_one_device_class() -> None:
    nodes = [f"n{i}" for i in range(8)]
    device = {n: ("cpu" if i % 2 else "cuda:H200") for i, n in enumerate(nodes)}
    r = random.Random(3)
    pairs = 0
    for rnd in range(1, 51):
        p = plan_round(PublicDataPlan(shards=8, replication=1.0), 0, rnd, rnd - 1, nodes, r, device=device)
        assert sorted(m for t in p.tasks for m in t.members) == nodes
        for t in p.tasks:
            assert len({device[m] for m in t.members}) == 1
            pairs += len(t.members) == 2
    assert pairs > 50


def test_a_dispute_goes_to_a_third_node_from_its_model_version() -> None:
    nodes = ["a", "b", "c", "d"]
    d = ReplicaDispute(round=3, shard=1, seed=77, model_version=2, members=("a", "b"))
    for seed in range(20):
        p = plan_round(PublicDataPlan(shards=4, replication=0.0), 0, 4, 3, nodes, random.Random(seed), [d])
        settle = [t for t in p.tasks if t.settles]
        assert len(settle) == 1 and settle[0].members[0] in ("c", "d")
        assert (settle[0].shard, settle[0].seed, settle[0].model_version) == (1, 77, 2)
        assert p.replica_sets({"a", "b", "c", "d"}) == (ReplicaSet(settle[0].members, 1, 77, 3),)


def test_the_third_is_a_trusted_node_when_the_round_has_one() -> None:
    d = ReplicaDispute(round=3, shard=1, seed=77, model_version=2, members=("a", "b"), prefer=("e",))
    for seed in range(20):
        p = plan_round(PublicDataPlan(shards=4, replication=0.0), 0, 4, 3, ["a", "b", "c", "d", "e"], random.Random(seed), [d])
        assert next(t for t in p.tasks if t.settles).members == ("e",)


def test_three_that_all_differ_lose_reputation_and_nobody_is_paid_or_flagged() -> None:
    checks = ReplicaChecks(TOL, pay_after_check=False)
    valuer = _Valuer()
    ev = JobEvent(JobEventKind.SUMS_READY, 1, ("a", "b", "c"), replicas=(ReplicaSet(("a", "b"), 0, 5),))
    sc = checks.screen(ev, [_sum("a", 0, HONEST), _sum("b", 1, np.zeros_like(HONEST)), _sum("c", 2, -HONEST)])
    checks.pay(ev, sc, _valuation({"a": 0.0, "b": 0.0, "c": 6.0}), valuer)  # type: ignore[arg-type]
    assert checks.open[(1, 0)].pay == 3.0  # the disputed task's half of the round waits
    ev2 = JobEvent(JobEventKind.SUMS_READY, 2, ("a", "b", "c"), replicas=(ReplicaSet(("c",), 0, 5, settles=1),))
    sc2 = checks.screen(ev2, [_sum("a", 0, HONEST), _sum("b", 1, HONEST), _sum("c", 2, 0.5 * HONEST)])
    paid = checks.pay(ev2, sc2, _valuation({"a": 1.0, "b": 1.0, "c": 0.0}), valuer)  # type: ignore[arg-type]
    assert checks.flagged == {} and checks.counts["unsettled"] == 1
    assert paid.rewards == {"a": 1.0, "b": 1.0, "c": 0.0} and valuer.carried == 3.0
    assert all(valuer.reputation.get(n) < 0 for n in "abc")


def _sum(node: str, cohort: int, update: np.ndarray) -> CohortSum:
    return CohortSum([node], update, np.ones_like(update), cohort)


def _valuation(rewards: dict[str, float]) -> RoundValuation:
    return RoundValuation([], [], 1.0, 0.0, np.zeros(1), dict(rewards), dict(rewards), 0.0, 0.0, 0.0, b"{}")


class _Valuer:  # what ReplicaChecks.pay touches of a RoundValuer
    def __init__(self) -> None:
        self.carried = 0.0
        self.reputation = Reputation()
        self.totals: dict[str, float] = {}


def test_screen_and_pay_over_a_dispute_and_its_settlement() -> None:
    checks = ReplicaChecks(TOL, pay_after_check=True)
    valuer = _Valuer()
    # round 1: h1 and h2 ran one task and match, h3 and lazy ran another and differ
    ev = JobEvent(JobEventKind.SUMS_READY, 1, ("h1", "h2", "h3", "lazy"), replicas=(ReplicaSet(("h1", "h2"), 0, 5), ReplicaSet(("h3", "lazy"), 1, 6)))
    sums = [_sum("h1", 0, HONEST), _sum("h2", 1, HONEST + NOISE), _sum("h3", 2, -HONEST), _sum("lazy", 3, -0.5 * HONEST)]
    sc = checks.screen(ev, sums)
    assert [s.members for s in sc.kept] == [["h1"]]
    assert {d.members[0]: d.rule for d in sc.dropped} == {"h2": RULE, "h3": RULE, "lazy": RULE}
    assert sc.disputes == [ReplicaDispute(1, 1, 6, 0, ("h3", "lazy"), prefer=("h1", "h2"))]  # a verified node settles it
    paid = checks.pay(ev, sc, _valuation({"h1": 10.0, "h2": 0.0, "h3": 0.0, "lazy": 0.0}), valuer)  # type: ignore[arg-type]
    # half of the round waits for the disputed task (two tasks, one disputed); the twins share the other half
    assert paid.rewards == {"h1": 2.5, "h2": 2.5, "h3": 0.0, "lazy": 0.0}
    assert checks.open[(1, 1)].pay == 5.0 and valuer.carried == 0.0 and checks.flagged == {}
    # round 2: h1 re-runs the disputed task and agrees with h3; lazy is outvoted
    ev2 = JobEvent(JobEventKind.SUMS_READY, 2, ("h1", "h2", "h3", "lazy"), replicas=(ReplicaSet(("h1",), 1, 6, settles=1),))
    sums2 = [_sum("h1", 0, -HONEST - NOISE), _sum("h2", 1, HONEST), _sum("h3", 2, HONEST), _sum("lazy", 3, 0.3 * HONEST)]
    sc2 = checks.screen(ev2, sums2)
    assert [s.members[0] for s in sc2.kept] == ["h2", "h3", "lazy"]  # lazy is flagged from the next round on
    assert sc2.flagged_now == ["lazy"] and "outvoted" in checks.flagged["lazy"]
    paid2 = checks.pay(ev2, sc2, _valuation({"h1": 0.0, "h2": 4.0, "h3": 4.0, "lazy": 4.0}), valuer)  # type: ignore[arg-type]
    assert paid2.rewards["lazy"] == 0.0
    assert paid2.rewards["h3"] == pytest.approx(4.0 + 2.5)  # its round, and its half of the disputed task's 5
    assert paid2.rewards["h2"] == 4.0 and paid2.rewards["h1"] == pytest.approx(2.5)
    assert valuer.carried == pytest.approx(4.0)  # lazy's 4 of this round
    assert valuer.reputation.get("lazy") < 0 and valuer.reputation.get("h3") == 0.0
    # round 3: the flagged node's update is left out and it earns nothing
    ev3 = JobEvent(JobEventKind.SUMS_READY, 3, ("h1", "lazy"))
    sc3 = checks.screen(ev3, [_sum("h1", 0, HONEST), _sum("lazy", 1, HONEST)])
    assert [s.members[0] for s in sc3.kept] == ["h1"]
    assert checks.pay(ev3, sc3, _valuation({"h1": 1.0, "lazy": 0.0}), valuer).rewards == {"h1": 1.0, "lazy": 0.0}  # type: ignore[arg-type]


def test_rewards_wait_for_a_nodes_first_matched_check() -> None:
    checks = ReplicaChecks(TOL, pay_after_check=True)
    valuer = _Valuer()
    ev = JobEvent(JobEventKind.SUMS_READY, 1, ("a", "b"))
    sc = checks.screen(ev, [_sum("a", 0, HONEST), _sum("b", 1, -HONEST)])
    assert checks.pay(ev, sc, _valuation({"a": 3.0, "b": 2.0}), valuer).rewards == {"a": 0.0, "b": 0.0}  # type: ignore[arg-type]
    assert checks.held == {"a": 3.0, "b": 2.0}
    ev2 = JobEvent(JobEventKind.SUMS_READY, 2, ("a", "c"), replicas=(ReplicaSet(("a", "c"), 0, 1),))
    sc2 = checks.screen(ev2, [_sum("a", 0, HONEST), _sum("c", 1, HONEST)])
    paid = checks.pay(ev2, sc2, _valuation({"a": 2.0, "c": 0.0}), valuer)  # type: ignore[arg-type]
    assert paid.rewards == {"a": 1.0 + 3.0, "c": 1.0}  # released with its matched check
    assert checks.held == {"b": 2.0}


def test_state_round_trips_open_disputes_through_the_state_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from fedgpu.driver.state import DriverState, load_state, save_state

    checks = ReplicaChecks(TOL)
    ev = JobEvent(JobEventKind.SUMS_READY, 1, tuple("abcd"), replicas=(ReplicaSet(("a", "b"), 2, 9), ReplicaSet(("c", "d"), 3, 8)))
    start = np.arange(3.0)  # both disputes started from it
    checks.screen(ev, [_sum("a", 0, HONEST), _sum("b", 1, -HONEST), _sum("c", 2, HONEST), _sum("d", 3, 0.5 * HONEST)], start=start)
    meta, arrays = checks.state()
    save_state(tmp_path, DriverState(1, {"w": torch.zeros(2)}, arrays, {"checks": meta}))
    st = load_state(tmp_path)
    again = ReplicaChecks(TOL)
    again.load_state(st.meta["checks"], st.arrays)
    assert again.open.keys() == checks.open.keys() == {(1, 2), (1, 3)}
    assert np.array_equal(again.open[(1, 2)].updates["b"], -HONEST)
    assert np.array_equal(again.open[(1, 3)].start, start)


def test_when_no_two_agree_the_drivers_own_run_decides() -> None:
    checks = ReplicaChecks(TOL, pay_after_check=False, referee=lambda start, shard, seed: HONEST + NOISE)
    valuer = _Valuer()
    ev = JobEvent(JobEventKind.SUMS_READY, 1, ("a", "b", "c"), replicas=(ReplicaSet(("a", "b"), 0, 5),))
    sc = checks.screen(ev, [_sum("a", 0, HONEST), _sum("b", 1, np.zeros_like(HONEST)), _sum("c", 2, -HONEST)], start=np.zeros(3))
    checks.pay(ev, sc, _valuation({"a": 0.0, "b": 0.0, "c": 6.0}), valuer)  # type: ignore[arg-type]
    ev2 = JobEvent(JobEventKind.SUMS_READY, 2, ("a", "b", "c"), replicas=(ReplicaSet(("c",), 0, 5, settles=1),))
    sc2 = checks.screen(ev2, [_sum("a", 0, HONEST), _sum("b", 1, HONEST), _sum("c", 2, 0.5 * HONEST)])
    paid = checks.pay(ev2, sc2, _valuation({"a": 1.0, "b": 1.0, "c": 0.0}), valuer)  # type: ignore[arg-type]
    assert sorted(checks.flagged) == ["b", "c"] and "driver's own run" in checks.flagged["b"]
    assert checks.counts["refereed"] == 1 and "a" in checks.verified
    assert paid.rewards["a"] == pytest.approx(1.0 + 3.0) and paid.rewards["b"] == 0.0


def test_a_dispute_of_the_last_round_is_settled_by_the_drivers_run_and_held_pay_is_released() -> None:
    checks = ReplicaChecks(TOL, pay_after_check=True, referee=lambda start, shard, seed: HONEST + NOISE)
    valuer = _Valuer()
    # round 1: "quiet" is never checked, so its pay is held
    ev = JobEvent(JobEventKind.SUMS_READY, 1, ("quiet", "a"))
    checks.pay(ev, checks.screen(ev, [_sum("quiet", 0, HONEST), _sum("a", 1, HONEST)]), _valuation({"quiet": 2.0, "a": 2.0}), valuer)  # type: ignore[arg-type]
    assert checks.held == {"quiet": 2.0, "a": 2.0}
    # round 2, the last: a and lazy disagree; nobody is left to re-run it, so the driver's own run decides now
    ev2 = JobEvent(JobEventKind.SUMS_READY, 2, ("a", "lazy", "h"), replicas=(ReplicaSet(("a", "lazy"), 0, 5),))
    sc = checks.screen(ev2, [_sum("a", 0, HONEST), _sum("lazy", 1, 0.5 * HONEST), _sum("h", 2, HONEST)], start=np.zeros(3))
    assert [d.members for d in sc.disputes] == [("a", "lazy")]
    paid = checks.pay(ev2, sc, _valuation({"a": 0.0, "lazy": 0.0, "h": 4.0}), valuer, final=True)  # type: ignore[arg-type]
    assert sc.disputes == [] and checks.open == {}  # nothing left for a third node
    assert checks.flagged.keys() == {"lazy"} and "driver's own run" in checks.flagged["lazy"] and sc.flagged_now == ["lazy"]
    assert [c["outcome"] for c in sc.checks] == ["disputed", "settled"] and sc.checks[1]["by"] == "the job's last round"
    # the disputed task's half of the round goes to a, now verified, with its round-1 pay; h and quiet were never
    # checked: their held pay is released at the end; lazy gets nothing and holds nothing
    assert paid.rewards["a"] == pytest.approx(2.0 + 2.0) and paid.rewards["h"] == pytest.approx(2.0) and paid.rewards["quiet"] == pytest.approx(2.0)
    assert paid.rewards["lazy"] == 0.0 and checks.held == {}
    assert checks.released == pytest.approx({"quiet": 2.0, "h": 2.0})
    assert checks.summary()["released_at_end"] == checks.released


def test_a_dispute_whose_third_never_reported_is_settled_by_the_driver_in_the_next_round() -> None:
    checks = ReplicaChecks(TOL, pay_after_check=False, referee=lambda start, shard, seed: -HONEST)
    valuer = _Valuer()
    ev = JobEvent(JobEventKind.SUMS_READY, 1, ("a", "b"), replicas=(ReplicaSet(("a", "b"), 0, 5),))
    sc = checks.screen(ev, [_sum("a", 0, HONEST), _sum("b", 1, -HONEST)], start=np.zeros(3))
    checks.pay(ev, sc, _valuation({"a": 0.0, "b": 0.0, "c": 2.0}), valuer)  # type: ignore[arg-type]
    assert checks.open.keys() == {(1, 0)} and checks.flagged == {}
    ev2 = JobEvent(JobEventKind.SUMS_READY, 2, ("a", "b"))  # the third's re-run is not in the round
    sc2 = checks.screen(ev2, [_sum("a", 0, HONEST), _sum("b", 1, HONEST)])
    paid = checks.pay(ev2, sc2, _valuation({"a": 1.0, "b": 1.0}), valuer)  # type: ignore[arg-type]
    assert checks.open == {} and list(checks.flagged) == ["a"] and paid.rewards == {"a": 0.0, "b": pytest.approx(1.0 + 1.0)}
    assert sc2.checks[0]["by"] == "no third replica reported"
