"""The servicers' wire handling over real gRPC: an upload's handler gets each message with its size on
the wire, and replies serialized by hand reach a client as the messages they stand for."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc

from fedgpu.aggregator.service import DriverServicer, NodeServicer, RejectUndecodable
from fedgpu.proto.fedgpu.v1 import driver_pb2, driver_pb2_grpc, node_pb2, node_pb2_grpc
from fedgpu.wire import chunks, transport
from fedgpu.wire.records import UploadProgress

SUMS = {(0, 0): b"a" * 300_000, (0, 1): b"b" * 7, (1, 0): b"c" * chunks.MAX_CHUNK_BYTES}


class StandIn:
    """Just what the servicers ask of an Aggregator here; it records the upload it is handed."""

    def __init__(self) -> None:
        self.got: list[tuple[node_pb2.UpdateChunk, int]] = []

    async def upload(self, stream: AsyncIterator[tuple[node_pb2.UpdateChunk, int]]) -> UploadProgress:
        async for msg, size in stream:
            self.got.append((msg, size))
        return UploadProgress(received=len(self.got), complete=True)

    def check_token(self, job_id: str, token: str) -> Any:
        return SimpleNamespace(cohort_size=1)

    def cohort_sums(self, job_id: str, rnd: int, k: int) -> tuple[list[list[str]], list[tuple[int, int]]]:
        return [["na"], ["nb"]], sorted(SUMS)

    def cohort_sum(self, job_id: str, rnd: int, cohort: int, chunk: int) -> tuple[bytes, bytes]:
        return SUMS[(cohort, chunk)], hashlib.sha256(SUMS[(cohort, chunk)]).digest()


def test_upload_sizes_and_hand_serialized_sums_over_grpc() -> None:
    async def run() -> None:
        agg = StandIn()
        server = transport.make_server(interceptors=[RejectUndecodable()])
        node_pb2_grpc.add_NodeServiceServicer_to_server(NodeServicer(agg), server)  # type: ignore[arg-type,no-untyped-call]
        driver_pb2_grpc.add_DriverServiceServicer_to_server(DriverServicer(agg), server)  # type: ignore[arg-type,no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=transport.CHANNEL_OPTIONS) as channel:
                sent = [node_pb2.UpdateChunk(task_id="t", chunk=chunks.make_chunk(i, 2, bytes([i]) * (500_000 + i))) for i in range(2)]
                reply = await node_pb2_grpc.NodeServiceStub(channel).UploadUpdate(iter(sent))
                assert reply.received == 2 and reply.complete
                assert [(m, size) for m, size in agg.got] == [(m, m.ByteSize()) for m in sent]
                got = [m async for m in driver_pb2_grpc.DriverServiceStub(channel).FetchCohortSums(driver_pb2.FetchCohortSumsRequest(job_id="j", round=1))]
                assert [(m.cohort, list(m.members), m.chunk.index, m.chunk.count) for m in got] == [(0, ["na"], 0, 2), (0, ["na"], 1, 2), (1, ["nb"], 0, 1)]
                assert [chunks.verify(m.chunk) for m in got] == [SUMS[k] for k in sorted(SUMS)]
        finally:
            await server.stop(grace=0)

    asyncio.run(run())
