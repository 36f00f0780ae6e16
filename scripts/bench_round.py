"""Round overhead of the real loop: 10 node processes, an aggregator process, a job driver.

Prints one JSON object: {"runs": [{"params", "nodes", "round_s", "train_s", "round_overhead_s",
"bytes_up_per_node", "bytes_down_per_node", "aggregator_peak_rss_mb", ...}]}

  round_s           median wall time between consecutive rounds as the driver sees them (open ->
                    train -> upload -> close -> fetch -> decrypt -> aggregate -> evaluate -> publish)
  train_s           median over rounds of the median node's local training time
  round_overhead_s  median over rounds of (round_s - the slowest node's training time that round)
  aggregator_peak_rss_mb  VmHWM of the aggregator process at the end of the run
  aggregator_cpu_s_per_update  the aggregator process's CPU seconds per round (utime + stime from
                    /proc, between consecutive round ends) over the nodes: receiving, checking, adding,
                    closing the round, serving the sums, the model downloads and the publish
  driver_cpu_s      this process's CPU seconds per round (the driver runs in it); driver_wall_s its wall
                    time per round, driver_phases_s that time's fetch, decrypt, evaluate and publish
  node              per node process and round: cpu_s (its whole process), train_s, encrypt_s (the node's
                    own timings), upload_s (first chunk in .. update added, at the aggregator)
  encrypt_ahead     whether the nodes made their encryptions of zero while waiting (--encrypt-ahead on,off
                    runs each configuration both ways, for a baseline in the same run)

Valuation is switched off (reward pool 0) so the figure is the loop itself; see bench_valuation.py.
Usage: python scripts/bench_round.py [--nodes 10] [--rounds 6] [--quick]
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

import numpy as np

from fedgpu.config import EncryptionConfig, JobConfig, RewardsConfig, TrainingConfig
from fedgpu.datasets import partition_iid, public_split, save_npz
from fedgpu.demo import Cluster
from fedgpu.driver.driver import JobDriver


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """utime + stime of a live process (children excluded), in seconds: what it spent, whoever waited."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    """CPU seconds of this process: the driver (and its gRPC threads) runs in it."""
    return time.process_time()


def one_run(model: str, scheme: str, nodes: int, rounds: int, samples_per_node: int, work: Path, k: int = 1, ahead: bool = True) -> dict:
    work.mkdir(parents=True)
    train, test = public_split("mnist1d", num_samples=int(samples_per_node * nodes / 0.8) + 10, seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cluster = Cluster(work, env)
    job = JobConfig(
        name=f"bench-{model}",
        model=model,
        dataset="mnist1d",
        rounds=rounds,
        nodes_per_round=nodes,
        min_nodes=nodes,
        cohort_size=k,
        deadline_seconds=300,
        training=TrainingConfig(epochs=1, batch_size=32, lr=0.05),
        encryption=EncryptionConfig(scheme),
        rewards=RewardsConfig(pool_per_round=0.0),
    ).validate()
    times: list[float] = []
    cpu: list[dict[str, float]] = []  # at each round's end: CPU seconds so far of the aggregator, the driver, each node
    try:
        address = cluster.start_aggregator()
        for i, idx in enumerate(partition_iid(len(train), nodes, 0)):
            home = work / f"node{i}"
            home.mkdir()
            save_npz(home / "d.npz", train.subset(idx))
            cluster.spawn(["-m", "fedgpu", "node", "--aggregator", address, *cluster.client_args, "--data", f"mnist1d={home / 'd.npz'}", "--home", str(home), "--threads", "1", *([] if ahead else ["--no-encrypt-ahead"])], f"node{i}.log")

        def progress(ev: dict) -> None:
            if ev["event"] == "round":
                times.append(time.perf_counter())
                cpu.append({"aggregator": cpu_s(cluster.procs[0].pid), "driver": self_cpu_s(),
                            **{f"node{i}": cpu_s(p.pid) for i, p in enumerate(cluster.procs[1:])}})
                print(f"  {model}/{scheme} round {ev['round']}: {ev['seconds']:.2f}s in aggregator", file=sys.stderr, flush=True)

        driver = JobDriver(address, job, work / "job", validation=test.subset(np.arange(min(1000, len(test)))), progress=progress, tls=cluster.tls)
        report = driver.run()
        rss = peak_rss_mb(cluster.procs[0].pid)
    finally:
        cluster.close()
    rounds_ = report["rounds"]
    # Round 1 includes the nodes' start-up (torch import, registration): skip it.
    round_s = list(np.diff(times))
    per_round_train = [rounds_[i]["train_seconds"] for i in range(1, len(rounds_))]
    overhead = [r - max(t.values()) for r, t in zip(round_s, per_round_train, strict=False)]
    up = [b for r in rounds_[1:] for b in r["bytes_up_by_node"].values()]
    down = [b for r in rounds_[1:] for b in r["bytes_down_by_node"].values()]
    # CPU seconds per round, per process, between consecutive round ends (round 1 skipped as above).
    per_round = [{k: b[k] - a[k] for k in b} for a, b in itertools.pairwise(cpu)]
    agg_cpu = statistics.median(r["aggregator"] for r in per_round)
    node_cpu = [statistics.median(r[f"node{i}"] for r in per_round) for i in range(nodes)]
    encrypt = [s for r in rounds_[1:] for s in r.get("encrypt_seconds", {}).values()]
    upload = [s for r in rounds_[1:] for s in r.get("upload_seconds", {}).values()]
    driver_wall = statistics.median(r["driver_seconds"] + r.get("publish_seconds", 0.0) for r in rounds_[1:])
    return {
        "model": model,
        "encryption": scheme,
        "params": report["params"],
        "nodes": nodes,
        "cohort_size": k,
        "encrypt_ahead": ahead,
        "rounds_measured": len(round_s),
        "round_s": statistics.median(round_s),
        "train_s": statistics.median(statistics.median(t.values()) for t in per_round_train),
        "round_overhead_s": statistics.median(overhead),
        "bytes_up_per_node": int(statistics.median(up)),
        "bytes_down_per_node": int(statistics.median(down)),
        "bytes_up_per_param": statistics.median(up) / report["params"],
        "aggregator_peak_rss_mb": round(rss, 1),
        "aggregator_cpu_s_per_round": round(agg_cpu, 4),
        "aggregator_cpu_s_per_update": round(agg_cpu / nodes, 4),
        "driver_cpu_s": round(statistics.median(r["driver"] for r in per_round), 4),
        "driver_wall_s": round(driver_wall, 4),
        "driver_phases_s": {k: round(statistics.median(r.get(f"{k}_seconds", 0.0) for r in rounds_[1:]), 4) for k in ("fetch", "decrypt", "evaluate", "publish")},
        "aggregation_s": statistics.median(r.get("aggregation_seconds", 0.0) for r in rounds_[1:]),
        "node": {  # per node process and round: medians over nodes of their per-round medians
            "cpu_s": round(statistics.median(node_cpu), 4),
            "cpu_s_max": round(max(node_cpu), 4),
            "train_s": round(statistics.median(s for r in per_round_train for s in r.values()), 4),
            "encrypt_s": round(statistics.median(encrypt), 4) if encrypt else None,
            "upload_s": round(statistics.median(upload), 4) if upload else None,
        },
        "final_accuracy": report["final_accuracy"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--samples-per-node", type=int, default=400)
    ap.add_argument("--models", default="cnn1d,mlp_1m")
    ap.add_argument("--schemes", default="none,ckks")
    ap.add_argument("--memory-nodes", type=int, default=3, help="also run mlp_1m/ckks with this many nodes to show memory does not grow (0: skip)")
    ap.add_argument("--cohort-sizes", default="1", help="k of each run, comma-separated (1: the driver decrypts every update; 3: a job file's default on private data)")
    ap.add_argument("--encrypt-ahead", default="on", help="on, off or on,off: nodes make their encryptions of zero while waiting (the default), or not (--no-encrypt-ahead)")
    ap.add_argument("--quick", action="store_true", help="3 nodes, 3 rounds, cnn1d only")
    args = ap.parse_args()
    if args.quick:
        args.nodes, args.rounds, args.models, args.memory_nodes = 3, 3, "cnn1d", 0
    ks = [int(k) for k in args.cohort_sizes.split(",")]
    aheads = [{"on": True, "off": False}[v] for v in args.encrypt_ahead.split(",")]
    configs = [(m, s, args.nodes, k, a) for m in args.models.split(",") for s in args.schemes.split(",") for k in ks for a in aheads]
    if args.memory_nodes:
        configs.append(("mlp_1m", "ckks", args.memory_nodes, 1, True))
    runs = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedgpu-bench-") as tmp:
        for model, scheme, nodes, k, ahead in configs:
            work = Path(tmp) / f"{model}-{scheme}-{nodes}-k{k}-{'ahead' if ahead else 'on-demand'}"
            runs.append(one_run(model, scheme, nodes, args.rounds, args.samples_per_node, work, k, ahead))
    print(json.dumps({"runs": runs, "machine": f"{os.cpu_count()} cores", "wall_s": round(time.perf_counter() - t0, 1)}, indent=2))


if __name__ == "__main__":
    main()
