"""Robust aggregation benchmark: each rule of fedgpu.aggregation against one sign-flipping poisoner.

Everything is the real loop in one process, as in scripts/bench_valuation.py: a LocalAggregator
(grpc.aio on 127.0.0.1), NodeAgent threads, a JobDriver. MNIST-1D, 10 nodes with 400 samples each
(disjoint slices of one generated train split), 9 of them a round (``--per-round``; 10: all,
every round), chosen by ``[selection] rule = "utility"`` (``--selection``; the poisoner's
non-positive value estimates give it less and less work, so its honest cohort-mates are lost less
often), cohorts of k = 3 (3 cohorts of 3). For each rule and
each seed (``--seeds``; the seed draws the data, the split and the training), up to three jobs on the
same data (``--runs``, default clean and poisoned):

  clean     10 honest nodes, rewards on: the accuracy the rule reaches when nobody attacks.
  poisoned  9 honest nodes + 1 poisoner (``signflip``: it sends -10 x its honest update, through
            fedgpu.adversaries.apply_behaviour), rewards on: the driver's paired-test elimination
            (RoundValuer.keep) composes with the rule, and the game valued is the rule's.
  alone     the poisoned nodes with rewards off: the rule by itself, nothing left out by valuation.

Reported per rule, as the mean over the seeds (each seed's own figures under ``seeds``): the final
model's accuracy in each job on 2,000 held-out samples the driver never sees (``*_accuracy``; beside it the driver's own on its 500-sample validation set, which valuation and
the elimination also use), the drop from clean to poisoned in points, the poisoner's total reward
(target 0) and its share of all rewards, and the rounds in which the poisoner's cohort was in the
round's model. A job whose model the poisoner makes diverge (nodes' training then fails and rounds
cannot gather their nodes) is reported with its last model and ``*_failed``. Encryption is "none":
the rules see only decrypted cohort sums, which are the same under CKKS up to its noise.

Prints ONE JSON object (stdout); progress goes to stderr.

    .venv/bin/python scripts/bench_robust.py            # 20 rounds, 2 seeds x 4 rules x (clean, poisoned): ~9 min
    .venv/bin/python scripts/bench_robust.py --quick    # 3 rounds, one seed: a smoke run, numbers mean little
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: node threads share 2 cores

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedgpu.adversaries import apply_behaviour
from fedgpu.aggregator.local import LocalAggregator
from fedgpu.config import AggregationConfig, EncryptionConfig, JobConfig, RewardsConfig, SelectionConfig, TrainingConfig
from fedgpu.datasets import ArrayDataset, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.errors import RoundFailed
from fedgpu.evaluation import evaluate
from fedgpu.node.agent import NodeConfig
from fedgpu.node.threads import NodeThreads

DATASET = "mnist1d"
NODES = 10
SAMPLES = 400
POOL = 100.0
K = 3


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rules(trim_fraction: float, norm_bound: float) -> dict[str, AggregationConfig]:
    return {
        "fedavg": AggregationConfig("fedavg"),
        "median": AggregationConfig("median"),
        "trimmed_mean": AggregationConfig("trimmed_mean", trim_fraction=trim_fraction),
        "norm_bounded": AggregationConfig("norm_bounded", norm_bound=norm_bound),
    }


def write_node_files(train: ArrayDataset, work: Path, seed: int) -> list[Path]:
    perm = np.random.default_rng(seed).permutation(len(train))
    files = []
    for i in range(NODES):
        f = work / "data" / f"node{i}.npz"
        f.parent.mkdir(parents=True, exist_ok=True)
        save_npz(f, train.subset(np.sort(perm[i * SAMPLES : (i + 1) * SAMPLES])))
        files.append(f)
    return files


def run_job(
    tag: str, behaviours: list[str], files: list[Path], agg_cfg: AggregationConfig, pool: float, args: argparse.Namespace, validation: ArrayDataset, test: ArrayDataset, work: Path
) -> tuple[dict[str, Any], dict[str, str], float, float]:
    """One job to the end: (report, node_id -> behaviour, wall seconds, the final model's accuracy on
    ``test``). Stops everything it started."""
    run_dir = work / tag
    run_dir.mkdir(parents=True)
    job = JobConfig(
        name=f"bench-robust-{tag}",
        model=args.model,
        dataset=DATASET,
        rounds=args.rounds,
        nodes_per_round=args.per_round,
        min_nodes=args.per_round,
        deadline_seconds=120.0,
        cohort_size=K,
        seed=args.seed,
        training=TrainingConfig(epochs=args.epochs, batch_size=32, lr=0.05),
        encryption=EncryptionConfig("none"),
        rewards=RewardsConfig(pool_per_round=pool),
        aggregation=agg_cfg,
        selection=SelectionConfig(args.selection, over_select=0.0),
    ).validate()
    t0 = time.perf_counter()
    agg = LocalAggregator(str(run_dir / "agg.db"), run_dir / "spool")
    nodes = NodeThreads()
    roles: dict[str, str] = {}
    driver: JobDriver | None = None
    try:
        agg.start()
        for i, (f, behaviour) in enumerate(zip(files, behaviours, strict=True)):
            cfg = NodeConfig(aggregator=agg.address, data={DATASET: f}, identity_path=work / "ids" / f"node{i}" / "id.pem", name=f"node{i}", poll_seconds=1)
            apply_behaviour(cfg, behaviour)
            agent = nodes.start(cfg, f"node{i}")
            roles[agent.node_id] = behaviour

        def progress(ev: dict[str, Any]) -> None:
            if ev["event"] == "round":
                log(f"  [{tag}] round {ev['round']}/{args.rounds}: acc {ev['accuracy']:.3f} loss {ev['loss']:.3f} excluded {ev['excluded_cohorts']}  elapsed {ev['elapsed']:.0f}s")
            elif ev["event"] in ("retry", "reconnect"):
                log(f"  [{tag}] {ev['event']}: {ev.get('message', '')}")

        driver = JobDriver(agg.address, job, run_dir / "out", validation=validation, progress=progress)
        try:
            report = driver.run()
        except RoundFailed as exc:  # a model the poisoner made diverge: nodes' training fails, rounds cannot gather
            log(f"  [{tag}] failed: {exc}")
            report = {"final_accuracy": driver.rounds[-1]["accuracy"] if driver.rounds else 0.0, "rounds": driver.rounds, "failed": str(exc)}
        driver.model.load_state_dict(driver.state)  # the last model the driver applied
        test_accuracy, _ = evaluate(driver.model, test)
    finally:
        nodes.stop()
        if driver is not None:
            driver.channel.close()
        agg.stop()
    return report, roles, time.perf_counter() - t0, test_accuracy


def poisoner_figures(report: dict[str, Any], roles: dict[str, str]) -> dict[str, Any]:
    """The poisoner's rewards and how often its cohort was part of the round's model."""
    poisoner = next(n for n, r in roles.items() if r == "signflip")
    rewards = {n: 0.0 for n in roles}
    in_model = rounds_in = 0
    for rec in report["rounds"]:
        for n, r in ((rec.get("valuation") or {}).get("rewards") or {}).items():
            rewards[n] += float(r)
        cohort = next((i for i, c in enumerate(rec["cohorts"]) if poisoner in c), None)
        if cohort is None:  # not chosen this round (selection by measured value)
            continue
        rounds_in += 1
        in_model += cohort not in rec["excluded_cohorts"]
    total = math.fsum(rewards.values())
    honest = [v for n, v in rewards.items() if n != poisoner]
    return {
        "poisoner_reward": rewards[poisoner],
        "poisoner_reward_share": rewards[poisoner] / total if total > 0 else 0.0,
        "honest_reward_median": statistics.median(honest),
        "rounds_poisoner_cohort_in_model": in_model,
        "rounds_poisoner_chosen": rounds_in,
    }


def one_seed(seed: int, chosen: list[str], runs: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every chosen rule's jobs on one seed's data: rule -> figures of this seed."""
    plans = rules(args.trim_fraction, args.norm_bound)
    total = max(math.ceil((NODES * SAMPLES + 10) / 0.8), math.ceil((args.validation + args.test) / 0.2))  # public_split keeps 20 % for test
    log(f"seed {seed}: generating MNIST-1D ({total} samples) ...")
    train, held_out = public_split(DATASET, num_samples=total, seed=seed)
    validation = held_out.subset(np.arange(args.validation))
    test = held_out.subset(np.arange(args.validation, min(args.validation + args.test, len(held_out))))
    clean = ["honest"] * NODES
    poisoned = ["honest"] * (NODES - 1) + ["signflip"]
    jobs = {"clean": (clean, POOL), "poisoned": (poisoned, POOL), "alone": (poisoned, 0.0)}
    seed_args = argparse.Namespace(**{**vars(args), "seed": seed})
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fedgpu-bench-robust-") as tmp:
        work = Path(tmp)
        files = write_node_files(train, work, seed)
        for name in chosen:
            fig: dict[str, Any] = {}
            for run in runs:
                behaviours, pool = jobs[run]
                log(f"seed {seed} {name} / {run}: {NODES} nodes ({behaviours.count('signflip')} poisoner), k = {K}, rewards {'on' if pool else 'off'}, {args.rounds} rounds")
                report, roles, wall, test_accuracy = run_job(f"{name}-{run}", behaviours, files, plans[name], pool, seed_args, validation, test, work)
                log(f"seed {seed} {name} / {run} done in {wall:.0f}s, final accuracy {test_accuracy:.3f} on the test set, {report['final_accuracy']:.3f} on the driver's validation set")
                fig[f"{run}_accuracy"] = test_accuracy
                fig[f"{run}_validation_accuracy"] = report["final_accuracy"]
                if "failed" in report:
                    fig[f"{run}_failed"] = f"after {len(report['rounds'])} rounds: {report['failed']}"
                fig[f"{run}_wall_s"] = round(wall, 1)
                if run in ("poisoned", "alone") and "signflip" in roles.values():
                    figures = poisoner_figures(report, roles)
                    if run == "poisoned":
                        fig.update(figures)
                    else:
                        fig["alone_rounds_poisoner_cohort_in_model"] = figures["rounds_poisoner_cohort_in_model"]
            if "clean_accuracy" in fig and "poisoned_accuracy" in fig:
                fig["drop_points"] = round(100 * (fig["clean_accuracy"] - fig["poisoned_accuracy"]), 2)
            if "alone_accuracy" in fig and "clean_accuracy" in fig:
                fig["alone_drop_points"] = round(100 * (fig["clean_accuracy"] - fig["alone_accuracy"]), 2)
            out[name] = fig
    return out


