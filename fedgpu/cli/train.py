"""``fedgpu train JOB.toml``: submit a job and stay attached until it ends."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="submit a job and drive it to the end", description="Submit a training job (a TOML spec, see examples/) and drive it: decrypt cohort sums, aggregate, evaluate, publish. Writes OUT/model.safetensors and OUT/report.json.")
    p.add_argument("job", type=Path, help="job spec (TOML)")
    p.add_argument("--aggregator", default="127.0.0.1:50051", help="aggregator HOST:PORT (default %(default)s)")
    p.add_argument("--out", type=Path, default=Path("runs/latest"), help="output folder (default %(default)s)")
    p.add_argument("--validation", type=Path, default=None, help="held-out .npz/.csv (default: the public test split of the job's dataset)")
    p.set_defaults(func=run)


def print_progress(ev: dict[str, Any]) -> None:
    kind = ev["event"]
    if kind == "submitted":
        print(f"job {ev['job']} submitted ({ev['params']:,} parameters)", flush=True)
    elif kind == "round":
        eps = [v for v in ev.get("epsilon", {}).values()]
        eps_s = f"  eps {max(eps):.2f}" if eps else ""
        print(
            f"round {ev['round']:>3}  nodes {len(ev['participants']):>3}  acc {ev['accuracy']:.3f}  loss {ev['loss']:.3f}"
            f"  {ev['seconds']:.1f}s  up {ev['bytes_up'] / 1e6:.2f} MB{eps_s}  elapsed {ev['elapsed']:.0f}s",
            flush=True,
        )
    elif kind in ("retry", "reconnect"):
        print(f"  {kind}: {ev.get('message', '')}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from fedgpu.config import load_job
    from fedgpu.datasets import get_schema, load_file
    from fedgpu.driver.driver import JobDriver

    job = load_job(args.job)
    validation = load_file(args.validation, get_schema(job.dataset)) if args.validation else None
    driver = JobDriver(args.aggregator, job, args.out, validation=validation, progress=print_progress)
    report = driver.run()
    print(f"final accuracy {report['final_accuracy']:.3f}; model and report in {args.out}")
    return 0


__all__ = ["print_progress", "register", "run"]
