"""What a round leaves behind: its sums as files until its model is published, and a database that does not grow."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from fedgpu.aggregator.local import LocalAggregator
from fedgpu.aggregator.released import RELEASED
from fedgpu.config import EncryptionConfig, JobConfig, TrainingConfig
from fedgpu.datasets import partition_iid, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.node.agent import NodeConfig
from fedgpu.node.threads import NodeThreads


def test_each_round_keeps_only_its_unpublished_sums_and_the_database_stays_flat(aggregator: LocalAggregator, tmp_path: Path) -> None:
    train, test = public_split("digits", seed=0)
    db = Path(aggregator.db)
    released = tmp_path / "spool" / RELEASED
    seen: list[tuple[int, list[str], int, int]] = []  # round, folders of sums left, database bytes in use, blob tables

    def progress(ev: dict[str, Any]) -> None:
        if ev["event"] == "round":
            with sqlite3.connect(db) as c:  # pages in use, through the WAL (the files grow until a checkpoint)
                blobs = c.execute("select count(*) from sqlite_master where type = 'table' and name = 'cohort_sums'").fetchone()[0]
                pages = c.execute("pragma page_count").fetchone()[0] - c.execute("pragma freelist_count").fetchone()[0]
                size = pages * c.execute("pragma page_size").fetchone()[0]
            seen.append((ev["round"], sorted(p.name for p in released.iterdir()), size, blobs))

    # k = 2: two cohorts of two, so a sum is an update turned accumulator plus one added in place, then released.
    cfg = JobConfig(
        name="flat", model="digits_cnn", dataset="digits", rounds=5, nodes_per_round=4, min_nodes=4, cohort_size=2, deadline_seconds=30,
        seed=0, training=TrainingConfig(epochs=2, batch_size=16, lr=0.05), encryption=EncryptionConfig("ckks"),
    ).validate()
    with NodeThreads(join_seconds=15) as nodes:
        for i, idx in enumerate(partition_iid(len(train), 4, seed=1)):
            f = tmp_path / f"node{i}.npz"
            save_npz(f, train.subset(idx))
            nodes.start(NodeConfig(aggregator=aggregator.address, data={"digits": f}, identity_path=tmp_path / f"node{i}" / "id.pem", poll_seconds=1))
        report = JobDriver(aggregator.address, cfg, tmp_path / "out", validation=test, progress=progress).run()
    assert report["final_accuracy"] >= 0.8  # the sums added up
    assert [r for r, *_ in seen] == [1, 2, 3, 4, 5]
    for rnd, folders, _, blobs in seen:  # published: its folder is gone; at most the next round's waits
        assert blobs == 0 and all(f"-r{rnd + 1}-" in name for name in folders), (rnd, folders)
    sizes = [size for *_, size, _ in seen]
    bytes_up = report["rounds"][-1]["bytes_up"]
    assert max(sizes[2:]) - sizes[1] < bytes_up / 4, sizes  # a round's uploads are ~4x what any database growth may be
    assert not any(released.iterdir())  # the job is done: nothing kept
