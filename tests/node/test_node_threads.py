"""NodeThreads: agents run as threads of one process and leave nothing running after the block."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fedgpu.aggregator.local import LocalAggregator
from fedgpu.datasets import public_split, save_npz
from fedgpu.node.agent import NodeConfig
from fedgpu.node.threads import NodeThreads


def test_leaving_the_block_stops_and_joins_every_agent_even_when_it_raises(tmp_path: Path) -> None:
    train, _ = public_split("digits", seed=0)
    save_npz(tmp_path / "d.npz", train)
    with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool") as agg:
        nodes = NodeThreads(join_seconds=20)
        with pytest.raises(RuntimeError), nodes:
            for i in range(2):
                nodes.start(NodeConfig(aggregator=agg.address, data={"digits": tmp_path / "d.npz"}, identity_path=tmp_path / f"n{i}" / "id.pem", name=f"n{i}", poll_seconds=1))
            assert sum(t.name in ("n0", "n1") and t.is_alive() for t in threading.enumerate()) == 2
            raise RuntimeError("the run failed")
        assert not any(t.name in ("n0", "n1") and t.is_alive() for t in threading.enumerate())
        assert [a.cfg.name for a in nodes.agents] == ["n0", "n1"]
