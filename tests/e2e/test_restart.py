"""Crash consistency with real processes and real SIGKILL: the aggregator killed at each step of a
round, the driver killed mid-round, replays after a restart. Nothing lost, doubled or mixed.

The kills land at named crash points (fedgpu.faults): ``FEDGPU_CRASH_AT=NAME`` makes the process
SIGKILL itself exactly there. scripts/bench_restart.py sweeps random moments instead.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedgpu.aggregator.local import LocalAggregator
from fedgpu.aggregator.store import Store
from fedgpu.cli.rewards import verify
from fedgpu.config import RewardsConfig
from fedgpu.crypto.plain import PlainKeyPair
from fedgpu.datasets import ArrayDataset, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.errors import RoundFailed
from fedgpu.node.agent import NodeAgent, NodeConfig
from fedgpu.proto.fedgpu.v1 import node_pb2, node_pb2_grpc
from fedgpu.rewards.chain import Receipt
from fedgpu.wire import PROTOCOL_VERSION
from fedgpu.wire.auth import Identity
from fedgpu.wire.certs import CertFiles
from fedgpu.wire.transport import TLSConfig, open_channel

from test_job import job, stop_nodes  # type: ignore[import-not-found]

pytestmark = pytest.mark.e2e

SIZES = (200, 330, 560)  # unequal shards: a sum holding a foreign update shows it in its weight slot
WEIGHT_SCALE = 1e-3  # NodeConfig.weight_scale: a node's FedAvg weight is its sample count times this


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_aggregator(port: int, db: Path, log: Path, crash_at: str | None = None, certs: CertFiles | None = None) -> subprocess.Popen[bytes]:
    """``fedgpu aggregator`` as its own process; with ``certs`` it serves TLS (``--tls-cert``/``--tls-key``)."""
    ready = db.with_suffix(".addr")
    ready.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "FEDGPU_CRASH_AT"}
    if crash_at:
        env["FEDGPU_CRASH_AT"] = crash_at
    tls = ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)] if certs else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedgpu", "aggregator", "--listen", f"127.0.0.1:{port}", "--db", str(db), "--ready-file", str(ready), *tls],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
    )
    end = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > end:
            raise AssertionError(log.read_text()[-3000:])
        time.sleep(0.05)
    return proc


def start_nodes(address: str, tmp: Path, train: ArrayDataset, tls: TLSConfig | None = None) -> list[tuple[NodeAgent, threading.Thread]]:
    out, start = [], 0
    for i, n in enumerate(SIZES):
        f = tmp / f"node{i}.npz"
        save_npz(f, train.subset(np.arange(start, start + n)))
        start += n
        agent = NodeAgent(NodeConfig(aggregator=address, data={"digits": f}, identity_path=tmp / f"node{i}" / "id.pem", poll_seconds=1, tls=tls or TLSConfig()))
        th = threading.Thread(target=agent.run, daemon=True)
        th.start()
        out.append((agent, th))
    return out


def check_sums_hold_only_their_members(report: dict, nodes: list[tuple[NodeAgent, threading.Thread]]) -> None:
    weight = {a.node_id: n * WEIGHT_SCALE for (a, _), n in zip(nodes, SIZES, strict=True)}
    for r in report["rounds"]:
        for members, w in zip(r["cohorts"], r["cohort_weights"], strict=True):
            assert w == pytest.approx(sum(weight[m] for m in members), abs=1e-5), (r["round"], members, w)


def check_ledger(db: Path, report: dict, nodes: list[tuple[NodeAgent, threading.Thread]]) -> None:
    """Paid once per (round, node), chain verifies, the driver's tally is the ledger's, every receipt arrived."""
    store = Store(str(db))
    try:
        rows = store.ledger_rows(report["job"])
        paid = [(r["round"], r["node_id"]) for r in rows]
        assert len(paid) == len(set(paid))
        assert sorted({r for r, _ in paid}) == [r["round"] for r in report["rounds"]]
        ok, message = verify(store, None)
        assert ok, message
        ledger: dict[str, float] = {}
        for r in rows:
            ledger[r["node_id"]] = ledger.get(r["node_id"], 0.0) + r["reward"]
        tally = {n: info["reward"] or 0.0 for n, info in report["nodes"].items() if n in ledger}
        assert tally == pytest.approx(ledger, abs=1e-9)
        end = time.monotonic() + 30
        for agent, _ in nodes:
            want = {(r["job_id"], r["round"]) for r in rows if r["node_id"] == agent.node_id}
            while True:
                got = {(rc.job_id, rc.round) for rc in map(Receipt.from_json, _lines(agent.receipts_path))}
                if got >= want or time.monotonic() > end:
                    break
                time.sleep(0.2)
            assert got == want, f"receipts lost for {agent.node_id}: {sorted(want - got)}"
    finally:
        store.engine.dispose()


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


# The steps of a round in the order they happen; each aggregator process dies at the next one.
CRASH_POINTS = ["upload_chunk", "upload_folded", "round_saved", "fetch_sums", "publish_received", "ledger_write", "published"]


def test_aggregator_killed_at_every_step_of_a_round_loses_doubles_and_mixes_nothing(tmp_path: Path, certs: CertFiles) -> None:
    train, test = public_split("digits", seed=0)
    port, db, log = free_port(), tmp_path / "agg.db", tmp_path / "agg.log"
    plan: Iterator[str] = iter(CRASH_POINTS)
    agg = start_aggregator(port, db, log, next(plan), certs)
    address = f"127.0.0.1:{port}"
    tls = TLSConfig(ca=certs.ca)
    nodes = start_nodes(address, tmp_path, train, tls)
    kills: list[str] = []
    stop = threading.Event()

    def supervise() -> None:  # a restart on the same database and port whenever the aggregator dies
        nonlocal agg
        point = CRASH_POINTS[0]
        while not stop.is_set():
            if agg.poll() is None:
                time.sleep(0.05)
                continue
            assert agg.returncode == -signal.SIGKILL, log.read_text()[-3000:]
            kills.append(point)
            point = next(plan, "")
            agg = start_aggregator(port, db, log, point or None, certs)

    sup = threading.Thread(target=supervise, daemon=True)
    sup.start()
    cfg = job(rounds=4, deadline_seconds=20, rewards=RewardsConfig(pool_per_round=100.0, budget=16))
    result: dict = {}
    driver = JobDriver(address, cfg, tmp_path / "out", validation=test, keys=PlainKeyPair(values_per_chunk=2_000), tls=tls)
    th = threading.Thread(target=lambda: result.update(driver.run()), daemon=True)
    th.start()
    try:
        th.join(400)
        assert not th.is_alive(), log.read_text()[-3000:]
        check_ledger(db, result, nodes)
    finally:
        stop.set()
        sup.join(10)
        stop_nodes(nodes)
        if agg.poll() is None:
            agg.send_signal(signal.SIGTERM)
            agg.wait(10)
    assert kills == CRASH_POINTS, kills
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3, 4]
    check_sums_hold_only_their_members(result, nodes)
    assert result["final_accuracy"] > 0.75


def _train(args: list[str], env_crash: str | None, log: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "FEDGPU_CRASH_AT"}
    if env_crash:
        env["FEDGPU_CRASH_AT"] = env_crash
    with log.open("ab") as f:
        return subprocess.run([sys.executable, "-m", "fedgpu", "train", *args], stdout=f, stderr=subprocess.STDOUT, env=env, timeout=300)


JOB_TOML = """
name = "resume"
model = "digits_cnn"
dataset = "digits"
rounds = 4
nodes_per_round = 3
min_nodes = 2
cohort_size = 1
deadline_seconds = 20
driver_lease_seconds = {lease}

