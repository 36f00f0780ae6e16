"""``fedgpu node``: contribute a GPU (or CPU) and local data to jobs."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from fedgpu.errors import ConfigError

if TYPE_CHECKING:
    from fedgpu.node.agent import NodeConfig


def _data_arg(values: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--data {v!r}: expected NAME=PATH, e.g. --data mnist1d=/data/mine.npz")
        out[name] = Path(path)
    return out


def default_threads() -> int:
    """Torch's CPU threads for a node: at most 2, so that a volunteer's machine stays usable while it trains."""
    return max(1, min(2, os.cpu_count() or 1))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("node", help="run a volunteer node", description="Run a node: registers with the aggregator, pulls tasks, trains on local data, uploads encrypted updates.")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The node's flags (shared with the demo's simulated adversaries, fedgpu.adversaries)."""
    p.add_argument("--aggregator", default="127.0.0.1:50051", help="aggregator HOST:PORT (default %(default)s)")
    p.add_argument("--tls-ca", type=Path, default=None, metavar="PEM", help="trust the aggregator's certificate if this CA signed it (default: cleartext on loopback, the system's CAs elsewhere)")
    p.add_argument("--insecure", action="store_true", help="cleartext even to a non-loopback aggregator (only behind a VPN or a TLS proxy)")
    p.add_argument("--data", action="append", default=[], metavar="NAME=PATH", help="map a dataset schema to a local .npz (x, y) or .csv (label column) file; repeatable")
    p.add_argument("--home", type=Path, default=Path.home() / ".fedgpu", help="folder for the identity key and privacy ledger (default %(default)s)")
    p.add_argument("--name", default="", help="display name")
    p.add_argument("--epsilon-cap", type=float, default=None, help="the data owner's privacy cap: refuse DP tasks that would exceed this epsilon")
    p.add_argument("--device", default="auto", help="where to train: auto (CUDA when present), cpu, cuda or cuda:N (default %(default)s)")
    p.add_argument("--threads", type=int, default=default_threads(), metavar="N", help="CPU threads torch may use (default %(default)s: min(2, cores), so a node leaves its machine usable)")
    p.add_argument(
        "--no-public-data", dest="public_data", action="store_false",
        help="do not take public-data tasks (by default a node also trains on shards of the public datasets it builds itself)",
    )
    p.add_argument(
        "--no-encrypt-ahead", dest="encrypt_ahead", action="store_false",
        help="do not make the next round's encryptions of zero while waiting for a task (by default a node does, in one "
        "background thread at the lowest CPU priority, so its upload waits only for training; ckks: 16 MB per 1 M parameters)",
    )
    p.add_argument("--flower-client", default=None, metavar="MODULE:ATTR", help="train with a Flower NumPyClient (an instance, a class or a zero-argument factory; MODULE may be a .py file); fedgpu still encrypts, signs and uploads. Declines DP-SGD jobs (docs/flower.md)")
    p.add_argument("--max-tasks", type=int, default=None, help="exit after this many tasks (default: run until stopped)")
    p.add_argument("--status", action="store_true", help="show this node's measured capacity record, as the aggregator signed it, then exit")
    p.add_argument("--rotate-key", action="store_true", help="replace HOME/identity.pem by a new key, keeping this node's earnings (the old key stays as HOME/identity.<id>.pem), then exit")


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    from fedgpu.node.agent import NodeConfig
    from fedgpu.wire.transport import TLSConfig

    data = _data_arg(args.data)
    if not data and not args.rotate_key and not args.status and not args.public_data:
        raise ConfigError("a node needs data: pass --data NAME=PATH (e.g. --data mnist1d=/data/mine.npz), or drop --no-public-data to train on public data only")
    cfg = NodeConfig(
        aggregator=args.aggregator,
        data=data,
        identity_path=args.home / "identity.pem",
        name=args.name,
        epsilon_cap=args.epsilon_cap,
        ledger_path=args.home / "privacy.db",
        tls=TLSConfig(ca=args.tls_ca, insecure=args.insecure),
        device=args.device,
        threads=args.threads,
        public_data=args.public_data,
        encrypt_ahead=args.encrypt_ahead,
    )
    if getattr(args, "flower_client", None):
        from fedgpu.node.flower import FlowerTrainer

        cfg.trainer = FlowerTrainer.from_spec(args.flower_client)
    return cfg


def serve(cfg: NodeConfig, args: argparse.Namespace) -> int:
    """Run the node until it is stopped (SIGTERM, Ctrl-C) or has done ``--max-tasks``."""
    from fedgpu.node.agent import NodeAgent

    logging.getLogger("fedgpu").setLevel(min(logging.getLogger().level, logging.INFO))
    agent = NodeAgent(cfg)
    if args.rotate_key:
        old_id = agent.node_id
        new_id, operator = agent.rotate_key()
        print(f"identity key rotated: node {old_id} is now node {new_id}; earnings stay with operator {operator} (`fedgpu rewards`)")
        return 0
    def on_term(*_: object) -> None:
        agent.stop()
        raise SystemExit(0)  # interrupts a long-poll in flight

    signal.signal(signal.SIGTERM, on_term)
    print(f"node {agent.node_id}{f' ({args.name})' if args.name else ''} serving {args.aggregator} on {agent.device} with {args.threads} CPU thread(s) (public key {agent.identity.public_key.hex()})", flush=True)
    agent.run(max_tasks=args.max_tasks)
    return 0


def status(args: argparse.Namespace) -> int:
    """``fedgpu node --status``: this identity's record at the aggregator (no Register, no task taken)."""
    from fedgpu.cli.nodes import fetch, table
    from fedgpu.errors import NotFoundError
    from fedgpu.wire.auth import Identity

    path = args.home / "identity.pem"
    if not path.exists():
        raise ConfigError(f"no identity at {path}: this --home has never run a node (pass the --home it ran with)")
    node_id = Identity.load_or_create(path).node_id
    records = fetch(args.aggregator, args.tls_ca, args.insecure, [node_id])
    if not records:
        raise NotFoundError(f"the aggregator at {args.aggregator} has no node {node_id}: it registers when it first runs `fedgpu node`")
    print(table(records))
    print(records[0].to_json())  # the signed record itself: what the operator keeps as proof of work done
    return 0


def run(args: argparse.Namespace) -> int:
    if args.status:
        return status(args)
    return serve(config_from_args(args), args)


__all__ = ["add_arguments", "config_from_args", "default_threads", "register", "run", "serve", "status"]
