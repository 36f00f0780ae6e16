"""A real job's outputs, as the ML team and the node operators read them: report.html in a browser, metrics.csv,
names beside ids, a model.safetensors that loads by itself, and the aggregator's counters."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import pytest
from safetensors import safe_open

from fedgpu import __version__
from fedgpu.aggregator.local import LocalAggregator
from fedgpu.config import PrivacyConfig, RewardsConfig, TrainingConfig
from fedgpu.datasets import partition_iid, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.evaluation import evaluate
from fedgpu.models import load_trained, trained_info
from fedgpu.node.agent import NodeAgent, NodeConfig
from fedgpu.report.html import PLOTS

from test_job import job, stop_nodes  # type: ignore[import-not-found]

ROUNDS = 3


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, object, dict]:  # type: ignore[type-arg]
    """One DP job with rewards on three named nodes: (report, out folder, validation set, aggregator snapshot)."""
    tmp = tmp_path_factory.mktemp("job")
    train, test = public_split("digits", seed=0)
    with LocalAggregator(str(tmp / "agg.db"), tmp / "spool") as agg:
        nodes = []
        for i, idx in enumerate(partition_iid(len(train), 3, seed=1)):
            save_npz(tmp / f"node{i}.npz", train.subset(idx))
            cfg = NodeConfig(aggregator=agg.address, data={"digits": tmp / f"node{i}.npz"}, identity_path=tmp / f"node{i}" / "id.pem", poll_seconds=1, name=f"owner-{i}", epsilon_cap=50)
            agent = NodeAgent(cfg)
            th = threading.Thread(target=agent.run, daemon=True)
            th.start()
            nodes.append((agent, th))
        try:
            spec = job(rounds=ROUNDS, min_nodes=3, training=TrainingConfig(epochs=1, batch_size=64, lr=0.5), rewards=RewardsConfig(pool_per_round=100),
                       privacy=PrivacyConfig(enabled=True, epsilon=8.0, delta=1e-5, accountant="rdp"))
            report = JobDriver(agg.address, spec, tmp / "out", validation=test).run()

            async def snapshot():  # type: ignore[no-untyped-def]
                assert agg.agg is not None
                return agg.agg.snapshot()

            counted = vars(agg.call(snapshot))
        finally:
            stop_nodes(nodes)
    return report, tmp / "out", test, counted


def test_report_names_nodes_and_splits_round_time(finished) -> None:  # type: ignore[no-untyped-def]
    report, out, _, _ = finished
    assert report["status"] == "done" and report["error"] is None
    assert sorted(info["name"] for info in report["nodes"].values()) == ["owner-0", "owner-1", "owner-2"]
    for rec in report["rounds"]:
        assert set(rec["node_names"].values()) == {"owner-0", "owner-1", "owner-2"}
        assert set(rec["upload_seconds"]) == set(rec["participants"]) and all(s >= 0 for s in rec["upload_seconds"].values())
        assert rec["aggregation_seconds"] > 0 and rec["publish_seconds"] > 0 and rec["driver_seconds"] > 0
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["round"]) for r in rows] == list(range(1, ROUNDS + 1))
    assert float(rows[-1]["accuracy"]) == pytest.approx(report["final_accuracy"], rel=1e-5)
    assert json.loads((out / "report.json").read_text())["nodes"] == report["nodes"]


def test_report_html_renders_every_plot_in_chromium(finished, render_html) -> None:  # type: ignore[no-untyped-def]
    _, out, _, _ = finished
    page = (out / "report.html").read_text()
    assert "owner-1" in page
    render_html(out / "report.html").check_plots(PLOTS)


def test_the_trained_model_loads_from_its_file_alone(finished) -> None:  # type: ignore[no-untyped-def]
    report, out, validation, _ = finished
    path = out / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["model"] == "digits_cnn" and meta["dataset"] == "digits" and meta["job"] == report["job"] and meta["fedgpu_version"] == __version__
    info = trained_info(path)
    assert info.spec.input_shape == (8, 8) and info.rounds == ROUNDS
    model = load_trained(path)
    assert not model.training
    acc, _ = evaluate(model, validation)
    assert acc == pytest.approx(report["final_accuracy"])


def test_the_aggregator_counted_the_job(finished) -> None:  # type: ignore[no-untyped-def]
    *_, counted = finished
    assert counted["nodes_registered"] == 3 and counted["rounds_closed"] == ROUNDS
    assert counted["counters"].uploads_accepted == 3 * ROUNDS and counted["counters"].uploads_refused == 0
    assert counted["counters"].bytes_in > 3 * ROUNDS * 40_000
