"""``fedgpu nodes``: every node's measured capacity, as the aggregator signed it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # gRPC and the generated code load only when the command runs
    from fedgpu.capacity import SignedRecord


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "nodes", help="measured capacity of every node",
        description="List every registered node with what its completed tasks measured on the aggregator's clocks "
        "(tasks, deadline misses, seconds per task, upload rate, samples per second where tasks name their size), "
        "each record signed by the aggregator's ledger key. The device a node claims is shown, never used.",
    )
    add_connection(p)
    p.add_argument("--json", action="store_true", help="print the signed records as JSON")
    p.set_defaults(func=run)


def add_connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aggregator", default="127.0.0.1:50051", help="aggregator HOST:PORT (default %(default)s)")
    p.add_argument("--tls-ca", type=Path, default=None, metavar="PEM", help="trust the aggregator's certificate if this CA signed it")
    p.add_argument("--insecure", action="store_true", help="cleartext even to a non-loopback aggregator")


def fetch(aggregator: str, tls_ca: Path | None, insecure: bool, node_ids: list[str] | None = None) -> list[SignedRecord]:
    """The aggregator's signed records (``node_ids``: only those); a record whose signature fails is refused."""
    from fedgpu.errors import ProtocolError
    from fedgpu.proto.fedgpu.v1 import driver_pb2, driver_pb2_grpc
    from fedgpu.wire.serde import node_record_from_proto
    from fedgpu.wire.transport import TLSConfig, open_channel, rpc_errors

    with open_channel(aggregator, TLSConfig(ca=tls_ca, insecure=insecure)) as channel, rpc_errors(aggregator):
        stub = driver_pb2_grpc.DriverServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = stub.ListNodes(driver_pb2.ListNodesRequest(node_ids=node_ids or []), timeout=30)
    records = [node_record_from_proto(m) for m in reply.nodes]
    bad = [r.record.node_id for r in records if not r.verify()]
    if bad:
        raise ProtocolError(f"the aggregator's signature on the record of node {bad[0]} does not verify: do not rely on these records")
    return records


def table(records: list[SignedRecord]) -> str:
    lines = [f"{'name':<16} {'node':<18} {'tasks':>5} {'missed':>6} {'s/task':>7} {'samples/s':>9} {'upload MB/s':>11}  claimed device"]
    for s in records:
        r = s.record
        sps = f"{r.samples_per_second:.0f}" if r.samples_per_second else "-"
        up = f"{r.upload_rate / 1e6:.2f}" if r.upload_rate else "-"
        turn = f"{r.mean_turnaround:.2f}" if r.tasks else "-"
        lines.append(f"{r.name[:16]:<16} {r.node_id:<18} {r.tasks:>5} {r.misses:>6} {turn:>7} {sps:>9} {up:>11}  {r.device or '-'}")
    if records:
        lines.append(f"signed by aggregator key {records[0].aggregator_key[:16]}... (all {len(records)} records verified)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    records = fetch(args.aggregator, args.tls_ca, args.insecure)
    if args.json:
        print(json.dumps([json.loads(r.to_json()) for r in records], indent=2))
    elif not records:
        print("no nodes registered yet")
    else:
        print(table(records))
    return 0


__all__ = ["add_connection", "fetch", "register", "run", "table"]