[training]
epochs = 3
batch_size = 16
lr = 0.05

[encryption]
scheme = "none"

[rewards]
pool_per_round = 100
budget = 16
"""


def test_driver_killed_twice_and_resumed_values_each_round_once(tmp_path: Path) -> None:
    train, test = public_split("digits", seed=0)
    val = tmp_path / "val.npz"
    save_npz(val, test)
    spec = tmp_path / "job.toml"
    spec.write_text(JOB_TOML.format(lease=120))
    out, log = tmp_path / "out", tmp_path / "driver.log"
    with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool") as agg:
        nodes = start_nodes(agg.address, tmp_path, train)
        try:
            # Killed after writing round 1's state, before its publish; then after round 2's publish,
            # before anything else; the third process finishes the job.
            first = _train([str(spec), "--aggregator", agg.address, "--out", str(out), "--validation", str(val)], "driver_pending", log)
            assert first.returncode == -signal.SIGKILL, log.read_text()[-3000:]
            second = _train(["--resume", str(out), "--aggregator", agg.address], "driver_published@1", log)
            assert second.returncode == -signal.SIGKILL, log.read_text()[-3000:]
            third = _train(["--resume", str(out), "--aggregator", agg.address], None, log)
            assert third.returncode == 0, log.read_text()[-3000:]
            report = json.loads((out / "report.json").read_text())
            assert [r["round"] for r in report["rounds"]] == [1, 2, 3, 4]
            assert report["final_accuracy"] > 0.75
            check_ledger(Path(agg.db), report, nodes)
            check_sums_hold_only_their_members(report, nodes)
        finally:
            stop_nodes(nodes)


def test_a_job_whose_driver_never_returns_is_cancelled_after_its_lease_and_pays_nothing_unpublished(tmp_path: Path) -> None:
    train, test = public_split("digits", seed=0)
    val = tmp_path / "val.npz"
    save_npz(val, test)
    spec = tmp_path / "job.toml"
    spec.write_text(JOB_TOML.format(lease=3))
    out, log = tmp_path / "out", tmp_path / "driver.log"
    with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool") as agg:
        nodes = start_nodes(agg.address, tmp_path, train)
        try:
            gone = _train([str(spec), "--aggregator", agg.address, "--out", str(out), "--validation", str(val)], "driver_valued@2", log)
            assert gone.returncode == -signal.SIGKILL
            job_id = json.loads((out / "job.json").read_text())["job_id"]
            assert agg.agg is not None
            end = time.monotonic() + 30
            while agg.agg.store.job(job_id).state != "cancelled" and time.monotonic() < end:
                time.sleep(0.2)
            row = agg.agg.store.job(job_id)
            assert row.state == "cancelled" and "lease" in row.message
            assert {r["round"] for r in agg.agg.store.ledger_rows(job_id)} == {1}  # round 2 was never published
            late = _train(["--resume", str(out), "--aggregator", agg.address], None, log)
            assert late.returncode != 0 and "cancelled" in log.read_text()
        finally:
            stop_nodes(nodes)


def test_jobs_cancel_ends_a_running_job_through_the_aggregator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fedgpu.cli.main import main

    _, test = public_split("digits", seed=0)
    with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool") as agg:
        driver = JobDriver(agg.address, job(rounds=50), tmp_path / "out", validation=test)
        driver.submit()  # no node is running: the job waits for nodes
        assert main(["jobs", "cancel", "--out", str(tmp_path / "out"), "--aggregator", agg.address, "--reason", "test over"]) == 0
        assert "cancelled: test over" in capsys.readouterr().out
        assert main(["jobs", "list", "--db", agg.db]) == 0
        assert driver.job_id in capsys.readouterr().out
        with pytest.raises(RoundFailed, match="cancelled"):
            driver.run()


def test_a_request_signed_before_a_restart_is_refused_after_it(tmp_path: Path) -> None:
    ident = Identity.generate()
    captured: list[node_pb2.HeartbeatRequest] = []
    for life in range(2):
        with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool") as agg, open_channel(agg.address, TLSConfig()) as channel:
                stub = node_pb2_grpc.NodeServiceStub(channel)
                if life == 0:
                    reg = node_pb2.RegisterRequest(public_key=ident.public_key, name="r", capabilities=node_pb2.Capabilities(), protocol_version=PROTOCOL_VERSION)
                    ident.sign("Register", reg)
                    stub.Register(reg)
                    hb = node_pb2.HeartbeatRequest()
                    ident.sign("Heartbeat", hb)
                    stub.Heartbeat(hb)
                    captured.append(hb)
                    with pytest.raises(grpc.RpcError) as err:  # the same process remembers the nonce
                        stub.Heartbeat(hb)
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                else:
                    with pytest.raises(grpc.RpcError) as err:  # a new process: refused by the boot time
                        stub.Heartbeat(captured[0])
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert "before the aggregator started" in (err.value.details() or "")
                    fresh = node_pb2.HeartbeatRequest()
                    ident.sign("Heartbeat", fresh)
                    stub.Heartbeat(fresh)  # a request signed now is served
