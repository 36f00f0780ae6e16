"""A ckks job whose driver decrypts in worker processes: it trains as a serial driver does, its workers run
while it does, and none is left when it returns."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from fedgpu.config import EncryptionConfig, JobConfig, TrainingConfig
from fedgpu.datasets import partition_iid, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.node.agent import NodeAgent, NodeConfig


def decrypt_workers() -> list[int]:
    """This process's children that are decryption workers (zombies, reaped or not, are not running)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
        if fields[0] != "Z" and int(fields[1]) == os.getpid() and b"fedgpu.crypto.decrypt_pool" in cmdline:
            found.append(int(pid))
    return found


def test_a_ckks_job_decrypts_in_workers_and_leaves_none_behind(aggregator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
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
        name="ckks-workers", model="digits_cnn", dataset="digits", rounds=2, nodes_per_round=3, min_nodes=2, deadline_seconds=20,
        seed=0, training=TrainingConfig(epochs=3, batch_size=16, lr=0.05), encryption=EncryptionConfig("ckks"),
    ).validate()
    during: list[list[int]] = []

    def progress(ev: dict[str, Any]) -> None:
        if ev["event"] == "round":
            during.append(decrypt_workers())

    try:
        report = JobDriver(aggregator.address, cfg, tmp_path / "out", validation=test, progress=progress, decrypt_workers=2).run()
    finally:
        for agent, _ in nodes:
            agent.stop()
        for agent, th in nodes:
            th.join(15)
            agent.channel.close()
    assert report["status"] == "done" and len(report["rounds"]) == 2
    assert report["final_accuracy"] >= 0.8
    assert all(r["dropped_cohorts"] == [] for r in report["rounds"])
    assert [len(w) for w in during] == [2, 2]
    assert decrypt_workers() == []
