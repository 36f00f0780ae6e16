"""Bounded claims end to end: a node's garbage or inflated weight spoils its own cohort only.

Real gRPC on 127.0.0.1: honest node threads, hand-driven hostile nodes and the job driver. Each
attacked job is compared with the same job without the attackers (same node names, data and seeds, so
that the honest nodes train alike): it completes, ends within a point of the clean run's accuracy, and
names the dropped cohort in report.json.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedgpu.aggregator.local import LocalAggregator
from fedgpu.claims import ClaimBounds
from fedgpu.config import EncryptionConfig, JobConfig, PrivacyConfig
from fedgpu.crypto import ChunkLayout
from fedgpu.crypto.ckks_format import CkksParams, encode_payload
from fedgpu.datasets import partition_iid, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.node.agent import NodeAgent, NodeConfig
from fedgpu.proto.fedgpu.v1 import node_pb2
from fedgpu.wire.auth import Identity

from test_job import RawNode, job  # type: ignore[import-not-found]

ROUNDS = 3
Payloads = Callable[[node_pb2.Task, np.random.Generator], list[bytes]]


@pytest.fixture(scope="module")
def digits() -> tuple:  # type: ignore[type-arg]
    return public_split("digits", seed=0)


class Liar(NodeAgent):
    """Trains honestly, then claims 10^6 times its weight (w * delta and w alike) and skips the clamp."""

    def _bound(self, delta: np.ndarray, weight: float, bounds: Any) -> tuple[np.ndarray, float]:
        return delta, weight * 1e6


class GarbageNode:
    """A node that answers every task with well-formed garbage: right header, length and chunk count."""

    def __init__(self, address: str, tmp: Path, name: str, payloads: Payloads) -> None:
        self.raw = RawNode(address, tmp, name)
        self.payloads = payloads
        self.uploads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def node_id(self) -> str:
        return str(self.raw.id.node_id)

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        while not self._stop.is_set():
            try:
                req = node_pb2.PullTaskRequest(wait_seconds=1)
                self.raw.id.sign("PullTask", req)
                reply = self.raw.stub.PullTask(req)
                if reply.HasField("task"):
                    self.raw.upload(reply.task, self.payloads(reply.task, rng))
                    self.uploads += 1
            except grpc.RpcError:
                if self._stop.wait(0.2):
                    return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.raw.channel.close()


def ckks_garbage(task: node_pb2.Task, rng: np.random.Generator) -> list[bytes]:
    """Random coefficients under a valid header and parameters tag: the aggregator cannot tell."""
    params = CkksParams.from_bytes(task.encryption.params)
    layout = ChunkLayout(int(task.num_params), int(task.encryption.values_per_chunk))
    out = []
    for i in range(layout.num_chunks):
        values = layout.chunk_values(i)
        count = math.ceil(values / params.values_per_ciphertext) * params.poly_modulus_degree
        c0 = rng.integers(0, 2**params.c0_bits, count, dtype=np.uint64)
        c1 = rng.integers(0, 2**params.c1_bits, count, dtype=np.uint64)
        out.append(encode_payload(params, values, c0, c1))
    return out


def plain_garbage(task: node_pb2.Task, rng: np.random.Generator) -> list[bytes]:
    """Huge finite float32 values everywhere, the weight slot included (NaN would be refused on upload)."""
    layout = ChunkLayout(int(task.num_params), int(task.encryption.values_per_chunk))
    return [rng.uniform(-1e30, 1e30, layout.chunk_values(i)).astype("<f4").tobytes() for i in range(layout.num_chunks)]


@pytest.fixture
def honest_data(tmp_path: Path, digits) -> list[Path]:  # type: ignore[no-untyped-def]
    train, _ = digits
    files = []
    for i, idx in enumerate(partition_iid(len(train), 3, seed=1)):
        f = tmp_path / f"node{i}.npz"
        save_npz(f, train.subset(idx))
        files.append(f)
    return files


@pytest.fixture
def fresh_aggregator(tmp_path: Path) -> Iterator[Callable[[str], LocalAggregator]]:
    """Aggregators on their own databases, so that one test runs the clean and the attacked job."""
    made: list[LocalAggregator] = []

    def make(name: str) -> LocalAggregator:
        agg = LocalAggregator(str(tmp_path / f"{name}.db"), tmp_path / f"{name}-spool").start()
        made.append(agg)
        return agg

    yield make
    for agg in made:
        agg.stop()


def run_job(agg: LocalAggregator, tmp: Path, files: list[Path], cfg: JobConfig, validation, liar: bool = False) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The job with honest nodes node0..node2 (named, so that every run trains them alike) and optionally the liar."""
    agents = []
    for i, f in enumerate(files):
        agents.append(NodeAgent(NodeConfig(aggregator=agg.address, data={"digits": f}, identity_path=tmp / f"node{i}" / "id.pem", name=f"node{i}", poll_seconds=1)))
    if liar:
        agents.append(Liar(NodeConfig(aggregator=agg.address, data={"digits": files[0]}, identity_path=tmp / "liar" / "id.pem", name="liar", poll_seconds=1)))
    threads = [threading.Thread(target=a.run, daemon=True) for a in agents]
    for th in threads:
        th.start()
    try:
        return JobDriver(agg.address, cfg, tmp / "out", validation=validation).run()
    finally:
        for a in agents:
            a.stop()
        for a, th in zip(agents, threads, strict=True):
            th.join(15)
            a.channel.close()


