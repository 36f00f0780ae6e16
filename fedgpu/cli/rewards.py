"""``fedgpu rewards``: balances from the aggregator's ledger, and ``verify`` of its hash chain."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rewards", help="reward balances and ledger verification", description="Show reward balances per node from the aggregator's ledger, or verify its hash chain and signed heads.")
    p.add_argument("action", nargs="?", choices=["show", "verify"], default="show", help="show balances (default) or verify the ledger")
    p.add_argument("--db", default="fedgpu.db", help="the aggregator's database URL or SQLite file (default %(default)s)")
    p.add_argument("--job", default=None, help="only this job")
    p.add_argument("--rounds", action="store_true", help="per-round detail")
    p.add_argument("--export", choices=["csv", "json"], default=None, help="print every ledger row in this format")
    p.add_argument("--key", default=None, help="verify: the aggregator's public key (hex); default: the one in the database")
    p.set_defaults(func=run)


def _open(url: str):  # type: ignore[no-untyped-def]
    from pathlib import Path

    from fedgpu.aggregator.store import Store
    from fedgpu.errors import ConfigError

    if "://" not in url and not Path(url).exists():
        raise ConfigError(f"database {url} does not exist; pass --db with the aggregator's database")
    return Store(url)


def verify(store: Any, key_hex: str | None) -> tuple[bool, str]:
    """Re-check every row's hash and link, and every round head's signature. Says where it breaks."""
    from cryptography.hazmat.primitives import serialization

    from fedgpu.rewards.chain import LedgerRow, public_key_bytes, verify_chain, verify_head

    records = store.ledger_rows()
    rows = [LedgerRow.from_record(r) for r in records]
    bad = verify_chain(rows)
    if bad is not None:
        r = records[bad]
        return False, f"row {r['id']} (job {r['job_id']}, round {r['round']}, node {r['node_id']}) does not match its hash or its link to the previous row"
    if key_hex:
        key = bytes.fromhex(key_hex)
    else:
        pem = store.get_meta("signing_key")
        if pem is None:
            return (not rows), "no signing key in the database" if rows else "empty ledger"
        key = public_key_bytes(serialization.load_pem_private_key(pem, password=None))  # type: ignore[arg-type]
    last_of: dict[tuple[str, int], str] = {}
    for r in rows:
        last_of[(r.job_id, r.round)] = r.entry_hash
    heads = store.heads()
    for h in heads:
        if last_of.get((h["job_id"], h["round"])) != h["head_hash"]:
            return False, f"head of job {h['job_id']} round {h['round']} does not match the last row of that round"
        if not verify_head(key, h["job_id"], h["round"], h["head_hash"], bytes.fromhex(h["signature"])):
            return False, f"signature of job {h['job_id']} round {h['round']} does not verify with key {key.hex()[:16]}..."
    missing = set(last_of) - {(h["job_id"], h["round"]) for h in heads}
    if missing:
        j, rnd = sorted(missing)[0]
        return False, f"job {j} round {rnd} has rows but no signed head"
    return True, f"ledger OK: {len(rows)} rows, {len(heads)} signed round heads, key {key.hex()[:16]}..."


def run(args: argparse.Namespace) -> int:
    store = _open(args.db)
    if args.action == "verify":
        ok, message = verify(store, args.key)
        print(message)
        return 0 if ok else 1
    rows = store.ledger_rows(args.job)
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
    balances: dict[str, list[float]] = {}
    for r in rows:
        b = balances.setdefault(r["node_id"], [0.0, 0.0, 0])  # type: ignore[list-item]
        b[0] += r["reward"]
        b[1] += r["value"]
        b[2] += 1
    if not balances:
        print("no rewards recorded yet")
        return 0
    print(f"{'node':<18} {'rounds':>6} {'total value':>12} {'reward':>10}")
    for node, (reward, value, n) in sorted(balances.items(), key=lambda kv: -kv[1][0]):
        print(f"{node:<18} {int(n):>6} {value:>12.4f} {reward:>10.2f}")
    if args.rounds:
        print()
        print(f"{'job':<18} {'round':>5} {'node':<18} {'value':>10} {'reward':>8}")
        for r in rows:
            print(f"{r['job_id']:<18} {r['round']:>5} {r['node_id']:<18} {r['value']:>10.4f} {r['reward']:>8.2f}")
    return 0
