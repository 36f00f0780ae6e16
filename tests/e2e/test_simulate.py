"""``fedgpu simulate`` through the CLI on a real local Ray: 20 nodes, 10 a round, cohorts of 2, two rounds, above chance."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedgpu.cli.main import main

JOB = """
name = "sim-test"
model = "cnn1d"
dataset = "mnist1d"
rounds = 2
nodes_per_round = 10
min_nodes = 4
deadline_seconds = 60
cohort_size = 2
seed = 0

[training]
epochs = 2
batch_size = 32
lr = 0.05

[encryption]
scheme = "{scheme}"

[rewards]
pool_per_round = {pool}
"""


@pytest.fixture(scope="module")
def ray() -> Iterator[Any]:
    """One local Ray for the module (starting one takes ~30 s on 2 loaded cores); the runs find it started."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail('Ray is not installed: CI installs ".[dev]", which includes fedgpu[sim]')
        pytest.skip('Ray is not installed (pip install "fedgpu[sim]")')
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def simulate(tmp_path: Path, scheme: str, pool: float, *flags: str) -> dict[str, Any]:
    job = tmp_path / f"{scheme}.toml"
    job.write_text(JOB.format(scheme=scheme, pool=pool))
    out = tmp_path / scheme
    assert main(["simulate", str(job), "--nodes", "20", "--out", str(out), *flags]) == 0
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    assert report["status"] == "done" and len(report["rounds"]) == 2
    assert (out / "model.safetensors").exists() and (out / "report.html").exists()
    for rec in report["rounds"]:
        assert all(len(c) >= 2 for c in rec["cohorts"])  # no sum of fewer than k
        assert set(rec["participants"]) <= {f"sim-{i:06d}" for i in range(20)}
    return report


@pytest.mark.slow
def test_ckks_with_valuation_trains_above_chance(ray: Any, tmp_path: Path) -> None:
    report = simulate(tmp_path, "ckks", 100.0)
    assert report["encryption"] == "ckks" and report["final_accuracy"] > 0.15  # 10 classes: chance is 0.1
    assert report["valuation"] is not None and report["rounds"][0]["valuation"]["cohort_values"]
    assert report["simulation"]["nodes"] == 20 and report["simulation"]["per_round"] == 10
    assert len(report["rounds"][0]["participants"]) == 10 and len(report["rounds"][0]["cohorts"]) == 5
    phases = report["rounds"][0]["simulation"]["phases"]
    assert set(phases) == {"train", "encrypt", "add", "decrypt", "value", "evaluate"} and phases["encrypt"] > 0


@pytest.mark.slow
def test_plaintext_with_late_nodes_and_free_riders_still_trains(ray: Any, tmp_path: Path) -> None:
    """A fifth of the nodes cannot make the deadline (their cohorts shrink or merge), a tenth send zeros."""
    report = simulate(tmp_path, "none", 0.0, "--speed-mix", "1e-9=0.2", "--behaviour-mix", "free_rider=0.1", "--partition", "dirichlet", "--alpha", "1.0")
    assert report["final_accuracy"] > 0.15
    statuses = [s for rec in report["rounds"] for s in rec["node_status"].values()]
    assert any(s.startswith("late") for s in statuses) and "complete" in statuses
    for rec in report["rounds"]:
        late = {n for n, s in rec["node_status"].items() if s.startswith("late")}
        assert late.isdisjoint(rec["participants"])  # a late update is in no sum
    assert report["simulation"]["behaviours"] == {"zeros": 0.1}
