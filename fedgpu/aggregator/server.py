"""Run the aggregator: an asyncio gRPC server over a database."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc

from fedgpu.aggregator.admission import AdmissionPolicy
from fedgpu.aggregator.core import Aggregator
from fedgpu.aggregator.memory import reuse_large_buffers
from fedgpu.aggregator.metrics import MetricsServer
from fedgpu.aggregator.service import DriverServicer, NodeServicer, RejectUndecodable
from fedgpu.aggregator.store import Store
from fedgpu.proto.fedgpu.v1 import driver_pb2, driver_pb2_grpc, node_pb2, node_pb2_grpc
from fedgpu.wire import transport
from fedgpu.wire.transport import TLSConfig

log = logging.getLogger("fedgpu.aggregator")

# What the health service reports besides the server as a whole ("").
SERVICES = (node_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name, driver_pb2.DESCRIPTOR.services_by_name["DriverService"].full_name)


async def build_server(
    listen: str, db_url: str, spool_dir: Path, tls: TLSConfig | None = None, admission: AdmissionPolicy | None = None
) -> tuple[grpc.aio.Server, Aggregator, int]:
    admission = (admission or AdmissionPolicy()).validate()  # a bad policy or allow file fails before anything listens
    server = transport.make_server(interceptors=[RejectUndecodable()])
    port = transport.add_port(server, listen, tls or TLSConfig())  # a bad --listen or TLS file fails before the database opens
    agg = Aggregator(Store(db_url), spool_dir, admission)
    node_pb2_grpc.add_NodeServiceServicer_to_server(NodeServicer(agg), server)  # type: ignore[no-untyped-call]
    driver_pb2_grpc.add_DriverServiceServicer_to_server(DriverServicer(agg), server)  # type: ignore[no-untyped-call]
    health = transport.add_health(server)
    await transport.set_serving(health, SERVICES, False)  # until the store is loaded and the jobs resumed
    await server.start()
    await agg.start()
    await transport.set_serving(health, SERVICES, True)
    return server, agg, port


async def serve(
    listen: str, db_url: str, spool_dir: Path, ready_file: Path | None = None, tls: TLSConfig | None = None, metrics: str | None = None,
    admission: AdmissionPolicy | None = None,
) -> None:
    reuse_large_buffers()  # the process is the aggregator's alone: its chunks' buffers are reused (memory.py)
    tls = tls or TLSConfig()
    if metrics is not None:
        transport.parse_address(metrics, "--metrics")  # a bad flag fails before anything starts
    server, agg, port = await build_server(listen, db_url, spool_dir, tls, admission)
    host = listen.rsplit(":", 1)[0]
    log.info("aggregator listening on %s:%d (%s), database %s", host, port, "TLS" if tls.serving else "cleartext", db_url)
    exporter = None
    if metrics is not None:
        try:
            exporter = MetricsServer(metrics, asyncio.get_running_loop(), agg.snapshot).start()
        except BaseException:
            await agg.stop()
            await server.stop(grace=0)
            raise
        log.info("metrics on http://%s:%d/metrics", transport.parse_address(metrics, "--metrics")[0], exporter.port)
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
    if exporter is not None:
        exporter.stop()
    await agg.stop()
    await server.stop(grace=2)


__all__ = [
    "SERVICES",
    "build_server",
    "serve",
]
