"""How `fedgpu simulate` scales: rounds per minute and peak memory at 1,000, 10,000 and 100,000 simulated nodes.

Each size runs as its own `fedgpu simulate` process (so that each peak RSS is its own) on a local Ray,
with the same job: cnn1d (~28 k parameters) on MNIST-1D, 1,000 nodes a round in cohorts of k = 5, CKKS,
2 local epochs of batch 32 on each node's 40 samples (the default 4,000-sample training set, so samples
repeat across nodes: 10x at 1,000 nodes, 1,000x at 100,000). Prints one JSON object:

    {"runs": [{"nodes", "per_round", "cohort_size", "params", "rounds_per_min", "peak_rss_mb", "phases", ...}]}

``phases`` is seconds per round by phase (train, encrypt, add: wall time inside the Ray actors, summed
over them, ``actor_cpu_seconds`` their CPU time; decrypt, value, evaluate on the driver); ``rounds_per_min`` counts round wall time only (Ray's start,
the dataset and the actors' start are ``setup_seconds``). The machine's other load counts too: compare
sizes within one run.

    python scripts/bench_simulate.py                       # 1k, 10k, 100k nodes, 2 rounds each
    python scripts/bench_simulate.py --nodes 10000 --rounds 3 --valuation off
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

JOB = """
name = "bench-simulate"
model = "cnn1d"
dataset = "mnist1d"
rounds = {rounds}
nodes_per_round = {per_round}
min_nodes = {min_nodes}
deadline_seconds = 600
cohort_size = {k}
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


def run(nodes: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    job = work / f"job-{nodes}.toml"
    job.write_text(JOB.format(rounds=args.rounds, per_round=args.per_round, min_nodes=max(args.cohort_size, args.per_round // 2), k=args.cohort_size,
                              scheme=args.scheme, pool=100.0 if args.valuation == "on" else 0.0))
    out = work / f"out-{nodes}"
    cmd = [sys.executable, "-m", "fedgpu", "simulate", str(job), "--nodes", str(nodes), "--samples-per-node", str(args.samples_per_node), "--out", str(out)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        return {"nodes": nodes, "error": (proc.stderr or proc.stdout)[-2000:]}
    report = json.loads((out / "report.json").read_text())
    sim, rounds = report["simulation"], report["rounds"]
    wall = [r["simulation"]["wall_seconds"] for r in rounds]
    phases = {k: sum(r["simulation"]["phases"][k] for r in rounds) / len(rounds) for k in rounds[0]["simulation"]["phases"]}
    return {
        "nodes": nodes,
        "per_round": sim["per_round"],
        "cohort_size": sim["cohort_size"],
        "params": report["params"],
        "encryption": report["encryption"],
        "valuation": args.valuation == "on",
        "rounds": len(rounds),
        "rounds_per_min": 60.0 * len(rounds) / sum(wall),
        "round_seconds": wall,
        "peak_rss_mb": sim["driver_peak_rss_mb"] + sim["workers"] * sim["worker_peak_rss_mb"],  # the driver and every actor, each at its peak
        "driver_peak_rss_mb": sim["driver_peak_rss_mb"],
        "worker_peak_rss_mb": sim["worker_peak_rss_mb"],
        "workers": sim["workers"],
        "phases": phases,
        "workers_seconds": sum(r["simulation"]["workers_seconds"] for r in rounds) / len(rounds),  # wall: until every cohort's sum was back
        # the actors' CPU time per round (their wall time above includes waiting for a core on a busy machine)
        "actor_cpu_seconds": {k: sum(r["simulation"]["actor_cpu_seconds"][k] for r in rounds) / len(rounds) for k in ("train", "encrypt", "add")},
        "dominant_phase": max(phases, key=lambda k: phases[k]),
        "setup_seconds": sim["setup_seconds"],
        "samples_per_node": sim["samples_per_node"],
        "sample_repeats": sim["sample_repeats"],
        "bytes_up_per_round": sum(r["bytes_up"] for r in rounds) / len(rounds),
        "accuracy": [r["accuracy"] for r in rounds],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", default="1000,10000,100000", help="population sizes, comma-separated (default %(default)s)")
    ap.add_argument("--per-round", type=int, default=1000)
    ap.add_argument("--cohort-size", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--samples-per-node", type=int, default=40)
    ap.add_argument("--scheme", default="ckks")
    ap.add_argument("--valuation", choices=["on", "off"], default="off", help="the driver's Shapley valuation of every cohort (default %(default)s: see docs/simulate.md)")
    ap.add_argument("--workers", type=int, default=None, help="Ray actors (default: one per CPU)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per size")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-simulate-") as tmp:
        runs = [run(int(n), args, Path(tmp)) for n in args.nodes.split(",")]
    print(json.dumps({"runs": runs, "cpus": os.cpu_count(), "load_average": os.getloadavg()}, indent=1))
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