def assert_dropped_every_round(report: dict[str, Any], out: Path, node_id: str, rule: str) -> None:
    saved = json.loads((out / "report.json").read_text())
    assert [r["round"] for r in saved["rounds"]] == list(range(1, ROUNDS + 1))
    for rec in saved["rounds"]:
        hits = [d for d in rec["dropped_cohorts"] if node_id in d["members"]]
        assert len(hits) == 1, rec["dropped_cohorts"]
        d = hits[0]
        assert d["rule"] == rule and d["reason"]
        assert rec["cohorts"][d["cohort"]] == d["members"]  # the index is the round's cohort index
        assert d["cohort"] in rec["excluded_cohorts"]
        v = rec["valuation"]
        assert v["cohort_values"][d["cohort"]] == 0.0
        assert v["node_values"][node_id] == 0.0 and v["rewards"][node_id] == 0.0
        assert len(v["cohort_values"]) == len(rec["cohorts"]) == len(rec["cohort_weights"])
    assert saved["nodes"][node_id]["reward"] == 0.0


def assert_ledger_pays_nothing(agg: LocalAggregator, job_id: str, node_id: str, rounds: int = ROUNDS) -> None:
    """The node is in the ledger every round (a participant), paid and valued 0."""
    assert agg.agg is not None
    rows = [r for r in agg.agg.store.ledger_rows(job_id) if r["node_id"] == node_id]
    assert len(rows) == rounds and all(r["reward"] == 0.0 and r["value"] == 0.0 for r in rows)


def claims_job(scheme: str, nodes: int) -> JobConfig:
    return job(rounds=ROUNDS, nodes_per_round=nodes, min_nodes=nodes, cohort_size=1, encryption=EncryptionConfig(scheme))


def test_a_node_sending_random_ckks_ciphertexts_spoils_only_its_cohort(fresh_aggregator, tmp_path: Path, digits, honest_data) -> None:  # type: ignore[no-untyped-def]
    _, test = digits
    clean = run_job(fresh_aggregator("clean"), tmp_path / "clean", honest_data, claims_job("ckks", 3), test)
    agg = fresh_aggregator("attacked")
    garbage = GarbageNode(agg.address, tmp_path, "garbage", ckks_garbage)
    try:
        attacked = run_job(agg, tmp_path / "attacked", honest_data, claims_job("ckks", 4), test)
    finally:
        garbage.stop()
    assert garbage.uploads >= ROUNDS
    assert clean["final_accuracy"] >= 0.85
    assert abs(attacked["final_accuracy"] - clean["final_accuracy"]) <= 0.01, (clean["final_accuracy"], attacked["final_accuracy"])
    assert_dropped_every_round(attacked, tmp_path / "attacked" / "out", garbage.node_id, "weight_out_of_range")
    assert_ledger_pays_nothing(agg, attacked["job"], garbage.node_id)


