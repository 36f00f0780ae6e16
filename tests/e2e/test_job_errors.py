"""Errors that name their cause, where the ML team and the node operator see them (issue #17, item 4)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from fedgpu.datasets import public_split
from fedgpu.driver.driver import JobDriver
from fedgpu.errors import RoundFailed
from fedgpu.proto.fedgpu.v1 import node_pb2, node_pb2_grpc
from fedgpu.wire import PROTOCOL_VERSION
from fedgpu.wire.auth import Identity
from fedgpu.wire.transport import open_channel

from test_job import job, start_nodes, stop_nodes  # type: ignore[import-not-found]


@pytest.fixture(scope="module")
def digits() -> tuple:
    return public_split("digits", seed=0)


def register(address: str, tmp: Path, name: str, models: list[str], datasets: list[str], stop: threading.Event) -> threading.Thread:
    """A node that says what it has and then only heartbeats (registering alone is no sign of life), until ``stop``."""
    channel = open_channel(address)
    stub = node_pb2_grpc.NodeServiceStub(channel)
    ident = Identity.load_or_create(tmp / f"{name}.pem")
    caps = node_pb2.Capabilities(models=models, datasets=datasets)
    req = node_pb2.RegisterRequest(public_key=ident.public_key, name=name, capabilities=caps, protocol_version=PROTOCOL_VERSION)
    ident.sign("Register", req)
    stub.Register(req, timeout=10)

    def beat() -> None:
        try:
            while not stop.is_set():
                hb = node_pb2.HeartbeatRequest()
                ident.sign("Heartbeat", hb)
                stub.Heartbeat(hb, timeout=10)
                stop.wait(1.0)
        finally:
            channel.close()

    th = threading.Thread(target=beat, daemon=True)
    th.start()
    return th


@pytest.mark.parametrize(
    ("models", "datasets", "expect"),
    [
        (["digits_cnn"], ["digits"], "no live node has model `mlp`: the 2 live nodes have digits_cnn"),
        (["mlp"], ["mnist1d"], "dataset schema mismatch: the job trains on `digits`, but the 2 live nodes with model `mlp` serve only mnist1d"),
    ],
)
def test_a_job_no_live_node_can_serve_fails_within_one_deadline(  # type: ignore[no-untyped-def]
    aggregator, tmp_path: Path, digits, models: list[str], datasets: list[str], expect: str
) -> None:
    stop = threading.Event()
    beats = [register(aggregator.address, tmp_path, f"n{i}", models, datasets, stop) for i in range(2)]
    out = tmp_path / "out"
    t0 = time.monotonic()
    try:
        with pytest.raises(RoundFailed, match=expect.replace("(", r"\(")):
            JobDriver(aggregator.address, job(rounds=2, model="mlp", deadline_seconds=6), out, validation=digits[1]).run()
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        for th in beats:
            th.join(10)
    assert elapsed < 6 + 4  # one wait of the deadline (plus setup under load), not the two (12 s) of a full attempt, nor retries
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and expect in report["error"]


def test_waiting_for_nodes_says_how_many_there_are(aggregator, tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    train, test = digits
    nodes = start_nodes(aggregator.address, tmp_path, train, 1)  # min_nodes is 2
    events: list[dict] = []
    driver = JobDriver(aggregator.address, job(rounds=1, deadline_seconds=1), tmp_path / "out", validation=test, progress=events.append)

    def stop_after_a_retry() -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end and not any(e["event"] == "retry" for e in events):
            time.sleep(0.1)
        driver.abort("test: seen the retry")

    watcher = threading.Thread(target=stop_after_a_retry)
    watcher.start()
    try:
        with pytest.raises(RoundFailed, match="seen the retry"):
            driver.run()
    finally:
        watcher.join()
        stop_nodes(nodes)
    retry = next(e for e in events if e["event"] == "retry")
    assert "1 ready of the 2 needed" in retry["message"]
    assert "1 live nodes, 1 with model digits_cnn, 1 of them with dataset digits, 0 declined" in retry["message"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "stopped" and "seen the retry" in report["error"]


def test_a_second_node_process_with_the_same_identity_is_refused_naming_its_home(aggregator, tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    from fedgpu.datasets import save_npz
    from fedgpu.errors import StateError
    from fedgpu.node.agent import NodeAgent, NodeConfig

    train, _ = digits
    save_npz(tmp_path / "d.npz", train)
    first = start_nodes(aggregator.address, tmp_path, train, 1)
    first_agent = first[0][0]
    try:
        end = time.monotonic() + 20
        while aggregator.agg is not None and first_agent.node_id not in aggregator.agg.registry.sessions:
            assert time.monotonic() < end
            time.sleep(0.1)
        home = first_agent.cfg.identity_path.parent
        cfg = NodeConfig(aggregator=aggregator.address, data={"digits": tmp_path / "d.npz"}, identity_path=first_agent.cfg.identity_path, poll_seconds=1, identity_wait=1.0)
        second = NodeAgent(cfg)
        assert second.node_id == first_agent.node_id
        with pytest.raises(StateError, match=rf"already live in another process.*--home {home}"):
            second.run()
        second.channel.close()
    finally:
        stop_nodes(first)
