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
    p.add_argument("--ready-file", type=Path, default=None, help="write HOST:PORT here once listening (for scripts)")
    p.set_defaults(func=run)


class _WithoutPassword(logging.Filter):
    """Blanks one secret in every record a handler writes: its message and any traceback."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, "***"), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and self.secret in record.exc_text:
            record.exc_text = record.exc_text.replace(self.secret, "***")
        return True


def hide_password_in_logs(db: str) -> None:
    """The --db URL's password never reaches a log line of this process, whoever logs the URL
    (the server logs its database; the store's own messages show ``Store.url``, already redacted)."""
    from urllib.parse import quote

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(db).password if "://" in db else None
    except (ArgumentError, ValueError):
        return  # not a URL: the store refuses it, with the password masked
    if not password:
        return
    for secret in {str(password), quote(str(password), safe="")}:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_WithoutPassword(secret))


def run(args: argparse.Namespace) -> int:
    from fedgpu.aggregator.server import serve
    from fedgpu.wire.transport import TLSConfig

    logging.getLogger("fedgpu").setLevel(min(logging.getLogger().level, logging.INFO))
    hide_password_in_logs(args.db)
    tls = TLSConfig(cert=args.tls_cert, key=args.tls_key, insecure=args.insecure)
    spool = args.spool or (Path(args.db).parent / "spool" if "://" not in args.db else Path("spool"))
    asyncio.run(serve(args.listen, args.db, spool, args.ready_file, tls))
    return 0


__all__ = ["hide_password_in_logs", "register", "run"]
