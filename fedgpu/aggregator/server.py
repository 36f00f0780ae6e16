"""Run the aggregator: an asyncio gRPC server over a database."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc

from fedgpu.aggregator.core import Aggregator
from fedgpu.aggregator.service import DriverServicer, NodeServicer
from fedgpu.aggregator.store import Store
from fedgpu.proto.fedgpu.v1 import driver_pb2_grpc, node_pb2_grpc
from fedgpu.wire.chunks import MAX_MESSAGE_BYTES

log = logging.getLogger("fedgpu.aggregator")

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


async def build_server(listen: str, db_url: str, spool_dir: Path) -> tuple[grpc.aio.Server, Aggregator, int]:
    agg = Aggregator(Store(db_url), spool_dir)
    server = grpc.aio.server(options=GRPC_OPTIONS)
    node_pb2_grpc.add_NodeServiceServicer_to_server(NodeServicer(agg), server)
    driver_pb2_grpc.add_DriverServiceServicer_to_server(DriverServicer(agg), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    await agg.start()
    return server, agg, port


async def serve(listen: str, db_url: str, spool_dir: Path, ready_file: Path | None = None) -> None:
    server, agg, port = await build_server(listen, db_url, spool_dir)
    host = listen.rsplit(":", 1)[0]
    log.info("aggregator listening on %s:%d, database %s", host, port, db_url)
    if ready_file is not None:
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(f"{host}:{port}\n")
        tmp.replace(ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await agg.stop()
    await server.stop(grace=2)
