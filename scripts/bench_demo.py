"""The demo's acceptance figures, measured in one run on this machine.

Runs `fedgpu demo` (real processes, gRPC over loopback) with its defaults (CKKS), then the same seed
with `--encryption none`, then `--partition dirichlet` and `--dataset digits`, and prints one JSON
object: final accuracy, wall time and median round time of each, and the CKKS / plaintext ratios.

  round_s = aggregator round time + the driver's work (fetch, decrypt, value, evaluate, publish),
            median over rounds 2.. (round 1 includes the nodes' start-up)
  driver_s_per_round         the driver's work of a round (fetch, decrypt, value, evaluate, then publish), median
  slowest_train_s_per_round  the slowest node's training time in that round (what it reported), median
  driver_within_train_rounds rounds whose driver time was at most that round's slowest training
  driver_phases_s            that driver time by phase (fetch, decrypt, valuation, evaluate, publish), medians
  driver_cpu_s_per_round     this process's CPU seconds per round (the driver runs in it), median
  valuation_forward_passes   the valuation's passes over the validation set per round, median
Usage: python scripts/bench_demo.py [--only default,none,dirichlet,digits,k1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fedgpu.demo import DemoConfig, run_demo

VARIANTS = {
    "default": {},
    "none": {"encryption": "none"},
    "dirichlet": {"partition": "dirichlet"},
    "digits": {"dataset": "digits"},
    "k1": {"nodes": 5, "cohort_size": 1},  # `fedgpu demo -k 1 --nodes 5`: the single-update demo (default: 9 nodes, k = 3)
}
PHASES = ("fetch", "decrypt", "valuation", "evaluate", "publish")


def driver_s(rec: dict) -> float:
    return float(rec["driver_seconds"] + rec.get("publish_seconds", 0.0))


def phase_s(rec: dict, name: str) -> float:
    return float(rec.get("valuation", {}).get("seconds", 0.0) if name == "valuation" else rec.get(f"{name}_seconds", 0.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out: dict = {"machine": f"{os.cpu_count()} cores", "load_before": os.getloadavg()[0]}
    for name in args.only.split(","):
        cpu: list[float] = []  # this process's CPU seconds at each round's end (the driver runs in this process)

        def progress(ev: dict, cpu: list[float] = cpu) -> None:
            if ev.get("event") == "round":
                cpu.append(time.process_time())

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            report = run_demo(DemoConfig(seed=args.seed, out=Path(tmp) / "demo", **VARIANTS[name]), progress)
            wall = time.perf_counter() - t0
        rounds = report["rounds"][1:]
        cpu_per_round = [b - a for a, b in itertools.pairwise(cpu)]
        out[name] = {
            "final_accuracy": report["final_accuracy"],
            "wall_s": round(wall, 1),
            "round_s": statistics.median(r["seconds"] + r["driver_seconds"] for r in rounds),
            "aggregator_round_s": statistics.median(r["seconds"] for r in rounds),
            "valuation_s": statistics.median(r.get("valuation", {}).get("seconds", 0.0) for r in rounds),
            "driver_s_per_round": statistics.median(driver_s(r) for r in rounds),
            "slowest_train_s_per_round": statistics.median(max(r["train_seconds"].values()) for r in rounds),
            "driver_phases_s": {k: round(statistics.median(phase_s(r, k) for r in rounds), 4) for k in PHASES},
            "driver_cpu_s_per_round": round(statistics.median(cpu_per_round), 3) if cpu_per_round else None,
            "valuation_forward_passes": statistics.median(r.get("valuation", {}).get("evaluations", 0.0) for r in rounds),
            "driver_within_train_rounds": f"{sum(driver_s(r) <= max(r['train_seconds'].values()) for r in rounds)}/{len(rounds)}",
            "bytes_up_per_node_round": statistics.median(b for r in rounds for b in r["bytes_up_by_node"].values()),
            "params": report["params"],
            "rounds": len(report["rounds"]),
            "encryption": report["encryption"],
        }
        print(f"{name}: {out[name]}", file=sys.stderr, flush=True)
    if "default" in out and "none" in out:
        out["ckks_minus_none_accuracy_points"] = round(100 * (out["default"]["final_accuracy"] - out["none"]["final_accuracy"]), 2)
        out["ckks_over_none_round_time"] = round(out["default"]["round_s"] / out["none"]["round_s"], 3)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