def summary(by_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One rule's figures over the seeds: means of the accuracies and the drop, the poisoner's reward summed."""
    figs = list(by_seed.values())
    out: dict[str, Any] = {}
    for key in ("clean_accuracy", "poisoned_accuracy", "alone_accuracy", "drop_points", "alone_drop_points"):
        vals = [f[key] for f in figs if key in f]
        if vals:
            out[key] = round(statistics.fmean(vals), 4)
    if "drop_points" in out:
        out["drop_points_max"] = max(f["drop_points"] for f in figs)
        out["within_2_points"] = out["drop_points"] <= 2.0
    if any("poisoner_reward" in f for f in figs):
        out["poisoner_reward"] = math.fsum(f.get("poisoner_reward", 0.0) for f in figs)
        out["poisoner_reward_share_max"] = max(f.get("poisoner_reward_share", 0.0) for f in figs)
    out["seeds"] = {str(s): f for s, f in by_seed.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="3 rounds, one seed: a smoke run")
    ap.add_argument("--seeds", default="0,1", help="comma-separated: every rule runs on each seed's data; the drop is the mean over seeds")
    ap.add_argument("--model", default="cnn1d")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--validation", type=int, default=500, help="held-out samples the driver evaluates and values on")
    ap.add_argument("--test", type=int, default=2000, help="other held-out samples the final models are scored on (the driver never sees them)")
    ap.add_argument("--trim-fraction", type=float, default=0.34, help="trimmed_mean: with 3 cohorts, >= 1/3 cuts one from each end")
    ap.add_argument("--norm-bound", type=float, default=1.5, help="norm_bounded: about an honest cohort's mean update early on (1.2-1.8 measured)")
    ap.add_argument("--rules", default="fedavg,median,trimmed_mean,norm_bounded")
    ap.add_argument("--per-round", type=int, default=NODES - 1, help="nodes a round (default %(default)s of the 10: selection has a choice; 10: all, every round)")
    ap.add_argument("--selection", choices=["uniform", "utility"], default="utility", help="[selection] rule: utility gives nodes with non-positive value estimates less work")
    ap.add_argument("--runs", default="clean,poisoned", help="a subset of clean,poisoned,alone (alone: the rule with rewards off)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.quick:
        args.rounds, seeds = 3, seeds[:1]
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    chosen = [r for r in args.rules.split(",") if r]
    runs = [r for r in args.runs.split(",") if r]
    per_seed = {seed: one_seed(seed, chosen, runs, args) for seed in seeds}
    plans = rules(args.trim_fraction, args.norm_bound)
    out: dict[str, Any] = {"benchmark": "robust", "rules": {}}
    for name in chosen:
        plan = plans[name]
        out["rules"][name] = {
            "plan": {"rule": plan.rule, **({"trim_fraction": plan.trim_fraction} if name == "trimmed_mean" else {}), **({"norm_bound": plan.norm_bound} if name == "norm_bounded" else {})},
            **summary({seed: per_seed[seed][name] for seed in seeds}),
        }
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    out["settings"] = {
        "dataset": DATASET,
        "nodes": NODES,
        "samples_per_node": SAMPLES,
        "poisoner": "signflip: -10 x its honest update, one node of 10",
        "k": K,
        "per_round": args.per_round,
        "selection": args.selection,
        "cohorts_per_round": args.per_round // K,
        "rounds": args.rounds,
        "model": args.model,
        "epochs": args.epochs,
        "validation_samples": args.validation,
        "test_samples": args.test,
        "seeds": seeds,
        "pool_per_round": POOL,
        "encryption": "none",
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
