"""DP jobs end to end: the owner's ledger is charged before the update leaves, and caps hold."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fedgpu.config import PrivacyConfig
from fedgpu.datasets import partition_iid, public_split, save_npz
from fedgpu.errors import RoundFailed
from fedgpu.node.agent import NodeAgent, NodeConfig
from fedgpu.privacy.dp import epsilon_of
from fedgpu.privacy.ledger import OwnerLedger

from test_job import job, run_driver, stop_nodes  # type: ignore[import-not-found]

TARGET = 4.0


@pytest.fixture(scope="module")
def digits() -> tuple:
    return public_split("digits", seed=0)


def dp_nodes(address: str, tmp: Path, train, n: int, cap: float, seen: list) -> list:  # type: ignore[no-untyped-def]
    """Nodes with an owner's cap; each notes, when its update is ready to leave, what its ledger holds."""
    out = []
    for i, idx in enumerate(partition_iid(len(train), n, seed=1)):
        f = tmp / f"node{i}.npz"
        save_npz(f, train.subset(idx))
        ledger = tmp / f"node{i}" / "privacy.db"

        def hook(task, start, delta, ledger=ledger):  # type: ignore[no-untyped-def]
            seen.append((task.round, [(s.event.job_id, s.event.round) for s in OwnerLedger(ledger).events()]))
            return delta

        cfg = NodeConfig(aggregator=address, data={"digits": f}, identity_path=tmp / f"node{i}" / "id.pem", poll_seconds=1,
                         epsilon_cap=cap, ledger_path=ledger, update_hook=hook)
        agent = NodeAgent(cfg)
        th = threading.Thread(target=agent.run, daemon=True)
        th.start()
        out.append((agent, th))
    return out


def dp_job(rounds: int):  # type: ignore[no-untyped-def]
    from fedgpu.config import TrainingConfig

    return job(rounds=rounds, nodes_per_round=2, min_nodes=2, training=TrainingConfig(epochs=1, batch_size=64, lr=0.5),
               privacy=PrivacyConfig(enabled=True, epsilon=TARGET, delta=1e-5))


@pytest.mark.slow
def test_dp_job_reports_each_nodes_epsilon_from_its_ledger(aggregator, tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    train, test = digits
    seen: list = []
    nodes = dp_nodes(aggregator.address, tmp_path, train, 2, cap=10.0, seen=seen)
    try:
        report = run_driver(aggregator.address, dp_job(rounds=2), tmp_path / "out", test)
    finally:
        stop_nodes(nodes)
    # The charge of round r is in the owner's ledger before round r's update leaves the node.
    assert len(seen) == 4
    for rnd, charged in seen:
        assert (report["job"], rnd) in charged
    eps = [r["epsilon"] for r in report["rounds"]]
    assert all(set(e) == set(report["rounds"][0]["participants"]) for e in eps)
    for i, (agent, _) in enumerate(nodes):
        ledger = OwnerLedger(tmp_path / f"node{i}" / "privacy.db")
        history = [s.event.segment for s in ledger.events(job_id=report["job"])]
        assert len(history) == 2
        # What the report says is Opacus's accountant on the stored history, and the plan reaches the target.
        assert eps[-1][agent.node_id] == pytest.approx(epsilon_of(history, 1e-5, "prv"), abs=1e-6)
    for node_eps in eps[-1].values():
        assert TARGET * 0.97 <= node_eps <= TARGET + 1e-6
    for node, first in eps[0].items():
        assert first < eps[-1][node]
    assert report["privacy"]["epsilon"] == TARGET and report["final_accuracy"] > 0.1


def test_job_asking_more_than_the_caps_fails_fast_and_trains_nothing(aggregator, tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    train, test = digits
    seen: list = []
    nodes = dp_nodes(aggregator.address, tmp_path, train, 2, cap=TARGET / 2, seen=seen)
    try:
        with pytest.raises(RoundFailed, match="privacy_budget"):
            run_driver(aggregator.address, dp_job(rounds=2), tmp_path / "out", test)
    finally:
        stop_nodes(nodes)
    assert seen == []  # no node got as far as an update
    for i in range(2):
        assert OwnerLedger(tmp_path / f"node{i}" / "privacy.db").events() == []


def test_a_job_that_cannot_finish_under_the_caps_is_declined_up_front_with_a_report(aggregator, tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    """Issue #17: each node's first round fits under its cap, the whole job does not. The nodes decline it
    before training anything, and the driver still writes report.json saying why."""
    import json

    from fedgpu.privacy.planning import noise_for_job

    train, test = digits
    cap = TARGET * 0.9
    n = len(partition_iid(len(train), 2, seed=1)[0])
    sigma, q, steps = noise_for_job(TARGET, 1e-5, n, 64, 1, 3, "prv")
    assert epsilon_of([(sigma, q, steps)], 1e-5, "prv") < cap  # a per-round check would have let round 1 train
    seen: list = []
    nodes = dp_nodes(aggregator.address, tmp_path, train, 2, cap=cap, seen=seen)
    out = tmp_path / "out"
    try:
        with pytest.raises(RoundFailed, match="privacy_budget"):
            run_driver(aggregator.address, dp_job(rounds=3), out, test)
    finally:
        stop_nodes(nodes)
    assert seen == []
    for i in range(2):
        assert OwnerLedger(tmp_path / f"node{i}" / "privacy.db").events() == []
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and report["rounds"] == []
    assert "privacy_budget" in report["error"] and "Declined before training anything" in report["error"]
    assert not (out / "model.safetensors").exists()  # no round was applied
