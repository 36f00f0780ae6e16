"""Replicated spot checks benchmark: a public-data job with lazy nodes and free riders (docs/verification.md).

Three parts, all in one process (LocalAggregator on 127.0.0.1, NodeAgent threads, a JobDriver), CKKS
encryption throughout:

  calibration  the same public-data tasks (digits_cnn on shards of scikit-learn's digits) trained twice
               under different CPU thread counts, each replica encrypted under CKKS with its own
               randomness and decrypted: the largest relative distance between honest replicas (the
               honest non-determinism on CPU), against the distance of each cheat to the honest
               update on the same tasks (2 lazy draws skipping 50 % of the steps, zeros, noise, the
               replayed global change). The job's tolerance must sit between the two; the per-check
               detection rate of each cheat is the share of its tasks beyond the tolerance.
  checked      the job: 10 nodes (5 honest, 2 lazy, 1 zeros, 1 noise, 1 replay), all in every round,
               public_data.replication 0.1, k = 1, rewards on (pool 100 a round, paid after a node's
               first matched check). Measured: the share of a node's tasks that were checked (q), who was
               flagged and when, honest nodes flagged, the extra node-seconds replicas and re-runs cost,
               the cheats' share of all rewards.
  unchecked    the same job with replication 0: the baseline the cheats' reward share is compared to.

The probability that a cheat is flagged within 20 rounds in which it took part is
1 - (1 - q * d)^20, with q the measured check probability and d the per-check detection rate
(calibration x the share of its disputes the run settled against it), cross-checked against the round
the full run flagged it in.

Prints ONE JSON object (stdout); progress goes to stderr. Figures measured on a shared, loaded 2-core
machine: timings are under load, ratios are measured in the same run.

    .venv/bin/python scripts/bench_verify.py            # 20 rounds, two jobs: a few minutes
    .venv/bin/python scripts/bench_verify.py --quick    # 5 rounds: a smoke run
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: node threads share 2 cores

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedgpu import crypto
from fedgpu.adversaries import LAZY_SKIP, apply_behaviour
from fedgpu.aggregator.local import LocalAggregator
from fedgpu.config import DEFAULT_REPLICA_TOLERANCE, EncryptionConfig, JobConfig, PublicDataConfig, RewardsConfig, TrainingConfig
from fedgpu.datasets import get_schema, public_shard, public_split
from fedgpu.driver.driver import JobDriver
from fedgpu.models import ModelSpec, build_model
from fedgpu.node.agent import NodeConfig
from fedgpu.node.threads import NodeThreads
from fedgpu.node.training import LocalTrainConfig, deterministic, train_local
from fedgpu.rewards.replicas import relative_distance
from fedgpu.wire import tensors

DATASET, MODEL = "digits", "digits_cnn"
ROLES = ["honest"] * 5 + ["lazy", "lazy", "zeros", "noise", "replay"]
CHEATS = ("lazy", "zeros", "noise", "replay")
SHARDS = 10
TRAINING = TrainingConfig(epochs=2, batch_size=16, lr=0.05)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- calibration ---------------------------------------------------------------------------------
def train_task(spec: ModelSpec, state: Any, data: Any, cfg: LocalTrainConfig, threads: int, skip: Any = None) -> np.ndarray:
    """One public-data task as a node runs it (deterministic kernels), started with ``threads`` CPU threads."""
    m = build_model(MODEL, spec)
    m.load_state_dict(state)
    start = tensors.flatten(m.state_dict())
    torch.set_num_threads(threads)
    with deterministic():
        train_local(m, data, cfg, torch.device("cpu"), skip_step=skip)
    torch.set_num_threads(1)
    return tensors.flatten(m.state_dict()) - start


def calibrate(tasks: int, seed: int) -> dict[str, Any]:
    """Honest replicas' distance (threads 1 vs 2, CKKS with fresh randomness each) against each cheat's."""
    schema = get_schema(DATASET)
    spec = ModelSpec(schema.input_shape, schema.num_classes)
    keys = crypto.generate_keys("ckks")
    dec = keys.decryptor()
    rng = np.random.default_rng(seed)

    def through_ckks(delta: np.ndarray, weight: float) -> np.ndarray:
        enc = crypto.encryptor(keys.scheme, keys.params, keys.public_material, seed=int(rng.integers(2**31)))
        layout = crypto.ChunkLayout(delta.size, keys.values_per_chunk)
        values = [dec.decrypt(enc.encrypt(v), layout.chunk_values(i)) for i, v in enumerate(layout.split(delta, weight))]
        return np.asarray(layout.join(values)[0])

    honest: list[float] = []
    honest_plain: list[float] = []
    cheats: dict[str, list[float]] = {c: [] for c in CHEATS}
    for t in range(tasks):
        model = build_model(MODEL, spec, seed=seed + t)
        previous = tensors.flatten(build_model(MODEL, spec, seed=seed + 1000 + t).state_dict())
        start_state = model.state_dict()
        start = tensors.flatten(start_state)
        data = public_shard(DATASET, 0, seed, t % SHARDS, SHARDS)
        weight = len(data) * 1e-3
        cfg = LocalTrainConfig(epochs=TRAINING.epochs, batch_size=TRAINING.batch_size, lr=TRAINING.lr, momentum=TRAINING.momentum, seed=seed * 7919 + t)

        def run(threads: int, skip: Any = None, state: Any = start_state, data: Any = data, cfg: Any = cfg) -> np.ndarray:
            return train_task(spec, state, data, cfg, threads, skip)

        a, b = run(1), run(2)
        honest_plain.append(relative_distance(a, b))
        ref = through_ckks(a, weight)
        honest.append(relative_distance(ref, through_ckks(b, weight)))
        for _ in range(2):
            coin = np.random.default_rng(int(rng.integers(2**31)))
            cheats["lazy"].append(relative_distance(ref, through_ckks(run(1, lambda i, c=coin: bool(c.random() < LAZY_SKIP)), weight)))
        cheats["zeros"].append(relative_distance(ref, through_ckks(np.zeros_like(a), weight)))
        cheats["noise"].append(relative_distance(ref, through_ckks(rng.normal(0.0, float(np.std(a)), a.shape), weight)))
        cheats["replay"].append(relative_distance(ref, through_ckks(start - previous, weight)))
        log(f"  calibration task {t + 1}/{tasks}: honest {honest[-1]:.2e} (plaintext {honest_plain[-1]:.1e}), lazy {min(cheats['lazy'][-2:]):.3f}")
    tol = DEFAULT_REPLICA_TOLERANCE
    return {
        "tasks": tasks,
        "honest_distance_max": max(honest),
        "honest_distance_plaintext_max": max(honest_plain),
        "cheat_distance_min": {c: min(v) for c, v in cheats.items()},
        "per_check_detection": {c: sum(d > tol for d in v) / len(v) for c, v in cheats.items()},
        "tolerance": tol,
        "margin_over_honest": tol / max(max(honest), 1e-300),
        "margin_under_cheats": min(min(v) for v in cheats.values()) / tol,
    }


# ---- a job ---------------------------------------------------------------------------------------
def run_job(tag: str, replication: float, args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], dict[str, str], float]:
    run_dir = work / tag
    run_dir.mkdir(parents=True)
    job = JobConfig(
        name=f"bench-verify-{tag}", model=MODEL, dataset=DATASET, rounds=args.rounds, nodes_per_round=len(ROLES), min_nodes=ROLES.count("honest"),
        deadline_seconds=120.0, cohort_size=1, seed=args.seed, training=TRAINING, encryption=EncryptionConfig("ckks"),
        rewards=RewardsConfig(pool_per_round=100.0, budget=args.budget),
        public_data=PublicDataConfig(enabled=True, data_seed=args.seed, shards=SHARDS, replication=replication),
    ).validate()
    t0 = time.perf_counter()
    agg = LocalAggregator(str(run_dir / "agg.db"), run_dir / "spool")
    nodes = NodeThreads()
    roles: dict[str, str] = {}
    driver: JobDriver | None = None
    try:
        agg.start()
        for i, role in enumerate(ROLES):
            cfg = NodeConfig(aggregator=agg.address, data={}, identity_path=run_dir / "ids" / f"node{i}" / "id.pem", name=f"node{i}", poll_seconds=1)
            apply_behaviour(cfg, role)
            agent = nodes.start(cfg, f"node{i}")
            roles[agent.node_id] = role

        def progress(ev: dict[str, Any]) -> None:
            if ev["event"] == "round":
                flagged = [roles.get(n, n) for n in ev.get("flagged", [])]
                log(f"  [{tag}] round {ev['round']}/{args.rounds}: acc {ev['accuracy']:.3f}, checks {[c['outcome'] for c in ev.get('replicas', [])]}, flagged {flagged}, elapsed {ev['elapsed']:.0f}s")

        _, validation = public_split(DATASET, seed=args.seed)
        driver = JobDriver(agg.address, job, run_dir / "out", validation=validation, progress=progress)
        report = driver.run()
    finally:
        nodes.stop()
        if driver is not None:
            driver.channel.close()
        agg.stop()
    return report, roles, time.perf_counter() - t0


def rewards_by_role(report: dict[str, Any], roles: dict[str, str]) -> tuple[float, float]:
    """(cheats' total, everybody's total) of what the ledger was sent."""
    paid = {n: 0.0 for n in roles}
    for rec in report["rounds"]:
        for n, r in ((rec.get("valuation") or {}).get("rewards") or {}).items():
            paid[n] += float(r)
    return math.fsum(v for n, v in paid.items() if roles[n] != "honest"), math.fsum(paid.values())


def checked_figures(report: dict[str, Any], roles: dict[str, str]) -> dict[str, Any]:
    node_rounds = checked_node_rounds = 0
    extra = total = 0.0
    tasks = replicated = 0
    flagged_round: dict[str, int] = {}
    disputes_against: dict[str, list[bool]] = {c: [] for c in CHEATS}
    for rec in report["rounds"]:
        secs = rec["train_seconds"]
        total += math.fsum(secs.values())
        checks = rec.get("replicas", [])
        node_rounds += len(rec["participants"])
        fresh = [c for c in checks if "settles" not in c]
        checked_node_rounds += sum(len(r["members"]) for r in rec.get("replica_sets", []) if not r["settles"])
        settles = [c for c in checks if "settles" in c]
        reruns = [c for c in settles if c.get("third")]  # the others the driver settled by its own run
        tasks += len(rec["participants"]) - sum(len(c["members"]) - 1 for c in fresh) - len(reruns)
        replicated += len(fresh)
        for c in fresh:  # all but one replica of a task is extra work
            extra += math.fsum(sorted(secs.get(m, 0.0) for m in c["members"])[1:])
        for c in reruns:
            extra += secs.get(c["third"], 0.0)  # its task re-ran a disputed one: none of this round's
        for c in settles:
            for m in c["members"]:
                if roles[m] != "honest":
                    disputes_against[roles[m]].append(m in c["flagged"])
        for n in rec.get("flagged", []):
            flagged_round.setdefault(n, rec["round"])
    cheats_paid, all_paid = rewards_by_role(report, roles)
    honest = [n for n, r in roles.items() if r == "honest"]
    released = (report.get("verification") or {}).get("released_at_end", {})
    return {
        "check_probability": checked_node_rounds / max(node_rounds, 1),
        "replicated_task_share": replicated / max(tasks, 1),
        "flagged_round": {f"{roles[n]}:{n}": r for n, r in flagged_round.items()},
        "honest_flagged": sum(n in flagged_round for n in honest),
        "false_flag_rate": sum(n in flagged_round for n in honest) / len(honest),
        "settled_against": {c: (sum(v) / len(v) if v else None) for c, v in disputes_against.items()},
        "replication_extra_node_seconds": extra,
        "node_seconds": total,
        "cheat_reward_share": cheats_paid / all_paid if all_paid > 0 else 0.0,
        # honest nodes never checked by the end: what they earned is still held (pay_after_check)
        "honest_held_unpaid_share": math.fsum(v for n, v in (report.get("verification") or {}).get("held", {}).items() if roles.get(n) == "honest")
        / max(all_paid + math.fsum((report.get("verification") or {}).get("held", {}).values()), 1e-12),
        # held pay of nodes never flagged, paid in the last round (docs/verification.md, the end of a job)
        "honest_released_at_end_share": math.fsum(v for n, v in released.items() if roles.get(n) == "honest") / max(all_paid, 1e-12),
        "cheat_released_at_end": math.fsum(v for n, v in released.items() if roles.get(n) != "honest"),
        "rewards_paid": all_paid,
        "verification": report.get("verification"),
        "final_accuracy": report["final_accuracy"],
    }


def plan_check_probability(nodes: int, replication: float, draws: int = 20_000) -> float:
    """The share of a round's members whose task the aggregator replicates, from its own plan (fedgpu.aggregator.replication)."""
    import random

    from fedgpu.aggregator.replication import plan_round
    from fedgpu.wire.records import PublicDataPlan

    rng = random.Random(0)
    names = [f"n{i}" for i in range(nodes)]
    plan = PublicDataPlan(shards=nodes, replication=replication)
    twice = sum(sum(len(t.members) for t in plan_round(plan, 0, 1, 0, names, rng).tasks if len(t.members) > 1) for _ in range(draws))
    return twice / (draws * nodes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibration-tasks", type=int, default=6)
    ap.add_argument("--replication", type=float, default=0.1)
    ap.add_argument("--budget", type=int, default=64, help="Shapley evaluations a round (the valuer's budget)")
    ap.add_argument("--quick", action="store_true", help="5 rounds, 2 calibration tasks")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.calibration_tasks = 5, 2
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    log("calibration")
    cal = calibrate(args.calibration_tasks, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        work = Path(tmp)
        log("checked job")
        report, roles, secs_checked = run_job("checked", args.replication, args, work)
        checked = checked_figures(report, roles)
        log("unchecked job (baseline)")
        base, base_roles, secs_unchecked = run_job("unchecked", 0.0, args, work)
        base_cheats, base_all = rewards_by_role(base, base_roles)
    q = checked["check_probability"]
    q_plan = plan_check_probability(len(ROLES), args.replication)
    horizon = 20
    detection: dict[str, float] = {}
    for c in CHEATS:
        settle = checked["settled_against"][c]
        d = cal["per_check_detection"][c] * (settle if settle is not None else 1.0)
        detection[c] = 1.0 - (1.0 - q * d) ** horizon
    cheat_nodes = [f"{r}:{n}" for n, r in roles.items() if r != "honest"]
    out = {
        "bench": "verify",
        "dataset": DATASET,
        "model": MODEL,
        "nodes": len(ROLES),
        "roles": {r: ROLES.count(r) for r in sorted(set(ROLES))},
        "rounds": args.rounds,
        "replication": args.replication,
        "encryption": "ckks",
        "tolerance": cal["tolerance"],
        "calibration": cal,
        "check_probability": q,
        "check_probability_plan": q_plan,
        "replicated_task_share": checked["replicated_task_share"],
        "detection_probability": detection,
        "detection_probability_min": min(detection.values()),
        "detection_horizon_rounds": horizon,
        "flagged_in_run": {n: checked["flagged_round"].get(n) for n in cheat_nodes},
        "cheats_flagged_in_run": sum(checked["flagged_round"].get(n) is not None for n in cheat_nodes),
        "false_flag_rate": checked["false_flag_rate"],
        "replication_overhead": checked["replication_extra_node_seconds"],
        "replication_overhead_share": checked["replication_extra_node_seconds"] / max(checked["node_seconds"], 1e-9),
        "node_seconds": checked["node_seconds"],
        "cheat_reward_share": checked["cheat_reward_share"],
        "honest_held_unpaid_share": checked["honest_held_unpaid_share"],
        "honest_released_at_end_share": checked["honest_released_at_end_share"],
        "cheat_released_at_end": checked["cheat_released_at_end"],
        "cheat_reward_share_unchecked": base_cheats / base_all if base_all > 0 else 0.0,
        "final_accuracy": checked["final_accuracy"],
        "final_accuracy_unchecked": base["final_accuracy"],
        "seconds_checked": secs_checked,
        "seconds_unchecked": secs_unchecked,
        "verification": checked["verification"],
        "seconds": time.perf_counter() - t0,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(), "note": "shared, loaded machine"},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
