"""``fedgpu budget``: what a data owner's privacy ledger says was spent, per job and dataset, and what is left."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedgpu.errors import ConfigError

if TYPE_CHECKING:  # the ledger pulls in torch and Opacus: only when the command runs, not when the CLI loads
    from fedgpu.privacy.ledger import JobSpend

DEFAULT_LEDGER = Path("~/.fedgpu/privacy.db")  # the same default as fedgpu.privacy.ledger.DEFAULT_LEDGER


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "budget",
        help="privacy budget spent on this owner's data",
        description=(
            "Show the epsilon spent per job and per dataset, recomputed with Opacus from the node's privacy "
            "ledger, and what is left under a cap. Datasets are disjoint, so the cap applies to each one."
        ),
    )
    p.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER, help="the owner's ledger file (default %(default)s)")
    p.add_argument("--delta", type=float, default=1e-5, help="delta at which to report epsilon (default %(default)s)")
    p.add_argument("--cap", type=float, default=None, help="the owner's epsilon cap, to show what is left")
    p.add_argument("--accountant", choices=["prv", "rdp"], default="prv", help="Opacus accountant (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _row(j: JobSpend, cap: float | None) -> dict[str, Any]:
    return {
        "owner": j.owner,
        "dataset": j.dataset_fp,
        "job": j.job_id,
        "rounds": j.rounds,
        "steps": j.steps,
        "epsilon_job": round(j.epsilon_job, 6),
        "epsilon_dataset": round(j.epsilon_dataset, 6),
        "left": None if cap is None else round(max(cap - j.epsilon_dataset, 0.0), 6),
        "first": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.first_at)),
        "last": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.last_at)),
    }


def run(args: argparse.Namespace) -> int:
    from fedgpu.privacy.ledger import OwnerLedger

    path = Path(args.ledger).expanduser()
    if not path.exists():
        raise ConfigError(f"no privacy ledger at {path}; a node creates it with its first DP task (or pass --ledger)")
    if args.cap is not None and not args.cap > 0:
        raise ConfigError(f"--cap must be a positive number, got {args.cap}")
    ledger = OwnerLedger(path, accountant=args.accountant)
    rows = [_row(j, args.cap) for j in ledger.by_job(args.delta)]
    datasets: dict[str, float] = {}
    for r in rows:
        datasets[str(r["dataset"])] = float(r["epsilon_dataset"])
    summary = {
        "ledger": str(path),
        "delta": args.delta,
        "accountant": args.accountant,
        "cap": args.cap,
        "jobs": rows,
        "datasets": [
            {"dataset": fp, "epsilon": eps, "left": None if args.cap is None else round(max(args.cap - eps, 0.0), 6)}
            for fp, eps in datasets.items()
        ],
        "epsilon_owner": max(datasets.values(), default=0.0),  # disjoint datasets compose in parallel
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if not rows:
        print(f"{path}: no DP task recorded; nothing spent")
        return 0
    print(f"{path}  (epsilon at delta={args.delta:g}, {args.accountant.upper()} accountant)")
    header = f"{'dataset':<16} {'job':<20} {'rounds':>6} {'steps':>7} {'eps job':>9} {'eps data':>9}"
    header += f" {'left':>8}" if args.cap is not None else ""
    print(header)
    for r in rows:
        line = f"{str(r['dataset'])[7:21]:<16} {str(r['job'])[:20]:<20} {r['rounds']:>6} {r['steps']:>7} "
        line += f"{float(r['epsilon_job']):>9.4f} {float(r['epsilon_dataset']):>9.4f}"
        if args.cap is not None:
            line += f" {float(r['left']):>8.4f}"
        print(line)
    for d in summary["datasets"]:
        tail = "" if args.cap is None else f", {d['left']:.4f} left under the cap {args.cap:g}"
        print(f"dataset {str(d['dataset'])[7:21]}: epsilon {d['epsilon']:.4f}{tail}")
    return 0


__all__ = ["DEFAULT_LEDGER", "register", "run"]
