"""``fedgpu``: one entry point, one module per subcommand, errors mapped to exit codes here."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import import_module

from fedgpu import __version__
from fedgpu.errors import FedgpuError
from fedgpu.wire import PROTOCOL_VERSION
from fedgpu.wire.transport import rpc_errors

BROKEN_PIPE_EXIT = 141  # what a shell reports for a process ended by SIGPIPE (128 + 13)

SUBCOMMANDS = ["demo", "aggregator", "node", "nodes", "train", "simulate", "jobs", "budget", "rewards", "models", "datasets", "certs"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fedgpu",
        description="Federated learning on untrusted volunteer GPUs: encrypted updates, DP on the node, rewards by measured utility.",
        epilog="Start with `fedgpu demo`: an aggregator, nodes and a job driver on 127.0.0.1 in one command.",
    )
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    ap.add_argument("--version", action="version", version=f"fedgpu {__version__} (protocol {PROTOCOL_VERSION}, Python {sys.version.split()[0]})")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = import_module(f"fedgpu.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"fedgpu.cli.{name}":
                raise
            continue
        module.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        with rpc_errors(getattr(args, "aggregator", None)):  # a gRPC failure that got this far, in fedgpu's words
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, where a reader that went away is caught, not at the interpreter's exit
        return code
    except FedgpuError as exc:
        print(f"fedgpu: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`fedgpu rewards --export csv | head`): stop quietly. Point stdout at
        # /dev/null so that the interpreter's last flush at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT


__all__ = ["BROKEN_PIPE_EXIT", "SUBCOMMANDS", "build_parser", "main"]
