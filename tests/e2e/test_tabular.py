"""A CSV job with its schema in the job file and federated standardisation, over real sockets (issue #17):
it trains, and a file that does not fit, or values beyond CKKS's headroom, end the job with the cause."""

from __future__ import annotations

import csv
import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fedgpu.config import JobConfig, load_job
from fedgpu.datasets import load_file
from fedgpu.datasets.export import export_tabular
from fedgpu.driver.driver import JobDriver
from fedgpu.errors import RoundFailed
from fedgpu.models import load_trained
from fedgpu.node.agent import NodeAgent, NodeConfig

from test_job import stop_nodes  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parents[2]


def start_csv_nodes(address: str, tmp: Path, name: str, files: list[Path]) -> list[tuple[NodeAgent, threading.Thread]]:
    out = []
    for i, f in enumerate(files):
        agent = NodeAgent(NodeConfig(aggregator=address, data={name: f}, identity_path=tmp / f"node{i}" / "id.pem", name=f"node{i}", poll_seconds=1))
        th = threading.Thread(target=agent.run, daemon=True)
        th.start()
        out.append((agent, th))
    return out


def example(name: str, **kw) -> JobConfig:  # type: ignore[no-untyped-def]
    return dataclasses.replace(load_job(ROOT / "examples" / f"{name}.toml"), **{"deadline_seconds": 20.0, **kw}).validate()


def exported(tmp: Path, name: str) -> tuple[list[Path], Path]:
    w = export_tabular(name, tmp / "data", nodes=3)
    return [Path(f["path"]) for f in w["nodes"]], Path(w["test"]["path"])


def test_a_csv_job_trains_on_federated_standardisation(aggregator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files, test = exported(tmp_path, "wine")
    job = example("wine", rounds=3)  # the statistics round and two of training, CKKS as in the example
    nodes = start_csv_nodes(aggregator.address, tmp_path, "wine", files)
    try:
        report = JobDriver(aggregator.address, job, tmp_path / "out", validation_path=test).run()
    finally:
        stop_nodes(nodes)
    assert report["status"] == "done" and len(report["rounds"]) == 3
    assert report["rounds"][0]["statistics"]["samples"] == pytest.approx(125, abs=0.01)
    assert report["rounds"][0]["accuracy"] < 0.6 < 0.85 < report["final_accuracy"]  # chance is ~0.4
    model = load_trained(tmp_path / "out" / "model.safetensors")  # the scaler travels in the weights
    pooled = np.concatenate([load_file(f, job.dataset_schema).x for f in files]).astype(np.float64)
    np.testing.assert_allclose(model.get_buffer("feature_mean").double().numpy(), pooled.mean(0), rtol=1e-3)
    np.testing.assert_allclose(model.get_buffer("feature_std").double().numpy(), pooled.std(0), rtol=1e-3)


def _drop_column(src: Path, dst: Path, column: str) -> Path:
    rows = list(csv.reader(src.open()))
    j = rows[0].index(column)
    with dst.open("w", newline="") as f:
        csv.writer(f).writerows([r[:j] + r[j + 1 :] for r in rows])
    return dst


@pytest.mark.parametrize(
    ("name", "spoil", "expect"),
    [
        ("wine", "drop proline", "dataset schema mismatch on 3 nodes: --data wine: 1 of the schema's columns are missing from its header, first 'proline'"),
        ("breast_cancer", "no ranges", "values beyond the encryption's headroom on 3 nodes: feature 'worst area' reaches"),
    ],
)
def test_a_node_that_cannot_serve_the_schema_ends_the_job_with_the_cause(  # type: ignore[no-untyped-def]
    aggregator, tmp_path: Path, name: str, spoil: str, expect: str
) -> None:
    files, test = exported(tmp_path, name)
    job = example(name)
    if spoil == "drop proline":
        files = [_drop_column(f, f.with_name(f"short{i}.csv"), "proline") for i, f in enumerate(files)]
    else:  # raw features: the sums of squares of `worst area` (~1e6 each) overflow CKKS's headroom
        job = dataclasses.replace(job, schema=dataclasses.replace(job.dataset_schema, ranges=())).validate()
    nodes = start_csv_nodes(aggregator.address, tmp_path, name, files)
    t0 = time.monotonic()
    try:
        with pytest.raises(RoundFailed, match=expect):
            JobDriver(aggregator.address, job, tmp_path / "out", validation_path=test).run()
        elapsed = time.monotonic() - t0
    finally:
        stop_nodes(nodes)
    assert elapsed < job.deadline_seconds  # the declines close the attempt: no wait for the deadline, no retries
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "failed" and expect in report["error"] and str(tmp_path) not in report["error"]
