"""``fedgpu aggregator``: the long-running gRPC server."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the aggregator's modules load only when the command runs
    from fedgpu.aggregator.admission import AdmissionPolicy


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("aggregator", help="run the gRPC aggregator", description="Run the aggregator: registers nodes, drives rounds, adds encrypted updates per cohort. Holds no key.")
    p.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT to listen on (port 0 picks a free one; default %(default)s). Off loopback it needs TLS or --insecure")
    p.add_argument("--db", default="fedgpu.db", help="database URL or SQLite file path (default %(default)s); PostgreSQL: postgresql://user@host/db")
    p.add_argument("--spool", type=Path, default=None, help="folder for uploads in flight and closed rounds' sums (default: next to the database or ./spool)")
    p.add_argument("--tls-cert", type=Path, default=None, metavar="PEM", help="serve TLS with this certificate chain (see docs/tls.md; `fedgpu certs` makes one)")
    p.add_argument("--tls-key", type=Path, default=None, metavar="PEM", help="the private key of --tls-cert")
    p.add_argument("--insecure", action="store_true", help="allow cleartext on a non-loopback --listen (only behind a VPN or a TLS proxy)")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT", help="serve Prometheus metrics at http://HOST:PORT/metrics (nodes, rounds, uploads, bytes in); off by default")
    p.add_argument("--ready-file", type=Path, default=None, help="write HOST:PORT here once listening (for scripts)")
    a = p.add_argument_group("admission", "who may register or submit a job, and how fast (docs/protocol.md, \"Admission and liveness\")")
    a.add_argument("--admission", choices=["open", "allowlist"], default="open", help="open: anyone may register, within the limits below (default); allowlist: only the keys in --allow")
    a.add_argument("--allow", type=Path, default=None, metavar="FILE", help="with --admission allowlist: the nodes' public keys, 64 hex digits a line ('#' comments); re-read when it changes")
    a.add_argument("--drivers", type=Path, default=None, metavar="FILE", help="only drivers presenting one of these submission tokens (one a line) may submit jobs; default: anyone")
    a.add_argument("--register-limit", default="2:20", metavar="RATE[:BURST]", help="registrations per second per source address (IPv6: per /64), and at once (default %(default)s)")
    a.add_argument("--register-limit-total", default="20:200", metavar="RATE[:BURST]", help="new node identities per second overall, and at once (default %(default)s)")
    a.add_argument("--max-unproven", type=int, default=1000, metavar="N", help="identities that registered but have not called since, kept at most (default %(default)s; each is forgotten after 60 s)")
    a.add_argument("--max-calls-per-node", type=int, default=2, metavar="N", help="concurrent PullTask, UploadUpdate and DownloadModel calls per node, each (default %(default)s)")
    p.set_defaults(func=run)


def admission_policy(args: argparse.Namespace) -> AdmissionPolicy:
    """The aggregator's admission flags as a checked policy (ConfigError names the flag)."""
    from fedgpu.aggregator.admission import AdmissionMode, AdmissionPolicy, RateLimit

    return AdmissionPolicy(
        mode=AdmissionMode(args.admission),
        allow_file=args.allow,
        drivers_file=args.drivers,
        per_source=RateLimit.parse(args.register_limit, "--register-limit"),
        total=RateLimit.parse(args.register_limit_total, "--register-limit-total"),
        max_unproven=args.max_unproven,
        max_calls_per_node=args.max_calls_per_node,
    ).validate()


def run(args: argparse.Namespace) -> int:
    from fedgpu.aggregator.server import serve
    from fedgpu.wire.transport import TLSConfig

    logging.getLogger("fedgpu").setLevel(min(logging.getLogger().level, logging.INFO))
    from fedgpu.aggregator.database import hide_password_in_logs

    hide_password_in_logs(args.db)  # the server logs its database: never with the password
    tls = TLSConfig(cert=args.tls_cert, key=args.tls_key, insecure=args.insecure)
    spool = args.spool or (Path(args.db).parent / "spool" if "://" not in args.db else Path("spool"))
    asyncio.run(serve(args.listen, args.db, spool, args.ready_file, tls, args.metrics, admission_policy(args)))
    return 0


__all__ = ["admission_policy", "register", "run"]
