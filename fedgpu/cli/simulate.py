"""``fedgpu simulate JOB.toml --nodes N``: the job over N simulated nodes on Ray (docs/simulate.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate", help="run a job over simulated nodes on Ray (pip install \"fedgpu[sim]\")",
        description="Run a job spec over N simulated nodes: the real local training, cohorts, encryption, adder and driver "
        "(decrypt, aggregate, value, evaluate) in process, on a local Ray or a Ray cluster; no gRPC. Writes OUT/report.json "
        "like `fedgpu train`. Needs Ray: pip install \"fedgpu[sim]\". See docs/simulate.md.",
    )
    p.add_argument("job", type=Path, help="job spec (TOML, see examples/)")
    p.add_argument("--nodes", type=int, required=True, help="simulated nodes in the population")
    p.add_argument("--per-round", type=int, default=None, metavar="M", help="nodes chosen each round (default: the job's nodes_per_round)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default: the job's)")
    p.add_argument("--partition", default="iid", choices=["iid", "dirichlet"], help="how nodes' data is drawn (default %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration over labels (default %(default)s; smaller: more skewed)")
    p.add_argument("--samples-per-node", type=int, default=None, metavar="S", help="each node's samples (default: the training set split evenly, at least one batch)")
    p.add_argument("--train-samples", type=int, default=None, metavar="T", help="samples to generate for the dataset (train + test; default: its default)")
    p.add_argument("--speed-mix", default="", metavar="SPEED=SHARE,...", help="node speeds relative to this machine, e.g. 1=0.9,0.01=0.1 (the rest: 1); a node whose training / speed exceeds deadline_seconds is late")
    p.add_argument("--behaviour-mix", default="", metavar="NAME=SHARE,...", help="adversarial shares, e.g. free_rider=0.1,signflip=0.05 (free_rider, zeros, noise, replay, signflip, labelflip; the rest honest)")
    p.add_argument("--address", default=None, help="a Ray cluster: auto, or ray://HOST:10001 (default: a local Ray on this machine)")
    p.add_argument("--workers", type=int, default=None, help="Ray actors training nodes (default: one per CPU)")
    p.add_argument("--out", type=Path, default=Path("runs/simulate"), help="output folder (default %(default)s)")
    p.set_defaults(func=run)


def print_round(ev: dict[str, Any]) -> None:
    """fedgpu train's round line, then where the round's time went."""
    from fedgpu.cli.train import print_progress

    print_progress(ev)
    if ev["event"] == "round":
        sim = ev["simulation"]
        split = "  ".join(f"{k} {v:.1f}s" for k, v in sim["phases"].items())
        late = f"  late {sim['late']}" if sim["late"] else ""
        print(f"          wall {sim['wall_seconds']:.1f}s  by phase: {split}{late}", flush=True)


def run(args: argparse.Namespace) -> int:
    from fedgpu.config import load_job
    from fedgpu.simulation.population import parse_mix, parse_speeds
    from fedgpu.simulation.runner import SimulationConfig, import_ray, run_simulation

    import_ray()  # before anything slow: without Ray, say how to install it
    from fedgpu.adversaries import BEHAVIOURS

    cfg = SimulationConfig(
        nodes=args.nodes, per_round=args.per_round, rounds=args.rounds, partition=args.partition, alpha=args.alpha,
        samples_per_node=args.samples_per_node, train_samples=args.train_samples, speeds=parse_speeds(args.speed_mix),
        behaviours=parse_mix(args.behaviour_mix, "--behaviour-mix", BEHAVIOURS), address=args.address, workers=args.workers,
    )
    job = load_job(args.job)
    report = run_simulation(job, cfg, args.out, progress=print_round)
    sim = report["simulation"]
    print(
        f"final accuracy {report['final_accuracy']:.3f} over {sim['nodes']:,} simulated nodes ({sim['per_round']:,} a round, k = {sim['cohort_size']}); "
        f"report in {args.out} (report.html, report.json, metrics.csv, model.safetensors)",
        file=sys.stdout,
    )
    return 0


__all__ = ["print_round", "register", "run"]
