"""A public-data job end to end: nodes without files build their shards, a lazy node is caught by a spot check."""

from __future__ import annotations

from pathlib import Path

from fedgpu.adversaries import apply_behaviour
from fedgpu.config import EncryptionConfig, JobConfig, PublicDataConfig, TrainingConfig
from fedgpu.datasets import public_split
from fedgpu.driver.driver import JobDriver
from fedgpu.node.agent import NodeConfig
from fedgpu.node.threads import NodeThreads


def test_lazy_node_is_flagged_and_unpaid_while_honest_replicas_are_not(aggregator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with NodeThreads(join_seconds=15) as nodes:
        for i in range(4):
            cfg = NodeConfig(aggregator=aggregator.address, data={}, identity_path=tmp_path / f"node{i}" / "id.pem", poll_seconds=1, name=f"node{i}")
            if i == 3:
                apply_behaviour(cfg, "lazy")
            nodes.start(cfg)
        lazy = nodes.agents[3].node_id
        honest = {a.node_id for a in nodes.agents[:3]}
        # Every task replicated (four nodes: two pairs a round), so the lazy node meets a replica in round 1 and
        # a third node settles the dispute in round 2 (min_nodes 3: round 3 runs without it).
        job = JobConfig(
            name="public", model="digits_cnn", dataset="digits", rounds=3, nodes_per_round=4, min_nodes=3, deadline_seconds=60, seed=0,
            training=TrainingConfig(epochs=2, batch_size=16, lr=0.05), encryption=EncryptionConfig("ckks"),
            public_data=PublicDataConfig(enabled=True, shards=8, replication=1.0),
        ).validate()
        report = JobDriver(aggregator.address, job, tmp_path / "out", validation=public_split("digits", seed=0)[1]).run()
    ver = report["verification"]
    assert list(ver["flagged"]) == [lazy], ver
    assert ver["disputed"] >= 1 and ver["settled"] >= 1 and ver["matched"] >= 1
    r1 = report["rounds"][0]["replicas"]
    assert sorted(c["outcome"] for c in r1) == ["disputed", "match"]
    assert next(c for c in r1 if c["outcome"] == "disputed")["distance"] > 0.05
    assert next(c for c in r1 if c["outcome"] == "match")["distance"] < 1e-4  # honest replicas: only the CKKS noise apart
    assert report["rounds"][1]["flagged"] == [lazy]
    settled = report["rounds"][1]["replicas"][0]
    assert settled["outcome"] == "settled" and settled["flagged"] == [lazy]
    paid = report["rounds"][1]["valuation"]["rewards"]
    assert all(paid[n] > 0 for n in settled["members"] if n != lazy)  # the majority shares the disputed task's pay
    assert not (report["nodes"][lazy]["reward"] or 0.0)
    assert sum(report["nodes"][n]["reward"] or 0.0 for n in honest) > 0
    assert not any("flagged" in report["nodes"][n] for n in honest)
    assert lazy not in report["rounds"][2]["participants"]  # a flagged node gets no more of the job's tasks
    assert report["final_accuracy"] > 0.6
