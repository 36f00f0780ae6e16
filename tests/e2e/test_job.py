"""End-to-end jobs over real gRPC sockets on 127.0.0.1: honest nodes, vanishing and malicious ones."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from safetensors.torch import load_file

from fedgpu.config import EncryptionConfig, JobConfig, TrainingConfig
from fedgpu.crypto.plain import PlainKeyPair
from fedgpu.datasets import partition_iid, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.node.agent import NodeAgent, NodeConfig
from fedgpu.proto.fedgpu.v1 import node_pb2, node_pb2_grpc
from fedgpu.wire import PROTOCOL_VERSION, chunks
from fedgpu.wire.auth import Identity
from fedgpu.wire.transport import TLSConfig, open_channel


@pytest.fixture(scope="module")
def digits() -> tuple:
    return public_split("digits", seed=0)


def start_nodes(address: str, tmp: Path, train, n: int, tls: TLSConfig | None = None) -> list[tuple[NodeAgent, threading.Thread]]:
    out = []
    for i, idx in enumerate(partition_iid(len(train), n, seed=1)):
        f = tmp / f"node{i}.npz"
        save_npz(f, train.subset(idx))
        cfg = NodeConfig(aggregator=address, data={"digits": f}, identity_path=tmp / f"node{i}" / "id.pem", poll_seconds=1, tls=tls or TLSConfig())
        agent = NodeAgent(cfg)
        th = threading.Thread(target=agent.run, daemon=True)
        th.start()
        out.append((agent, th))
    return out


def stop_nodes(nodes: list[tuple[NodeAgent, threading.Thread]]) -> None:
    for agent, _ in nodes:
        agent.stop()
    for agent, th in nodes:
        th.join(15)
        agent.channel.close()


def job(rounds: int = 3, **kw) -> JobConfig:  # type: ignore[no-untyped-def]
    base = dict(
        name="test", model="digits_cnn", dataset="digits", rounds=rounds, nodes_per_round=3, min_nodes=2,
        deadline_seconds=20, seed=0, training=TrainingConfig(epochs=3, batch_size=16, lr=0.05), encryption=EncryptionConfig("none"),
    )
    base.update(kw)
    return JobConfig(**base).validate()


class RawNode:
    """A node speaking the protocol by hand, to misbehave in precise ways."""

    def __init__(self, address: str, tmp: Path, name: str, tls: TLSConfig | None = None) -> None:
        self.channel = open_channel(address, tls)
        self.stub = node_pb2_grpc.NodeServiceStub(self.channel)
        self.id = Identity.load_or_create(tmp / f"{name}.pem")
        req = node_pb2.RegisterRequest(public_key=self.id.public_key, name=name, capabilities=node_pb2.Capabilities(models=["digits_cnn"], datasets=["digits"]), protocol_version=PROTOCOL_VERSION)
        self.id.sign("Register", req)
        self.stub.Register(req)

    def pull(self) -> node_pb2.Task:
        while True:
            req = node_pb2.PullTaskRequest(wait_seconds=1)
            self.id.sign("PullTask", req)
            r = self.stub.PullTask(req)
            if r.HasField("task"):
                return r.task

    def upload(self, task: node_pb2.Task, payloads: list[bytes], tamper: Callable[[node_pb2.UpdateChunk], None] | None = None) -> node_pb2.UploadReply:
        def msgs():  # type: ignore[no-untyped-def]
            for i, p in enumerate(payloads):
                m = node_pb2.UpdateChunk(task_id=task.task_id, fingerprint=task.encryption.fingerprint, chunk=chunks.make_chunk(i, task.num_chunks, p))
                if tamper:
                    tamper(m)
                self.id.sign("UploadUpdate", m)
                yield m

        return self.stub.UploadUpdate(msgs())


def run_driver(address: str, cfg: JobConfig, out: Path, validation, **kw) -> dict:  # type: ignore[no-untyped-def]
    return JobDriver(address, cfg, out, validation=validation, **kw).run()


def test_full_job_trains_a_model(tls_aggregator, certs, tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    """The main path, over TLS as in production (the other tests here keep the loopback cleartext path tested)."""
    train, test = digits
    tls = TLSConfig(ca=certs.ca)
    nodes = start_nodes(tls_aggregator.address, tmp_path, train, 3, tls)
    try:
        report = run_driver(tls_aggregator.address, job(rounds=4), tmp_path / "out", test, tls=tls)
    finally:
        stop_nodes(nodes)
    assert report["final_accuracy"] >= 0.85
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3, 4]
    assert report["rounds"][-1]["accuracy"] > report["rounds"][0]["accuracy"] - 0.02
    for r in report["rounds"]:
        assert len(r["participants"]) == 3 and len(r["cohorts"]) == 3
        # 10,026 float32 values + weight slot, in protobuf envelopes, per node
        assert 3 * 40_000 < r["bytes_up"] < 3 * 41_000
        assert r["bytes_down"] >= 3 * 40_000
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["final_accuracy"] == report["final_accuracy"]
    state = load_file(str(tmp_path / "out" / "model.safetensors"))  # weights only, no pickle
    assert sum(t.numel() for t in state.values()) == report["params"]


@pytest.mark.slow
def test_node_vanishing_mid_upload_is_left_out(aggregator, tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    train, test = digits
    keys = PlainKeyPair(values_per_chunk=2_000)  # several chunks per update
    nodes = start_nodes(aggregator.address, tmp_path, train, 2)
    raw = RawNode(aggregator.address, tmp_path, "vanisher")
    result: dict = {}
    drv = threading.Thread(target=lambda: result.update(run_driver(aggregator.address, job(rounds=1, deadline_seconds=6), tmp_path / "out", test, keys=keys)))
    drv.start()
    task = raw.pull()
    assert task.num_chunks > 2
    good = np.zeros(2_000, np.float32).tobytes()
    with pytest.raises(grpc.RpcError):
        # Send two chunks, then die: the stream is cancelled mid-upload.
        def two_then_die():  # type: ignore[no-untyped-def]
            for i in range(2):
                m = node_pb2.UpdateChunk(task_id=task.task_id, fingerprint=task.encryption.fingerprint, chunk=chunks.make_chunk(i, task.num_chunks, good))
                raw.id.sign("UploadUpdate", m)
                yield m
            raise RuntimeError("node killed")

        raw.stub.UploadUpdate(two_then_die())
    raw.channel.close()
    drv.join(60)
    stop_nodes(nodes)
    rnd = result["rounds"][0]
    assert raw.id.node_id not in rnd["participants"]
    assert len(rnd["participants"]) == 2
    assert rnd["node_status"][raw.id.node_id].startswith("failed")
    assert not list((Path(aggregator.spool)).glob("*.part"))  # its partial upload was discarded


@pytest.mark.parametrize(
    "attack, expect",
    [
        ("tampered", "SHA-256"),
        ("wrong_shape", "wrong shape"),
        ("nan", "NaN"),
        ("other_context", "fingerprint"),
    ],
)
def test_bad_update_rejected_round_completes(aggregator, tmp_path: Path, digits, attack: str, expect: str) -> None:  # type: ignore[no-untyped-def]
    train, test = digits
    nodes = start_nodes(aggregator.address, tmp_path, train, 2)
    raw = RawNode(aggregator.address, tmp_path, "attacker")
    result: dict = {}
    drv = threading.Thread(target=lambda: result.update(run_driver(aggregator.address, job(rounds=1, deadline_seconds=120), tmp_path / "out", test)))
    drv.start()
    task = raw.pull()
    n = int(task.num_params) + 1
    payload = np.zeros(n, np.float32)
    tamper = None
    if attack == "tampered":
        tamper = lambda m: setattr(m.chunk, "data", m.chunk.data[:-4] + b"\x00\x00\x80\x3f")  # noqa: E731
    elif attack == "wrong_shape":
        payload = payload[:-10]
    elif attack == "nan":
        payload[5] = np.nan
    elif attack == "other_context":
        tamper = lambda m: setattr(m, "fingerprint", hashlib.sha256(b"another job").hexdigest())  # noqa: E731
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        raw.upload(task, [payload.tobytes()], tamper)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expect in err.value.details()
    drv.join(60)
    stop_nodes(nodes)
    raw.channel.close()
    rnd = result["rounds"][0]
    assert sorted(rnd["participants"]) == sorted(a.node_id for a, _ in nodes)
    assert rnd["node_status"][raw.id.node_id].startswith("failed")
    assert time.monotonic() - t0 < 60  # the round closed when the honest updates were in, not at its 120 s deadline
