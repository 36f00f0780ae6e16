"""``fedgpu rewards``: balances from the aggregator's ledger, and ``verify`` of its hash chain."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: only when the command runs, not when the CLI loads
    from fedgpu.aggregator.store import Store


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rewards", help="reward balances and ledger verification", description="Show reward balances per operator (a node and the keys it rotated to) from the aggregator's ledger, or verify its hash chain and signed heads.")
    p.add_argument("action", nargs="?", choices=["show", "verify"], default="show", help="show balances (default) or verify the ledger")
    p.add_argument("--db", default="fedgpu.db", help="the aggregator's database URL or SQLite file (default %(default)s)")
    p.add_argument("--job", default=None, help="only this job")
    p.add_argument("--rounds", action="store_true", help="per-round detail")
    p.add_argument("--export", choices=["csv", "json"], default=None, help="print every ledger row in this format")
    p.add_argument("--key", default=None, help="verify: the aggregator's public key (hex); default: the one in the database")
    p.set_defaults(func=run)


def _open(url: str) -> Store:
    from pathlib import Path

    from fedgpu.aggregator.store import Store
    from fedgpu.errors import ConfigError

    if "://" not in url and not Path(url).exists():
        raise ConfigError(f"database {url} does not exist; pass --db with the aggregator's database")
    return Store(url)


def verify(store: Store, key_hex: str | None) -> tuple[bool, str]:
    """``fedgpu rewards verify``: read the ledger, its heads and the aggregator's key from ``store``;
    :func:`fedgpu.rewards.chain.verify_ledger` judges them (tests/e2e/test_restart.py still calls this)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fedgpu.errors import ConfigError, StorageError
    from fedgpu.rewards.chain import public_key_bytes, verify_ledger

    key: bytes | None = None
    if key_hex:
        try:
            key = bytes.fromhex(key_hex)
        except ValueError as exc:
            raise ConfigError(f"--key {key_hex!r} is not hex: pass the aggregator's raw Ed25519 public key in hex") from exc
    else:
        pem = store.get_meta("signing_key")
        if pem is not None:
            private = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise StorageError("the database's signing key is not Ed25519")
            key = public_key_bytes(private)
    return verify_ledger(store.ledger_rows(), store.heads(), key)


def run(args: argparse.Namespace) -> int:
    store = _open(args.db)
    if args.action == "verify":
        ok, message = verify(store, args.key)
        print(message)
        return 0 if ok else 1
    names = {n["id"]: n["name"] for n in store.all_nodes()}  # --name of each node, beside its id
    rows = [{**r, "node_name": names.get(r["node_id"], "")} for r in store.ledger_rows(args.job)]
    if args.export == "json":
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    if args.export == "csv":
        if rows:
            w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        return 0
    # Balances per operator: a node that rotated its key (RotateKey) keeps one balance across its keys.
    operator_of = store.operators()
    current = {r["operator_id"]: r["successor_id"] for r in store.key_rotations()}  # oldest first: the last one wins
    balances: dict[str, list[float]] = {}
    for r in rows:
        b = balances.setdefault(operator_of.get(r["node_id"], r["node_id"]), [0.0, 0.0, 0.0])
        b[0] += r["reward"]
        b[1] += r["value"]
        b[2] += 1
    if not balances:
        print("no rewards recorded yet")
        return 0
    width = max([4, *(len(names.get(current.get(n, n), names.get(n, ""))) for n in balances)])
    print(f"{'name':<{width}} {'operator':<18} {'node now':<18} {'rounds':>6} {'total value':>12} {'reward':>10}")
    for node, (reward, value, n) in sorted(balances.items(), key=lambda kv: -kv[1][0]):
        name = names.get(current.get(node, node), names.get(node, ""))
        print(f"{name:<{width}} {node:<18} {current.get(node, node):<18} {int(n):>6} {value:>12.4f} {reward:>10.2f}")
    if args.rounds:
        print()
        print(f"{'job':<18} {'round':>5} {'name':<{width}} {'node':<18} {'value':>10} {'reward':>8}")
        for r in rows:
            print(f"{r['job_id']:<18} {r['round']:>5} {r['node_name']:<{width}} {r['node_id']:<18} {r['value']:>10.4f} {r['reward']:>8.2f}")
    return 0


__all__ = ["register", "run", "verify"]
