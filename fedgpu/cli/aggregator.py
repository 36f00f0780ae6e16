"""``fedgpu aggregator``: the long-running gRPC server."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("aggregator", help="run the gRPC aggregator", description="Run the aggregator: registers nodes, drives rounds, adds encrypted updates per cohort. Holds no key.")
    p.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT to listen on (port 0 picks a free one; default %(default)s). Off loopback it needs TLS or --insecure")
    p.add_argument("--db", default="fedgpu.db", help="database URL or SQLite file path (default %(default)s); PostgreSQL: postgresql://user@host/db")
    p.add_argument("--spool", type=Path, default=None, help="folder for uploads in flight (default: next to the database or ./spool)")
    p.add_argument("--tls-cert", type=Path, default=None, metavar="PEM", help="serve TLS with this certificate chain (see docs/tls.md; `fedgpu certs` makes one)")
    p.add_argument("--tls-key", type=Path, default=None, metavar="PEM", help="the private key of --tls-cert")
    p.add_argument("--insecure", action="store_true", help="allow cleartext on a non-loopback --listen (only behind a VPN or a TLS proxy)")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT", help="serve Prometheus metrics at http://HOST:PORT/metrics (nodes, rounds, uploads, bytes in); off by default")
    p.add_argument("--ready-file", type=Path, default=None, help="write HOST:PORT here once listening (for scripts)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedgpu.aggregator.server import serve
    from fedgpu.wire.transport import TLSConfig

    logging.getLogger("fedgpu").setLevel(min(logging.getLogger().level, logging.INFO))
    from fedgpu.aggregator.store import hide_password_in_logs

    hide_password_in_logs(args.db)  # the server logs its database: never with the password
    tls = TLSConfig(cert=args.tls_cert, key=args.tls_key, insecure=args.insecure)
    spool = args.spool or (Path(args.db).parent / "spool" if "://" not in args.db else Path("spool"))
    asyncio.run(serve(args.listen, args.db, spool, args.ready_file, tls, args.metrics))
    return 0


__all__ = ["register", "run"]
