"""Selection benchmark: time to a fixed accuracy with measured-speed selection against uniform random selection.

Everything is the real loop in one process: a LocalAggregator (grpc.aio on 127.0.0.1), NodeAgent
threads, a JobDriver valuing each round (k = 1, so node values exist to select on). 10 nodes with equal
IID shares of MNIST-1D whose speeds spread 10x: node i's tasks take f_i x as long, f_i geometric from 1
to 10, a real delay after its training (fedgpu.adversaries "slow"). Two jobs on the same nodes, data and
seed, at the same time (so both meet the same load):

  selected   [selection] rule = "utility" (the default: value per second, exploration, over-selection)
  uniform    [selection] rule = "uniform" (the old draw: nodes_per_round at random among the eligible)

``time_to_accuracy_*``: seconds from submission to the first round whose published model reaches
``--target`` on the held-out split; ``speedup_time_to_accuracy`` = uniform / selected. Under load (2 shared
cores) absolute seconds move; both jobs run side by side in one process, so the ratio holds.

Prints ONE JSON object (stdout); progress goes to stderr.

    .venv/bin/python scripts/bench_schedule.py            # 12 rounds each, side by side: ~6 min on 2 shared cores
    .venv/bin/python scripts/bench_schedule.py --quick    # 6 rounds: a smoke run, numbers mean little
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: node threads share 2 cores

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedgpu.adversaries import apply_behaviour
from fedgpu.aggregator.local import LocalAggregator
from fedgpu.config import EncryptionConfig, JobConfig, RewardsConfig, SelectionConfig, TrainingConfig
from fedgpu.datasets import ArrayDataset, partition_iid, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.node.agent import NodeConfig
from fedgpu.node.threads import NodeThreads

DATASET = "mnist1d"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def factors(n: int, spread: float) -> list[float]:
    """Slowdowns geometric from 1 to ``spread``."""
    return [spread ** (i / (n - 1)) for i in range(n)]


def run_job(tag: str, rule: str, files: list[Path], slow: list[float], args: argparse.Namespace, validation: ArrayDataset, work: Path) -> dict[str, Any]:
    run_dir = work / tag
    run_dir.mkdir(parents=True)
    job = JobConfig(
        name=f"bench-schedule-{tag}",
        model="cnn1d",
        dataset=DATASET,
        rounds=args.rounds,
        nodes_per_round=args.nodes_per_round,
        min_nodes=args.nodes_per_round,
        deadline_seconds=args.deadline,
        cohort_size=1,
        seed=args.seed,
        validation_samples=args.validation,
        training=TrainingConfig(epochs=args.epochs, batch_size=32, lr=0.05),
        encryption=EncryptionConfig("none"),
        rewards=RewardsConfig(pool_per_round=100.0, budget=64),
        selection=SelectionConfig(rule=rule),
    ).validate()
    agg = LocalAggregator(str(run_dir / "agg.db"), run_dir / "spool")
    nodes = NodeThreads()
    driver: JobDriver | None = None
    curve: list[tuple[int, float, float]] = []  # (round, seconds since submission, accuracy)
    t0 = time.perf_counter()
    try:
        agg.start()
        for i, (f, factor) in enumerate(zip(files, slow, strict=True)):
            cfg = NodeConfig(aggregator=agg.address, data={DATASET: f}, identity_path=run_dir / f"node{i}" / "id.pem", name=f"node{i}-x{factor:.1f}", poll_seconds=1)
            apply_behaviour(cfg, "slow" if factor > 1 else "honest", factor)
            nodes.start(cfg, f"node{i}")

        def progress(ev: dict[str, Any]) -> None:
            if ev["event"] == "submitted":
                t0_box[0] = time.perf_counter()
            if ev["event"] == "round":
                at = time.perf_counter() - t0_box[0]
                curve.append((ev["round"], at, ev["accuracy"]))
                log(f"  [{tag}] round {ev['round']}/{args.rounds}: acc {ev['accuracy']:.3f}  round {ev['seconds']:.1f}s  nodes {len(ev['cohorts'])}  at {at:.0f}s")

        t0_box = [time.perf_counter()]
        driver = JobDriver(agg.address, job, run_dir / "out", validation=validation, progress=progress)
        report = driver.run()
        picks: dict[str, int] = {}
        for rnd in report["rounds"]:
            for c in rnd["cohorts"]:
                for n in c:
                    picks[n] = picks.get(n, 0) + 1
        name_of = {a.node_id: a.cfg.name for a in nodes.agents}
    finally:
        nodes.stop()
        if driver is not None:
            driver.channel.close()
        agg.stop()
    reach = next((at for _, at, acc in curve if acc >= args.target), None)
    return {
        "time_to_accuracy_seconds": reach,
        "rounds_to_accuracy": next((r for r, _, acc in curve if acc >= args.target), None),
        "final_accuracy": curve[-1][2] if curve else None,
        "seconds": time.perf_counter() - t0,
        "mean_round_seconds": sum(r["seconds"] for r in report["rounds"]) / max(len(report["rounds"]), 1),
        "updates_per_node": {name_of.get(n, n): k for n, k in sorted(picks.items(), key=lambda kv: name_of.get(kv[0], kv[0]))},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--quick", action="store_true", help="6 rounds: a smoke run")
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--nodes-per-round", type=int, default=4)
    ap.add_argument("--spread", type=float, default=10.0, help="the slowest node's tasks take this many times as long as the fastest's")
    ap.add_argument("--samples", type=int, default=20_000, help="MNIST-1D samples generated (train + held-out)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--target", type=float, default=0.90, help="the accuracy whose time is measured")
    ap.add_argument("--deadline", type=float, default=120.0)
    ap.add_argument("--validation", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.rounds = 6
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedgpu-bench-schedule-") as tmp:
        work = Path(tmp)
        train, test = public_split(DATASET, num_samples=args.samples, seed=args.seed)
        files = []
        for i, idx in enumerate(partition_iid(len(train), args.nodes, args.seed)):
            f = work / "data" / f"node{i}.npz"
            f.parent.mkdir(parents=True, exist_ok=True)
            save_npz(f, train.subset(idx))
            files.append(f)
        slow = factors(args.nodes, args.spread)
        log(f"{args.nodes} nodes, {len(train) // args.nodes} samples each, slowdowns {', '.join(f'{f:.1f}' for f in slow)}")
        # Both jobs at once, each on its own aggregator and its own 10 node threads: they share whatever load
        # the machine has, so the ratio does not depend on what else ran in between. When the selected job
        # ends first the uniform one has the machine to itself: that favours uniform, not the new rule.
        results: dict[str, dict[str, Any]] = {}
        errors: list[BaseException] = []

        def one(tag: str, rule: str) -> None:
            try:
                results[tag] = run_job(tag, rule, files, slow, args, test, work)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(tag, rule), name=tag) for tag, rule in (("selected", "utility"), ("uniform", "uniform"))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if errors:
            raise errors[0]
        selected, uniform = results["selected"], results["uniform"]
    a, b = selected["time_to_accuracy_seconds"], uniform["time_to_accuracy_seconds"]
    out = {
        "speedup_time_to_accuracy": (b / a) if a and b else None,
        "target_accuracy": args.target,
        "final_accuracy_selected": selected["final_accuracy"],
        "final_accuracy_uniform": uniform["final_accuracy"],
        "time_to_accuracy_selected_seconds": a,
        "time_to_accuracy_uniform_seconds": b,
        "rounds_to_accuracy_selected": selected["rounds_to_accuracy"],
        "rounds_to_accuracy_uniform": uniform["rounds_to_accuracy"],
        "mean_round_seconds_selected": selected["mean_round_seconds"],
        "mean_round_seconds_uniform": uniform["mean_round_seconds"],
        "updates_per_node_selected": selected["updates_per_node"],
        "updates_per_node_uniform": uniform["updates_per_node"],
        "settings": {
            "nodes": args.nodes, "nodes_per_round": args.nodes_per_round, "rounds": args.rounds, "spread": args.spread,
            "slowdowns": [round(f, 2) for f in slow], "samples": args.samples, "epochs": args.epochs, "seed": args.seed,
            "k": 1, "encryption": "none", "deadline_seconds": args.deadline, "jobs": "side by side",
        },
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(), "note": "2 cores shared with other work: seconds are under load; both jobs ran side by side, so the ratio holds", "load_average": os.getloadavg()},
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
