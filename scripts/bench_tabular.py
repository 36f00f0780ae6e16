"""Tabular benchmark (issue #17): own CSV data, own schema in the TOML, federated standardisation, no Python.

For breast_cancer and wine: the files ``fedgpu datasets --export NAME --out DIR --nodes 3`` writes
(a stratified 70/30 train/held-out split; the train part split IID over 3 node CSVs), the job file
``examples/NAME.toml`` as it is (model tab_mlp sized from its [schema], ``[data] standardize = true``,
CKKS encryption, rewards on), and the real loop in one process: a LocalAggregator (grpc.aio on
127.0.0.1), 3 NodeAgent threads mapping the schema to their CSV (as ``fedgpu node --data NAME=CSV``)
and a JobDriver validating on the held-out CSV (as ``fedgpu train --validation``).

Baseline, measured in the same run: scikit-learn's LogisticRegression on features standardised by a
StandardScaler fit on the pooled train split (what a federation cannot do), on the same held-out split.
Also reported: how far the federated mean and std (from the encrypted cohort sums) are from the pooled
ones, relative to the pooled std.

Prints ONE JSON object (stdout) with, per dataset, ``federated_accuracy``, ``central_logreg_accuracy``,
``gap_points`` (central minus federated, in points); progress goes to stderr.

``--dp EPSILON``: the same job under record-level DP (``[privacy] epsilon``; the statistics round a Gaussian
mechanism on each node at ``--statistics-epsilon``, default 10 % of it, composed into the one epsilon):
per dataset also ``dp``: the epsilon each owner's ledger shows (whole job, and the statistics round's
charge), and the scaler's error against the pooled one, from the DP statistics round.

    .venv/bin/python scripts/bench_tabular.py            # ~2-4 min on 2 shared cores
    .venv/bin/python scripts/bench_tabular.py --dp 8     # DP: ~5-10 min (PRV accounting on each node)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: node threads share the cores

import argparse
import dataclasses
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedgpu.aggregator.local import LocalAggregator
from fedgpu.config import PrivacyConfig, load_job
from fedgpu.datasets import load_file
from fedgpu.datasets.export import TABULAR, export_tabular
from fedgpu.datasets.statistics import public_scaling
from fedgpu.driver.driver import JobDriver
from fedgpu.models import load_trained
from fedgpu.node.agent import NodeConfig
from fedgpu.node.threads import NodeThreads

ROOT = Path(__file__).resolve().parents[1]


def central_logreg(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=5000).fit(scaler.transform(train_x), train_y)
    return float(clf.score(scaler.transform(test_x), test_y))


def run_one(name: str, work: Path, seed: int, dp: float | None = None, statistics_epsilon: float = 0.0, rounds: int = 0) -> dict[str, Any]:
    written = export_tabular(name, work / "data", nodes=3, seed=seed)
    job = load_job(ROOT / "examples" / f"{name}.toml")
    if rounds:
        job = dataclasses.replace(job, rounds=rounds)
    if dp is not None:
        job = dataclasses.replace(job, privacy=PrivacyConfig(enabled=True, epsilon=dp, statistics_epsilon=statistics_epsilon)).validate()
    schema = job.dataset_schema
    node_files = [Path(f["path"]) for f in written["nodes"]]
    test_path = Path(written["test"]["path"])
    parts = [load_file(p, schema) for p in node_files]
    train_x = np.concatenate([p.x for p in parts]).astype(np.float64)
    train_y = np.concatenate([p.y for p in parts])
    test = load_file(test_path, schema)
    t0 = time.perf_counter()
    central = central_logreg(train_x, train_y, test.x.astype(np.float64), test.y)
    central_seconds = time.perf_counter() - t0

    with LocalAggregator(str(work / f"{name}.db"), work / f"{name}-spool") as agg, NodeThreads(join_seconds=15) as nodes:
        for i, f in enumerate(node_files):
            nodes.start(NodeConfig(aggregator=agg.address, data={name: f}, identity_path=work / f"{name}-node{i}" / "identity.pem", name=f"node{i}", poll_seconds=1))
        t0 = time.perf_counter()
        out = work / f"{name}-run"
        report = JobDriver(agg.address, job, out, validation_path=test_path, progress=lambda ev: print(f"[{name}] {ev}", file=sys.stderr)).run()
        seconds = time.perf_counter() - t0
    model = load_trained(out / "model.safetensors")
    with torch.no_grad():
        acc = float((model(torch.from_numpy(test.x)).argmax(1).numpy() == test.y).mean())
    mean, std = model.get_buffer("feature_mean").double().numpy(), model.get_buffer("feature_std").double().numpy()
    pooled_mean, pooled_std = train_x.mean(axis=0), train_x.std(axis=0)
    center, half = public_scaling(schema)
    extra: dict[str, Any] = {}
    if dp is not None:
        from fedgpu.privacy.dp import epsilon_of
        from fedgpu.privacy.ledger import OwnerLedger

        ledgers = [OwnerLedger(work / f"{name}-node{i}" / "privacy.db") for i in range(len(node_files))]
        extra["dp"] = {
            "epsilon": dp,
            "delta": job.privacy.delta,
            "statistics_epsilon_planned": job.statistics_epsilon,
            "owner_epsilon": [led.epsilon(job.privacy.delta) for led in ledgers],
            "owner_statistics_charge": [
                epsilon_of([e.event.segment for e in led.events() if e.event.round == 1], job.privacy.delta) for led in ledgers
            ],
            "reported_epsilon_round1": report["rounds"][0].get("epsilon"),
            "statistics_noise_std": report["rounds"][0].get("statistics", {}).get("noise_std"),
        }
    return {
        "federated_accuracy": acc,
        "central_logreg_accuracy": central,
        "gap_points": round(100 * (central - acc), 3),
        "driver_reported_accuracy": report["final_accuracy"],
        "rounds": len(report["rounds"]),
        "training_rounds": len(report["rounds"]) - 1,
        "train_samples": len(train_y),
        "test_samples": len(test.y),
        "nodes": len(node_files),
        "encryption": job.encryption.scheme,
        "cohort_size": job.cohort_size,
        "standardisation": {
            "samples_counted": report["rounds"][0].get("statistics", {}).get("samples"),
            "max_mean_error_in_std": float(np.max(np.abs(mean - pooled_mean) / pooled_std)),
            "max_std_relative_error": float(np.max(np.abs(std - pooled_std) / pooled_std)),
            "imprecise_features": report["rounds"][0].get("statistics", {}).get("imprecise_features"),
            "median_mean_error_in_std": float(np.median(np.abs(mean - pooled_mean) / pooled_std)),
            "median_std_relative_error": float(np.median(np.abs(std - pooled_std) / pooled_std)),
            # the baseline a DP scaler must beat: the schema's public ranges alone (center, half-width)
            "public_ranges_median_mean_error_in_std": float(np.median(np.abs(center - pooled_mean) / pooled_std)),
            "public_ranges_median_std_relative_error": float(np.median(np.abs(half - pooled_std) / pooled_std)),
        },
        "seconds": round(seconds, 1),
        "central_seconds": round(central_seconds, 3),
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(TABULAR), choices=TABULAR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dp", type=float, default=None, metavar="EPSILON", help="record-level DP at this epsilon per owner, statistics round included")
    ap.add_argument("--statistics-epsilon", type=float, default=0.0, help="with --dp: the statistics round's own epsilon (0: 10 %% of --dp)")
    ap.add_argument("--rounds", type=int, default=0, help="rounds of the job (0: the example's)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedgpu-tabular-") as tmp:
        for name in args.datasets:
            results[name] = run_one(name, Path(tmp), args.seed, args.dp, args.statistics_epsilon, args.rounds)
    print(json.dumps({
        **results,
        "within_2_points": all(r["gap_points"] <= 2.0 for r in results.values()),
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work: times are under load)",
    }, indent=2))


if __name__ == "__main__":
    main()
