"""A job with a robust rule through the real loop: the plan reaches the aggregator in the job spec, the
driver aggregates and values with it, and a sign-flipping poisoner is paid nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fedgpu.adversaries import apply_behaviour
from fedgpu.aggregator.local import LocalAggregator
from fedgpu.config import AggregationConfig, EncryptionConfig, JobConfig, RewardsConfig, TrainingConfig
from fedgpu.datasets import partition_iid, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.node.agent import NodeAgent, NodeConfig
from fedgpu.wire.records import AggregationPlan, JobSpec


@pytest.mark.e2e
def test_a_median_job_keeps_a_poisoner_out_and_unpaid(aggregator: LocalAggregator, tmp_path: Path) -> None:
    train, test = public_split("digits", seed=0)
    behaviours = ["honest", "honest", "honest", "signflip"]
    agents: list[tuple[NodeAgent, threading.Thread]] = []
    names: dict[str, str] = {}
    try:
        for i, (idx, behaviour) in enumerate(zip(partition_iid(len(train), len(behaviours), seed=1), behaviours, strict=True)):
            f = tmp_path / f"node{i}.npz"
            save_npz(f, train.subset(idx))
            cfg = NodeConfig(aggregator=aggregator.address, data={"digits": f}, identity_path=tmp_path / f"node{i}" / "id.pem", poll_seconds=1)
            apply_behaviour(cfg, behaviour)
            agent = NodeAgent(cfg)
            names[agent.node_id] = behaviour
            th = threading.Thread(target=agent.run, daemon=True)
            th.start()
            agents.append((agent, th))
        job = JobConfig(
            name="robust", model="digits_cnn", dataset="digits", rounds=3, nodes_per_round=4, min_nodes=4, cohort_size=1,
            deadline_seconds=30, seed=0, training=TrainingConfig(epochs=1, batch_size=16, lr=0.05), encryption=EncryptionConfig("none"),
            rewards=RewardsConfig(pool_per_round=100.0), aggregation=AggregationConfig("median"),
        ).validate()
        report = JobDriver(aggregator.address, job, tmp_path / "out", validation=test).run()
    finally:
        for agent, _ in agents:
            agent.stop()
        for agent, th in agents:
            th.join(15)
            agent.channel.close()

    async def stored_spec() -> JobSpec:
        assert aggregator.agg is not None
        return aggregator.agg.jobs.spec(report["job"])

    assert aggregator.call(stored_spec).aggregation == AggregationPlan("median", job.aggregation.trim_fraction, job.aggregation.norm_bound)
    poisoner = next(n for n, b in names.items() if b == "signflip")
    assert report["nodes"][poisoner]["reward"] in (None, 0.0)
    assert report["final_accuracy"] > 0.8, report["final_accuracy"]
