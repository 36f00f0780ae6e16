"""``fedgpu train JOB.toml``: submit a job and stay attached until it ends."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train", help="submit a job and drive it to the end",
        description="Submit a training job (a TOML spec, see examples/) and drive it: decrypt cohort sums, aggregate, evaluate, publish. "
        "Writes OUT/model.safetensors and OUT/report.json. A driver that was stopped or killed re-attaches with --resume OUT.",
    )
    p.add_argument("job", type=Path, nargs="?", help="job spec (TOML); not with --resume")
    p.add_argument("--resume", type=Path, default=None, metavar="OUT", help="re-attach to the running job whose driver wrote OUT (its --out folder)")
    p.add_argument("--aggregator", default="127.0.0.1:50051", help="aggregator HOST:PORT (default %(default)s)")
    p.add_argument("--tls-ca", type=Path, default=None, metavar="PEM", help="trust the aggregator's certificate if this CA signed it (default: cleartext on loopback, the system's CAs elsewhere)")
    p.add_argument("--insecure", action="store_true", help="cleartext even to a non-loopback aggregator (only behind a VPN or a TLS proxy)")
    p.add_argument("--out", type=Path, default=Path("runs/latest"), help="output folder (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads for the driver's evaluations (default 1: see docs/protocol.md, \"Valuation cost\")")
    p.add_argument("--validation", type=Path, default=None, help="held-out .npz/.csv (default: the public test split of the job's dataset)")
    p.set_defaults(func=run)


def _duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m: how long, at a glance."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def print_progress(ev: dict[str, Any]) -> None:
    kind = ev["event"]
    if kind == "submitted":
        print(f"job {ev['job']} submitted ({ev['params']:,} parameters)", flush=True)
    elif kind == "round":
        eps = [v for v in ev.get("epsilon", {}).values()]
        eps_s = f"  eps {max(eps):.2f}" if eps else ""
        drop_s = "".join(f"  dropped cohort {d['cohort']}: {d['reason']}" for d in ev.get("dropped_cohorts", []) if d["rule"] != "replica")
        checks = [c["outcome"] for c in ev.get("replicas", [])]  # a public-data job's spot checks (docs/verification.md)
        if checks:
            drop_s += "  checks: " + ", ".join(f"{checks.count(o)} {o}" for o in sorted(set(checks)))
        if ev.get("flagged"):
            drop_s += f"  flagged: {', '.join(ev['flagged'])}"
        driver = ev.get("driver_seconds", 0.0) + ev.get("publish_seconds", 0.0)
        total = f"/{ev['rounds_total']}" if "rounds_total" in ev else ""
        eta = f"  eta {_duration(ev['eta'])}" if ev.get("eta") is not None and ev.get("rounds_total", 0) > ev["round"] else ""
        print(
            f"round {ev['round']:>3}{total}  nodes {len(ev['participants']):>3}  acc {ev['accuracy']:.3f}  loss {ev['loss']:.3f}"
            f"  {ev['seconds']:.1f}s + driver {driver:.1f}s  up {ev['bytes_up'] / 1e6:.2f} MB{eps_s}  elapsed {_duration(ev['elapsed'])}{eta}{drop_s}",
            flush=True,
        )
    elif kind == "resumed":
        print(f"job {ev['job']} resumed at model version {ev['version']}", flush=True)
    elif kind in ("retry", "reconnect"):
        print(f"  {kind}: {ev.get('message', '')}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from fedgpu.config import load_job
    from fedgpu.driver.driver import DRIVER_THREADS, JobDriver
    from fedgpu.errors import ConfigError, FedgpuError
    from fedgpu.wire.transport import TLSConfig

    if (args.job is None) == (args.resume is None):
        raise ConfigError("give a job spec to submit, or --resume OUT to re-attach to a running job (not both)")
    tls = TLSConfig(ca=args.tls_ca, insecure=args.insecure)
    threads = DRIVER_THREADS if args.threads is None else args.threads
    if args.resume is not None:
        driver = JobDriver.resume(args.aggregator, args.resume, progress=print_progress, tls=tls, threads=threads)
        out = args.resume
    else:
        driver = JobDriver(args.aggregator, load_job(args.job), args.out, validation_path=args.validation, progress=print_progress, tls=tls, threads=threads)
        out = args.out
    try:
        report = driver.run()
    except KeyboardInterrupt:
        print(f"driver stopped; the job waits for it (its lease): `fedgpu train --resume {out}` re-attaches, `fedgpu jobs cancel --out {out}` ends it", file=sys.stderr)
        raise
    except FedgpuError:
        if (out / "report.json").exists():
            print(f"the report says why and what was done: {out / 'report.html'}", file=sys.stderr)
        raise
    print(f"final accuracy {report['final_accuracy']:.3f}; model and report in {out} (report.html, report.json, metrics.csv, model.safetensors)")
    return 0


__all__ = ["print_progress", "register", "run"]
