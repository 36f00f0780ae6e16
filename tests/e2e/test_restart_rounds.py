"""Crash consistency of the newer round paths, with real processes and real SIGKILL (as tests/e2e/test_restart.py):
an over-selected round that closes early, a public-data round whose dispute is carried to the next round, a
k = 3 job whose pools are all paid in its last round, and a DP round retried after a kill (each owner charged once).

Each aggregator process dies at the next named crash point of its plan (fedgpu.faults) and a supervisor
restarts it on the same database and port. Afterwards the released sums hold exactly their listed members,
no update entered twice, nothing was paid twice, and (public data) the dispute was settled.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedgpu.adversaries import apply_behaviour
from fedgpu.aggregator.store import Store
from fedgpu.config import JobConfig, PrivacyConfig, PublicDataConfig, RewardsConfig, SelectionConfig, TrainingConfig
from fedgpu.crypto.plain import PlainKeyPair
from fedgpu.datasets import public_shard, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.node.agent import NodeAgent, NodeConfig
from fedgpu.privacy.ledger import OwnerLedger

from test_job import job, stop_nodes  # type: ignore[import-not-found]
from test_restart import WEIGHT_SCALE, check_ledger, free_port, start_aggregator  # type: ignore[import-not-found]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

Nodes = list[tuple[NodeAgent, threading.Thread]]


class KilledAggregator:
    """``fedgpu aggregator`` as its own process, dying at each point of ``plan`` in turn and restarted on the
    same database and port each time (test_restart.py's supervisor); stopped on leaving the block."""

    def __init__(self, tmp_path: Path, plan: list[str]) -> None:
        self.plan, self.kills = plan, list[str]()
        self.port, self.db, self.log = free_port(), tmp_path / "agg.db", tmp_path / "agg.log"
        self.address = f"127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._points: Iterator[str] = iter(plan)

    def __enter__(self) -> KilledAggregator:
        self.proc = start_aggregator(self.port, self.db, self.log, next(self._points))
        self._sup = threading.Thread(target=self._supervise, daemon=True)
        self._sup.start()
        return self

    def _supervise(self) -> None:
        point = self.plan[0]
        while not self._stop.is_set():
            if self.proc.poll() is None:
                time.sleep(0.05)
                continue
            if self.proc.returncode != -signal.SIGKILL:  # not one of the planned kills: the test fails on kills
                return
            self.kills.append(point)
            point = next(self._points, "")
            self.proc = start_aggregator(self.port, self.db, self.log, point or None)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sup.join(10)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def drive(self, cfg: JobConfig, out: Path, timeout: float = 420) -> dict[str, Any]:
        """The job run to its end by a driver in a thread; its report."""
        result: dict[str, Any] = {}
        _, test = public_split("digits", seed=0)
        driver = JobDriver(self.address, cfg, out, validation=test, keys=PlainKeyPair(values_per_chunk=2_000))
        th = threading.Thread(target=lambda: result.update(driver.run()), daemon=True)
        th.start()
        th.join(timeout)
        if th.is_alive() or not result:
            driver.abort("the test gave up")
            raise AssertionError(self.log.read_text()[-3000:])
        return result


def run_node(cfg: NodeConfig) -> tuple[NodeAgent, threading.Thread]:
    agent = NodeAgent(cfg)
    th = threading.Thread(target=agent.run, daemon=True)
    th.start()
    return agent, th


# ---- (a) over-selection: the round closes at nodes_per_round updates --------------------------------
SIZES = (100, 150, 200, 250, 300)  # unequal shards: a sum holding a foreign or doubled update shows it in its weight


def test_an_over_selected_round_killed_around_its_early_close_releases_exactly_its_members(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fedgpu.node")
    train, _ = public_split("digits", seed=0)

    bounds = np.cumsum((0, *SIZES))
    for i in range(len(SIZES)):  # every file first: nothing fails once node threads run
        save_npz(tmp_path / f"node{i}.npz", train.subset(np.arange(bounds[i], bounds[i + 1])))

    def nodes_for(address: str) -> Nodes:
        out = []
        for i in range(len(SIZES)):
            f = tmp_path / f"node{i}.npz"
            # Each node a few times slower than the last, so any three picked finish well apart: the third is a straggler.
            cfg = NodeConfig(aggregator=address, data={"digits": f}, identity_path=tmp_path / f"node{i}" / "id.pem", poll_seconds=1)
            apply_behaviour(cfg, "slow", slow_factor=1 + 4 * i)
            out.append(run_node(cfg))
        return out

    # 2 updates a round out of 3 tasks (over_select 0.5 of 2: one extra; five nodes, so three are free when a
    # round opens). Killed when the second update is in (the round has enough but is not closed), then just
    # after the (redone) round was saved; the third process runs clean.
    plan = ["upload_folded@2", "round_saved"]
    cfg = job(
        rounds=3, nodes_per_round=2, min_nodes=2, deadline_seconds=90, rewards=RewardsConfig(pool_per_round=100.0, budget=16),
        selection=SelectionConfig(rule="utility", exploration=0.0, over_select=0.5),
    )
    with KilledAggregator(tmp_path, plan) as agg:
        nodes = nodes_for(agg.address)
        try:
            report = agg.drive(cfg, tmp_path / "out")
            # A straggler that pulled its task before the early close uploads late and meets a typed "not needed"
            # (one still in back-off when the round closed never sees its task): never NOT_FOUND, never an error.
            end = time.monotonic() + 10
            while "round closed without this update" not in caplog.text and time.monotonic() < end:
                time.sleep(0.2)
            check_ledger(agg.db, report, nodes)
        finally:
            stop_nodes(nodes)
    assert agg.kills == plan, agg.kills
    assert "aggregator refused" not in caplog.text, caplog.text[-3000:]  # NOT_FOUND for a straggler among others
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    weight = {a.node_id: n * WEIGHT_SCALE for (a, _), n in zip(nodes, SIZES, strict=True)}
    assert "round 1 (attempt 1): 3 nodes" in agg.log.read_text()  # the first kill: an over-selected round with enough updates
    leftovers = 0
    for r in report["rounds"]:
        assert len(r["participants"]) == 2, (r["round"], r["participants"])  # closed at nodes_per_round
        left = [n for n in r["node_status"] if n not in r["participants"]]
        assert all("not needed" in r["node_status"][n] for n in left), (r["round"], r["node_status"])
        leftovers += len(left)
        for members, w in zip(r["cohorts"], r["cohort_weights"], strict=True):
            assert w == pytest.approx(sum(weight[m] for m in members), abs=1e-5), (r["round"], members, w)
    assert leftovers >= 1  # at least one saved round closed early (a round waits for its over-selected count)
    store = Store(str(agg.db))
    try:  # a task an early close cut is not a missed deadline
        assert all(r["misses"] == 0 for r in store.capacity()), store.capacity()
    finally:
        store.engine.dispose()


# ---- (b) public data: a dispute carried from round 1 to round 2 ---------------------------------------
def test_a_dispute_carried_across_aggregator_kills_is_re_run_settled_and_paid_once(tmp_path: Path) -> None:
    def nodes_for(address: str) -> Nodes:
        out = []
        for i in range(4):
            cfg = NodeConfig(aggregator=address, data={}, identity_path=tmp_path / f"node{i}" / "id.pem", poll_seconds=1, name=f"node{i}")
            if i == 3:
                apply_behaviour(cfg, "lazy")
            out.append(run_node(cfg))
        return out

    # Every task replicated (4 nodes: two pairs), so the lazy node is in a dispute in round 1. Killed: just after
    # round 1's publish is stored (its dispute only in the database; publish 0 is the initial model's), in
    # round 2 with two updates in (the round, the third's re-run with it, is redone), after round 2 is saved,
    # inside round 2's publish transaction (the settlement's pay: none of it written), and after that publish
    # is stored (the flag only in the database). The sixth process runs round 3 without the lazy node.
    plan = ["published@2", "upload_folded@2", "round_saved", "ledger_write", "published"]
    cfg = job(
        name="public", rounds=3, nodes_per_round=4, min_nodes=3, deadline_seconds=90, rewards=RewardsConfig(pool_per_round=100.0, budget=16),
        public_data=PublicDataConfig(enabled=True, shards=8, replication=1.0),
    )
    with KilledAggregator(tmp_path, plan) as agg:
        nodes = nodes_for(agg.address)
        try:
            report = agg.drive(cfg, tmp_path / "out")
            check_ledger(agg.db, report, nodes)
        finally:
            stop_nodes(nodes)
    store = Store(str(agg.db))
    try:
        rows = store.ledger_rows(report["job"])
        flagged_in_db = store.flagged(report["job"])
    finally:
        store.engine.dispose()
    assert agg.kills == plan, agg.kills
    lazy = nodes[3][0].node_id
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    r1, r2, r3 = report["rounds"]
    assert "disputed" in [c["outcome"] for c in r1["replicas"]]
    settling = [c for c in r2["replicas"] if c.get("settles") == 1]
    assert settling and settling[0]["third"] is not None, r2["replicas"]  # a third node re-ran it, after two kills
    assert settling[0]["outcome"] == "settled" and settling[0]["flagged"] == [lazy]
    ver = report["verification"]
    assert list(ver["flagged"]) == [lazy] and ver["open_disputes"] == [] and ver["held"] == {}, ver
    assert flagged_in_db == {lazy: 2}
    assert lazy not in r3["participants"]  # the flag survived the last kill
    assert sum(r["reward"] for r in rows if r["node_id"] == lazy) == 0.0
    assert all(sum(r["reward"] for r in rows if r["node_id"] == a.node_id) > 0 for a, _ in nodes[:3])
    # one shard's weight per sum: no update entered twice, none holds another node's
    shard_weights = [len(public_shard("digits", 0, 0, s, 8)) * WEIGHT_SCALE for s in range(8)]
    for r in report["rounds"]:
        assert len(r["participants"]) == len(set(r["participants"]))
        for members, w in zip(r["cohorts"], r["cohort_weights"], strict=True):
            assert len(members) == 1 and min(abs(w - s) for s in shard_weights) < 1e-5, (r["round"], members, w)


# ---- (c) k = 3: the job's pools, paid at its last round, killed around that publish -------------------
def test_the_end_of_job_settlement_killed_in_its_publish_pays_every_pool_exactly_once(tmp_path: Path) -> None:
    train, _ = public_split("digits", seed=0)
    sizes = (120, 140, 160, 180, 200, 220)
    bounds = np.cumsum((0, *sizes))
    for i in range(len(sizes)):
        save_npz(tmp_path / f"node{i}.npz", train.subset(np.arange(bounds[i], bounds[i + 1])))

    def nodes_for(address: str) -> Nodes:
        return [
            run_node(NodeConfig(aggregator=address, data={"digits": tmp_path / f"node{i}.npz"}, identity_path=tmp_path / f"node{i}" / "id.pem", poll_seconds=1))
            for i in range(len(sizes))
        ]

    # 6 nodes in 2 cohorts of 3 for 7 rounds: 14 cohort values for 6 nodes, enough for bounds (confidence 0:
    # the point estimates, so somebody is surely proven). Killed inside the last round's publish transaction
    # (nothing of it written), then just after that publish is stored; the third process runs clean.
    plan = ["ledger_write@7", "published"]
    cfg = job(rounds=7, nodes_per_round=6, min_nodes=6, cohort_size=3, deadline_seconds=90, rewards=RewardsConfig(pool_per_round=100.0, budget=16, confidence=0.0))
    with KilledAggregator(tmp_path, plan) as agg:
        nodes = nodes_for(agg.address)
        try:
            report = agg.drive(cfg, tmp_path / "out")
            check_ledger(agg.db, report, nodes)
        finally:
            stop_nodes(nodes)
    assert agg.kills == plan, agg.kills
    assert [r["round"] for r in report["rounds"]] == list(range(1, 8))
    assert all(sum(r["valuation"]["rewards"].values()) == 0.0 for r in report["rounds"][:-1])  # nothing paid before the end
    store = Store(str(agg.db))
    try:
        rows = store.ledger_rows(report["job"])
    finally:
        store.engine.dispose()
    assert sum(r["reward"] for r in rows if r["round"] < 7) == 0.0
    assert sum(r["reward"] for r in rows) == pytest.approx(700.0)  # all seven pools, once, in round 7's entries
    last = [r for r in rows if r["round"] == 7]
    assert len({r["node_id"] for r in last}) == len(last) and {r["node_id"] for r in last if r["reward"] > 0} <= {a.node_id for a, _ in nodes}


def test_a_dp_round_retried_after_an_aggregator_kill_charges_each_owner_once(tmp_path: Path) -> None:
    """Killed after round 2's first update is added: the attempt dies with the process, the nodes that had trained
    for it meet NOT_FOUND, and the retried attempt gets their earlier releases again (NodeAgent._train): every
    owner's ledger holds exactly one charge per round, and the job ends at its planned epsilon."""
    train, _ = public_split("digits", seed=0)
    for i in range(3):
        save_npz(tmp_path / f"node{i}.npz", train.subset(np.arange(i * 200, (i + 1) * 200)))
    plan = ["upload_folded@4"]  # 3 updates a round: the 4th fold is round 2's first
    cfg = job(rounds=3, nodes_per_round=3, min_nodes=3, deadline_seconds=60, training=TrainingConfig(epochs=1, batch_size=64, lr=0.5),
              privacy=PrivacyConfig(enabled=True, epsilon=8.0, delta=1e-5))
    with KilledAggregator(tmp_path, plan) as agg:
        nodes = [
            run_node(NodeConfig(aggregator=agg.address, data={"digits": tmp_path / f"node{i}.npz"}, identity_path=tmp_path / f"node{i}" / "id.pem",
                                poll_seconds=1, epsilon_cap=10.0, ledger_path=tmp_path / f"node{i}" / "privacy.db"))
            for i in range(3)
        ]
        try:
            report = agg.drive(cfg, tmp_path / "out")
        finally:
            stop_nodes(nodes)
    assert agg.kills == plan, agg.kills
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    for i in range(3):
        charged = [s.event.round for s in OwnerLedger(tmp_path / f"node{i}" / "privacy.db").events(job_id=report["job"])]
        assert charged == [1, 2, 3], (i, charged)  # round 2 once, though two attempts asked for it
    assert all(e <= 8.0 + 1e-6 for e in report["rounds"][-1]["epsilon"].values())