def test_a_node_claiming_a_million_times_its_weight_and_one_sending_huge_floats_spoil_only_their_cohorts(  # type: ignore[no-untyped-def]
    fresh_aggregator, tmp_path: Path, digits, honest_data
) -> None:
    _, test = digits
    clean = run_job(fresh_aggregator("clean"), tmp_path / "clean", honest_data, claims_job("none", 3), test)
    agg = fresh_aggregator("attacked")
    garbage = GarbageNode(agg.address, tmp_path, "garbage", plain_garbage)
    try:
        attacked = run_job(agg, tmp_path / "attacked", honest_data, claims_job("none", 5), test, liar=True)
    finally:
        garbage.stop()
    assert clean["final_accuracy"] >= 0.85
    assert abs(attacked["final_accuracy"] - clean["final_accuracy"]) <= 0.01, (clean["final_accuracy"], attacked["final_accuracy"])
    liar = Identity.load_or_create(tmp_path / "attacked" / "liar" / "id.pem").node_id
    out = tmp_path / "attacked" / "out"
    assert_dropped_every_round(attacked, out, liar, "weight_out_of_range")
    assert_dropped_every_round(attacked, out, garbage.node_id, "weight_out_of_range")
    for node in (liar, garbage.node_id):
        assert_ledger_pays_nothing(agg, attacked["job"], node)


def test_a_round_whose_every_cohort_fails_publishes_the_model_unchanged(aggregator, tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    _, test = digits
    attackers = [GarbageNode(aggregator.address, tmp_path, f"garbage{i}", plain_garbage) for i in range(2)]
    cfg = job(rounds=2, nodes_per_round=2, min_nodes=2, cohort_size=1)
    driver = JobDriver(aggregator.address, cfg, tmp_path / "out", validation=test)
    before = {k: v.clone() for k, v in driver.state.items()}
    try:
        report = driver.run()
    finally:
        for g in attackers:
            g.stop()
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    for rec in report["rounds"]:
        assert sorted(d["cohort"] for d in rec["dropped_cohorts"]) == [0, 1]
        assert rec["excluded_cohorts"] == [0, 1]
        assert rec["accuracy"] == report["rounds"][0]["accuracy"]
        assert set(rec["valuation"]["rewards"]) == {g.node_id for g in attackers}
        assert not any(rec["valuation"]["rewards"].values())
    assert all(bool((driver.state[k] == v).all()) for k, v in before.items())  # the model never moved
    assert report["valuation"]["unspent"] == pytest.approx(2 * cfg.rewards.pool_per_round)  # the pools carry over
    for g in attackers:
        assert_ledger_pays_nothing(aggregator, report["job"], g.node_id, rounds=2)



def test_honest_nodes_clamp_their_claims_to_the_task(tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    """The agent's last step before encrypting: weight min(claimed, cap), change scaled to norm <= B."""
    train, _ = digits
    f = tmp_path / "d.npz"
    save_npz(f, train)
    agent = NodeAgent(NodeConfig(aggregator="127.0.0.1:1", data={"digits": f}, identity_path=tmp_path / "id.pem", weight_scale=1.0))
    try:
        delta, weight = agent._bound(np.full(100, 1.0), float(len(train)), ClaimBounds(5.0, 2.0))
        assert weight == 5.0 and float(np.linalg.norm(delta)) == pytest.approx(2.0)
    finally:
        agent.channel.close()


def test_honest_nodes_under_client_level_dp_pass_the_check(fresh_aggregator, tmp_path: Path, digits, honest_data) -> None:  # type: ignore[no-untyped-def]
    """B defaults to the clip, and the driver allows for the members' noise shares: no honest cohort is dropped."""
    _, test = digits
    privacy = PrivacyConfig(enabled=True, epsilon=100.0, mode="client", client_clip=0.5, client_noise_multiplier=1.0)
    for k in (1, 3):
        cfg = job(rounds=2, nodes_per_round=3, min_nodes=3, cohort_size=k, privacy=privacy)
        assert cfg.claim_bounds.update_norm_bound == 0.5
        report = run_job(fresh_aggregator(f"k{k}"), tmp_path / f"k{k}", honest_data, cfg, test)
        assert [r["dropped_cohorts"] for r in report["rounds"]] == [[], []]
