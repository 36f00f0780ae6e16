"""A node's ``--data NAME=PATH`` under a built-in schema name whose file has another shape (issue #17):
the node starts, says so, and serves jobs that declare their own schema under that name."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from fedgpu.datasets import Schema
from fedgpu.errors import SchemaMismatch
from fedgpu.node.agent import NodeAgent, NodeConfig


def _task(schema: Schema | None) -> Any:
    return cast(Any, SimpleNamespace(dataset="digits", schema=schema, public_data=None))


def test_a_file_that_misses_the_built_in_schema_is_kept_for_jobs_that_declare_their_own(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    csv = tmp_path / "cells.csv"
    csv.write_text("a,b,c,label\n" + "".join(f"{i},{i % 3},{i * 2},{i % 2}\n" for i in range(20)))
    with caplog.at_level(logging.WARNING, logger="fedgpu.node"):
        agent = NodeAgent(NodeConfig(aggregator="127.0.0.1:1", data={"digits": csv}, identity_path=tmp_path / "id.pem", threads=1, device="cpu"))
    try:
        assert "checked against each job's declared schema" in caplog.text
        own = Schema("digits", (3,), 2, ("a", "b", "c"))
        ds = agent._dataset(_task(own))
        assert ds.x.shape == (20, 3) and set(ds.y.tolist()) == {0, 1}
        with pytest.raises(SchemaMismatch, match="--data digits"):  # a job on the built-in digits is declined, path kept private
            agent._dataset(_task(None))
    finally:
        agent.channel.close()
