"""Encrypted jobs end to end: the aggregator holds no key and no plaintext update; k is enforced."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedgpu.config import EncryptionConfig
from fedgpu.datasets import partition_iid, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.errors import StateError
from fedgpu.node.agent import NodeAgent, NodeConfig
from fedgpu.proto.fedgpu.v1 import driver_pb2, node_pb2
from fedgpu.wire import chunks

from test_job import RawNode, job, stop_nodes  # type: ignore[import-not-found]


def recording_nodes(address: str, tmp: Path, train, n: int, sent: list) -> list:  # type: ignore[no-untyped-def]
    """Honest nodes that also remember the plaintext update they encrypted (to look for it later)."""
    out = []
    for i, idx in enumerate(partition_iid(len(train), n, seed=1)):
        f = tmp / f"node{i}.npz"
        save_npz(f, train.subset(idx))

        def hook(task, start, delta):  # type: ignore[no-untyped-def]
            sent.append(delta.copy())
            return delta

        agent = NodeAgent(NodeConfig(aggregator=address, data={"digits": f}, identity_path=tmp / f"node{i}" / "id.pem", poll_seconds=1, update_hook=hook))
        th = threading.Thread(target=agent.run, daemon=True)
        th.start()
        out.append((agent, th))
    return out


def windows(arr: np.ndarray, dtype: str) -> list[bytes]:
    raw = np.ascontiguousarray(arr, dtype=dtype).tobytes()
    mid = len(raw) // 2
    return [raw[mid : mid + 64], raw[:64]]


def test_ckks_job_keeps_the_aggregator_blind(aggregator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, test = public_split("digits", seed=0)
    sent: list[np.ndarray] = []
    nodes = recording_nodes(aggregator.address, tmp_path, train, 3, sent)
    try:
        report = JobDriver(aggregator.address, job(rounds=3, encryption=EncryptionConfig("ckks")), tmp_path / "out", validation=test).run()
    finally:
        stop_nodes(nodes)
    assert report["final_accuracy"] >= 0.85
    assert report["encryption"] == "ckks"
    per_node = report["rounds"][-1]["bytes_up_by_node"]
    # 13.5 B/param on the wire plus the padding of the last ciphertext (3 x 4096 slots for 10k values)
    assert all(12 * report["params"] < b < 18 * report["params"] for b in per_node.values())
    secret = (tmp_path / "out" / "keys" / "ckks.secret").read_bytes()
    assert (tmp_path / "out" / "keys" / "ckks.secret").stat().st_mode & 0o077 == 0
    db = Path(aggregator.db).read_bytes() + b"".join(p.read_bytes() for p in Path(aggregator.db).parent.glob("agg.db*"))
    spool = b"".join(p.read_bytes() for p in Path(aggregator.spool).rglob("*") if p.is_file())
    seen = db + spool
    assert secret[100:164] not in seen and secret[-64:] not in seen
    assert len(sent) == 9
    for delta in sent:
        for w in windows(delta, "<f4") + windows(delta, "<f8") + windows(delta * 0.480, "<f8"):
            assert w not in seen
    spec = aggregator.agg.store.job(report["job"]).spec
    assert secret[100:164] not in spec


@pytest.mark.slow
def test_sums_of_fewer_than_k_are_never_released(aggregator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, test = public_split("digits", seed=0)
    sent: list = []
    nodes = recording_nodes(aggregator.address, tmp_path, train, 3, sent)
    raw = RawNode(aggregator.address, tmp_path, "dropout")
    cfg = job(rounds=1, nodes_per_round=4, min_nodes=3, cohort_size=2, deadline_seconds=8, encryption=EncryptionConfig("none"))
    driver = JobDriver(aggregator.address, cfg, tmp_path / "out", validation=test)
    result: dict = {}
    th = threading.Thread(target=lambda: result.update(driver.run()))
    th.start()
    raw.pull()  # takes a task, never answers: its cohort of 2 shrinks to 1
    th.join(90)
    stop_nodes(nodes)
    raw.channel.close()
    rnd = result["rounds"][0]
    assert raw.id.node_id not in rnd["participants"]
    assert all(len(c) >= 2 for c in rnd["cohorts"])  # the lone survivor was merged, not released alone
    assert sorted(m for c in rnd["cohorts"] for m in c) == sorted(rnd["participants"])
    with pytest.raises(StateError, match="refusing to release"):
        aggregator.agg.cohort_sums(result["job"], 1, k=4)  # the store's last line of defence
    with pytest.raises(grpc.RpcError) as err:
        list(driver.stub.FetchCohortSums(driver_pb2.FetchCohortSumsRequest(job_id=driver.job_id, token=driver.token, round=1)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # published: the sums are gone
    with pytest.raises(grpc.RpcError) as err:
        list(driver.stub.FetchCohortSums(driver_pb2.FetchCohortSumsRequest(job_id=driver.job_id, token="0" * 64, round=1)))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.slow
def test_replayed_chunk_is_refused(aggregator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, test = public_split("digits", seed=0)
    raw = RawNode(aggregator.address, tmp_path, "replayer")
    from fedgpu.crypto.plain import PlainKeyPair

    cfg = job(rounds=1, nodes_per_round=1, min_nodes=1, deadline_seconds=10)
    th = threading.Thread(target=lambda: JobDriver(aggregator.address, cfg, tmp_path / "out", validation=test, keys=PlainKeyPair(2_000)).run(), daemon=True)
    th.start()
    task = raw.pull()
    m = node_pb2.UpdateChunk(task_id=task.task_id, fingerprint=task.encryption.fingerprint, chunk=chunks.make_chunk(0, task.num_chunks, np.zeros(2_000, np.float32).tobytes()))
    raw.id.sign("UploadUpdate", m)
    raw.stub.UploadUpdate(iter([m]))
    with pytest.raises(grpc.RpcError) as err:  # the very same signed message again
        raw.stub.UploadUpdate(iter([m]))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "replayed" in err.value.details()
    raw.id.sign("UploadUpdate", m)  # freshly signed, but a chunk index already received
    with pytest.raises(grpc.RpcError) as err:
        raw.stub.UploadUpdate(iter([m]))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "already received" in err.value.details()
    status = node_pb2.UploadStatusRequest(task_id=task.task_id)
    raw.id.sign("UploadStatus", status)
    assert raw.stub.UploadStatus(status).received == 1  # resumable: the node continues at chunk 1
    raw.channel.close()
    th.join(30)
