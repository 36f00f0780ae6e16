"""A bfv8 job end to end on 127.0.0.1: nodes quantise and encrypt with their task's seed, the
aggregator adds without a key, the driver decrypts and trains as well as in the clear."""

from __future__ import annotations

import threading
from pathlib import Path

from fedgpu.config import EncryptionConfig, JobConfig, TrainingConfig
from fedgpu.datasets import partition_iid, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.node.agent import NodeAgent, NodeConfig


def test_bfv8_job_trains_and_keeps_the_key_with_the_driver(aggregator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, test = public_split("digits", seed=0)
    nodes = []
    for i, idx in enumerate(partition_iid(len(train), 3, seed=1)):
        f = tmp_path / f"node{i}.npz"
        save_npz(f, train.subset(idx))
        agent = NodeAgent(NodeConfig(aggregator=aggregator.address, data={"digits": f}, identity_path=tmp_path / f"node{i}" / "id.pem", poll_seconds=1))
        th = threading.Thread(target=agent.run, daemon=True)
        th.start()
        nodes.append((agent, th))
    cfg = JobConfig(
        name="bfv8", model="digits_cnn", dataset="digits", rounds=3, nodes_per_round=3, min_nodes=2, deadline_seconds=20,
        seed=0, training=TrainingConfig(epochs=3, batch_size=16, lr=0.05), encryption=EncryptionConfig("bfv8"),
    ).validate()
    try:
        report = JobDriver(aggregator.address, cfg, tmp_path / "out", validation=test).run()
    finally:
        for agent, _ in nodes:
            agent.stop()
        for agent, th in nodes:
            th.join(15)
            agent.channel.close()
    assert report["encryption"] == "bfv8"
    # after its first upload each node made the next round's encryptions of zero while it waited; the sums above used them
    assert any(pool.used_ahead > 0 for agent, _ in nodes for pool in agent._zero_pools.values())
    assert report["final_accuracy"] >= 0.85
    per_node = report["rounds"][-1]["bytes_up_by_node"]
    # 4.5 B/param plus the padding of the last ciphertext (10k values fill 0.8 of one)
    assert all(4 * report["params"] < b < 8 * report["params"] for b in per_node.values())
    secret = tmp_path / "out" / "keys" / "bfv8.secret"
    assert secret.stat().st_mode & 0o077 == 0
    db = Path(aggregator.db).read_bytes()
    assert secret.read_bytes()[100:164] not in db
