"""`fedgpu nodes` and `fedgpu node --status` against a real aggregator after a real job: measured, signed records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgpu.aggregator.local import LocalAggregator
from fedgpu.cli.main import main
from fedgpu.datasets import public_split
from fedgpu.driver.driver import JobDriver
from tests.e2e.test_job import job, start_nodes, stop_nodes

pytestmark = pytest.mark.e2e


def test_nodes_lists_what_completed_tasks_measured_signed_by_the_aggregator(aggregator: LocalAggregator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, test = public_split("digits", seed=0)
    nodes = start_nodes(aggregator.address, tmp_path, train, 3)
    try:
        report = JobDriver(aggregator.address, job(rounds=2, nodes_per_round=3, min_nodes=3), tmp_path / "out", validation=test).run()
    finally:
        stop_nodes(nodes)
    assert len(report["rounds"]) == 2
    capsys.readouterr()
    assert main(["nodes", "--aggregator", aggregator.address, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 3
    for r in records:
        rec = r["record"]
        assert rec["tasks"] == 2 and rec["misses"] == 0 and rec["bytes_up"] > 0
        assert rec["turnaround_seconds"] > rec["compute_seconds"] > 0 and rec["upload_seconds"] > 0
    assert main(["nodes", "--aggregator", aggregator.address]) == 0
    out = capsys.readouterr().out
    assert "all 3 records verified" in out and out.count("\n") == 5
    home = nodes[0][0].cfg.identity_path.parent
    # --status looks for HOME/identity.pem; the test's nodes keep theirs as id.pem
    (home / "identity.pem").write_bytes((home / "id.pem").read_bytes())
    assert main(["node", "--status", "--home", str(home), "--aggregator", aggregator.address]) == 0
    own = capsys.readouterr().out
    assert nodes[0][0].node_id in own and '"signature"' in own
    assert main(["node", "--status", "--home", str(tmp_path / "nowhere"), "--aggregator", aggregator.address]) != 0
