"""``fedgpu jobs``: list and show the aggregator's jobs, and cancel one with its driver's token."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "jobs", help="list, show or cancel jobs",
        description="List or show the jobs in an aggregator's database (--db), or cancel a running job "
        "through the aggregator with the token its driver keeps in OUT/job.json (--out).",
    )
    p.add_argument("action", nargs="?", choices=["list", "show", "cancel"], default="list", help="list (default), show JOB, or cancel")
    p.add_argument("job", nargs="?", default=None, help="show: the job id")
    p.add_argument("--db", default="fedgpu.db", help="list/show: the aggregator's database URL or SQLite file (default %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="cancel: the driver's --out folder (holds the job id and token)")
    p.add_argument("--aggregator", default="127.0.0.1:50051", help="cancel: aggregator HOST:PORT (default %(default)s)")
    p.add_argument("--reason", default="cancelled by its driver", help="cancel: why (stored with the job)")
    p.add_argument("--tls-ca", type=Path, default=None, metavar="PEM", help="cancel: trust the aggregator's certificate if this CA signed it")
    p.add_argument("--insecure", action="store_true", help="cancel: cleartext even to a non-loopback aggregator")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedgpu.errors import ConfigError

    if args.action == "cancel":
        if args.out is None:
            raise ConfigError("cancel needs --out: the driver's output folder, whose job.json holds the job's token")
        return _cancel(args)
    from fedgpu.cli.rewards import _open

    store = _open(args.db)
    try:
        if args.action == "show":
            if not args.job:
                raise ConfigError("show needs a job id (see `fedgpu jobs list`)")
            job = store.job(args.job)
            rounds = [
                {"round": r["round"], "state": r["state"], "participants": len(r["record"].participants), "cohorts": len(r["record"].cohorts),
                 "accuracy": r["result"].get("accuracy"), "seconds": round(r["record"].seconds, 2)}
                for r in store.rounds_of(job.id)
            ]
            print(json.dumps({"id": job.id, "name": job.name, "state": job.state, "round": job.round, "model_version": job.model_version,
                              "message": job.message, "paid": store.paid(job.id), "rounds": rounds}, indent=2))
            return 0
        print(f"{'job':<18} {'name':<16} {'state':<14} {'version':>7}  message")
        for job in store.all_jobs():
            print(f"{job.id:<18} {job.name[:16]:<16} {job.state:<14} {max(job.model_version, 0):>7}  {job.message[:60]}")
        return 0
    finally:
        store.engine.dispose()


def _cancel(args: argparse.Namespace) -> int:
    from fedgpu.errors import ConfigError
    from fedgpu.proto.fedgpu.v1 import driver_pb2, driver_pb2_grpc
    from fedgpu.wire.transport import TLSConfig, open_channel, rpc_errors

    try:
        info = json.loads((args.out / "job.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{args.out}/job.json is missing or unreadable: is {args.out} a driver's --out folder?") from exc
    with open_channel(args.aggregator, TLSConfig(ca=args.tls_ca, insecure=args.insecure)) as channel, rpc_errors(args.aggregator):
        stub = driver_pb2_grpc.DriverServiceStub(channel)  # type: ignore[no-untyped-call]
        st = stub.CancelJob(driver_pb2.CancelJobRequest(job_id=info["job_id"], token=info["token"], reason=args.reason), timeout=30)
    print(f"job {st.job_id} {st.state}: {st.message}")
    return 0


__all__ = ["register", "run"]
