"""``fedgpu certs DIR --host NAME``: a CA and a server certificate for the aggregator, for TLS without a public CA."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "certs",
        help="make a CA and a TLS certificate for the aggregator",
        description=(
            "Write DIR/ca.pem and DIR/ca.key (a new CA, unless DIR already holds one) and DIR/server.pem and "
            "DIR/server.key (a server certificate for the --host names, signed by that CA). Give ca.pem to every node "
            "and driver; keep ca.key off the aggregator if you can. Run it again to rotate the server certificate: "
            "nodes trust the CA, so they need no change. See docs/tls.md."
        ),
    )
    p.add_argument("dir", type=Path, help="folder for the PEM files")
    p.add_argument("--host", action="append", required=True, metavar="NAME", help="a DNS name or IP address nodes use to reach the aggregator; repeatable")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedgpu.wire.certs import write_certs

    files = write_certs(args.dir, args.host)
    print(f"CA          {files.ca}  (give to nodes and drivers: --tls-ca {files.ca})")
    print(f"CA key      {files.ca_key}  (keep safe: it signs future server certificates)")
    print(f"certificate {files.cert}  for {', '.join(args.host)}")
    print(f"key         {files.key}")
    print(f"fedgpu aggregator --listen 0.0.0.0:50051 --tls-cert {files.cert} --tls-key {files.key}")
    return 0


__all__ = ["register", "run"]
