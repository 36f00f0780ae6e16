"""report.html, metrics.csv and report.json from a report dict; report.html drawn by a real headless chromium."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from fedgpu.report import FILES, write_report
from fedgpu.report.html import PLOTS, render_html
from fedgpu.report.metrics import COLUMNS, TIME_PARTS, round_rows, time_split


def sample_report(rounds: int = 6, nodes: int = 4, dp: bool = True, rewards: bool = True, status: str = "done", error: str | None = None) -> dict[str, Any]:
    """What the driver writes for a job of ``rounds`` rounds on ``nodes`` nodes (values made up, shapes real)."""
    ids = [f"n{i:015x}" for i in range(nodes)]
    recs = []
    for r in range(1, rounds + 1):
        recs.append({
            "round": r, "accuracy": 0.5 + 0.4 * (1 - 0.6**r), "loss": 1.5 * 0.7**r, "participants": ids, "cohorts": [[n] for n in ids],
            "seconds": 3.0 + 0.1 * r, "driver_seconds": 0.8, "publish_seconds": 0.05, "bytes_up": 40_000 * nodes, "bytes_down": 41_000 * nodes,
            "train_seconds": {n: 1.0 + 0.2 * i for i, n in enumerate(ids)}, "upload_seconds": {n: 0.3 for n in ids}, "aggregation_seconds": 0.2,
            "epsilon": {n: 8.0 * r / rounds * (1 - 0.05 * i) for i, n in enumerate(ids)} if dp else {}, "client_epsilon": None,
            "node_names": {n: f"owner-{i}" for i, n in enumerate(ids)}, "excluded_cohorts": [], "server_step": 1.0, "server_momentum": 0.0,
            **({"valuation": {"rewards": {n: 100.0 * (i + 1) / sum(range(1, nodes + 1)) for i, n in enumerate(ids)}}} if rewards else {}),
        })
    return {
        "job": "job-0123456789ab", "status": status, "error": error, "name": "sample", "dataset": "digits", "model": "digits_cnn", "params": 10026,
        "encryption": "ckks", "cohort_size": 1, "privacy": {"enabled": True, "mode": "sample", "epsilon": 8.0, "delta": 1e-5} if dp else None,
        "final_accuracy": recs[-1]["accuracy"] if recs else 0.0, "seconds": 42.0, "rounds": recs,
        "nodes": {n: {"rounds": rounds, "epsilon": recs[-1]["epsilon"].get(n) if dp and recs else None, "reward": 100.0 * rounds * (i + 1) / sum(range(1, nodes + 1)) if rewards else None, "name": f"owner-{i}"} for i, n in enumerate(ids)},
        "valuation": {"unspent": 0.0} if rewards else None,
    }


def test_time_split_parts() -> None:
    rec = sample_report()["rounds"][0]
    split = time_split(rec)
    assert tuple(split) == TIME_PARTS
    assert split["training"] == pytest.approx(1.6)  # the slowest node
    assert split["upload"] == 0.3 and split["aggregation"] == 0.2 and split["driver"] == pytest.approx(0.85)
    assert split["other"] == pytest.approx(3.1 - 1.6 - 0.3 - 0.2)
    assert time_split({"round": 1})["other"] == 0.0  # an old report without the new fields still renders


def test_write_report_writes_json_html_and_csv(tmp_path: Path) -> None:
    report = sample_report()
    write_report(tmp_path, report)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(COLUMNS) and [int(r["round"]) for r in rows] == list(range(1, 7))
    assert float(rows[-1]["accuracy"]) == pytest.approx(report["rounds"][-1]["accuracy"], rel=1e-5)
    assert float(rows[0]["training_seconds"]) == pytest.approx(1.6) and float(rows[0]["rewards_paid"]) == pytest.approx(100.0)
    assert round_rows(report)[0]["round_seconds"] == pytest.approx(3.1 + 0.85)


def test_html_is_self_contained_with_every_plot_and_node_names(tmp_path: Path) -> None:
    page = render_html(sample_report())
    for name in PLOTS:
        assert f'data-plot="{name}"' in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    assert "owner-3" in page and "n000000000000003" in page  # names beside ids


def test_html_says_why_a_chart_is_missing_and_why_the_job_ended() -> None:
    page = render_html(sample_report(dp=False, rewards=False, status="failed", error="job x failed: too few nodes left <privacy_budget>"))
    assert 'data-plot="epsilon"' not in page and "did not ask for differential privacy" in page
    assert 'data-plot="rewards"' not in page and "pays no rewards" in page
    assert 'class="status failed"' in page and "too few nodes left &lt;privacy_budget&gt;" in page  # escaped
    empty = render_html(sample_report(rounds=0, status="failed", error="declined"))
    assert "No round was applied" in empty and "<figure" not in empty


def test_names_are_escaped() -> None:
    report = sample_report(nodes=2)
    report["nodes"]["n000000000000000"]["name"] = "<img src=x onerror=alert(1)>"
    page = render_html(report)
    assert "<img" not in page and "&lt;img src=x" in page


def test_every_plot_renders_in_headless_chromium(tmp_path: Path, render_html) -> None:  # type: ignore[no-untyped-def]
    """The page as a browser draws it: every plot has a box, and inside it the data are drawn in colour."""
    write_report(tmp_path / "out", sample_report(rounds=8, nodes=5))
    render_html(tmp_path / "out" / "report.html").check_plots(PLOTS)


def test_the_browser_check_catches_a_plot_drawn_blank(tmp_path: Path, render_html) -> None:  # type: ignore[no-untyped-def]
    report = sample_report(rounds=3)
    for rec in report["rounds"]:
        rec["loss"] = None  # the loss chart has axes but no data
    write_report(tmp_path, report)
    with pytest.raises(AssertionError, match=r"plot loss (is blank|has no data drawn)"):
        render_html(tmp_path / "report.html").check_plots(PLOTS)
