"""Thin gRPC servicers: authenticate, delegate to ``Aggregator``, translate errors at one boundary.

The only module of the aggregator that builds protobuf messages: what goes in and out is converted
by :mod:`fedgpu.wire.serde`, the rest of the aggregator works on the records of :mod:`fedgpu.wire.records`.
Requests that do not even parse are refused before the servicers, by ``RejectUndecodable``, which
also lets a handler yield replies it serialized itself (``bytes``: the large chunks, made without
copying their data through messages) and hands an upload's handler each message with its size.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from fedgpu.aggregator.admission import source_of
from fedgpu.aggregator.core import Aggregator
from fedgpu.errors import FedgpuError, ProtocolError, RateLimited
from fedgpu.faults import crash_point
from fedgpu.proto.fedgpu.v1 import common_pb2, driver_pb2, driver_pb2_grpc, node_pb2, node_pb2_grpc
from fedgpu.wire import PROTOCOL_VERSION, chunks, serde

log = logging.getLogger("fedgpu.aggregator")


# Methods whose servicer gets each request as (message, its size on the wire): counted as it came,
# not encoded again to count it (~2 ms for a 1 MiB update chunk).
WITH_SIZE = frozenset({f"/{node_pb2.DESCRIPTOR.services_by_name['NodeService'].full_name}/UploadUpdate"})


class Undecodable:
    """What the request deserializer yields for bytes that do not parse as the method's message."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return Undecodable(str(exc) or "the bytes are not a protobuf message")

    return deserialize


class RejectUndecodable(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Answer a request that does not parse INVALID_ARGUMENT, before any servicer sees it.

    grpc.aio runs the request deserializer outside the servicer, so a ``DecodeError`` would reach
    the client as UNKNOWN and the log as a traceback. Each method's deserializer is wrapped to hand
    on an ``Undecodable`` instead, which the wrapped behaviour refuses: at once for a unary
    request, at that message for a request stream. Servicers only ever see parsed messages.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method = details.method
        if method not in self._handlers:
            handler = await continuation(details)
            if handler is None or handler.request_deserializer is None:
                return handler  # unknown method (UNIMPLEMENTED) or raw bytes wanted
            self._handlers[method] = _guarded(handler, method)
        return self._handlers[method]


def _with_size(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> tuple[Any, int]:
        return deserializer(raw), len(raw)

    return deserialize


def _passing_bytes(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """The method's response serializer, but a reply a handler serialized itself goes out as it is."""
    if serializer is None:
        return None
    inner = serializer

    def serialize(reply: Any) -> bytes:
        return reply if type(reply) is bytes else inner(reply)

    return serialize


def _guarded(handler: Any, method: str) -> grpc.RpcMethodHandler:
    async def refuse(request: Undecodable, context: grpc.aio.ServicerContext) -> None:
        log.info("%s refused: undecodable request: %s", method, request.reason)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method}: the request does not parse: {request.reason}")

    async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            yield request

    tolerant = _tolerant(_with_size(handler.request_deserializer) if method in WITH_SIZE else handler.request_deserializer)
    handler = handler._replace(response_serializer=_passing_bytes(handler.response_serializer))
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            return await inner(request, context)

        return handler._replace(request_deserializer=tolerant, unary_unary=unary_unary)
    if handler.unary_stream is not None:
        inner = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            async for reply in inner(request, context):
                yield reply

        return handler._replace(request_deserializer=tolerant, unary_stream=unary_stream)
    if handler.stream_unary is not None:
        inner = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await inner(checked(requests, context), context)

        return handler._replace(request_deserializer=tolerant, stream_unary=stream_unary)
    inner = handler.stream_stream

    async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for reply in inner(checked(requests, context), context):
            yield reply

    return handler._replace(request_deserializer=tolerant, stream_stream=stream_stream)


def _abort_on_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map FedgpuError to its gRPC status; anything else is logged and answered INTERNAL."""

    @functools.wraps(fn)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except FedgpuError as exc:
            log.log(logging.DEBUG if isinstance(exc, RateLimited) else logging.INFO, "%s refused: %s", fn.__name__, exc)  # a flood must not flood the log
            await context.abort(exc.grpc_status, str(exc))
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            log.exception("%s crashed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    return unary


def _abort_on_error_stream(fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(fn)
    async def streaming(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in fn(self, request, context):
                yield item
        except FedgpuError as exc:
            log.log(logging.DEBUG if isinstance(exc, RateLimited) else logging.INFO, "%s refused: %s", fn.__name__, exc)
            await context.abort(exc.grpc_status, str(exc))
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            log.exception("%s crashed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    return streaming


def _model_stream(version: int, data: bytes, start: int = 0) -> Iterator[bytes]:
    """Serialized chunk messages made one at a time as the stream drains: a download never copies the whole model."""
    count = max(1, -(-len(data) // chunks.MAX_CHUNK_BYTES))
    if start > count:
        raise ProtocolError(f"from_chunk {start} beyond the {count} chunks of the model")
    view = memoryview(data)
    for i in range(start, count):
        part = bytes(view[i * chunks.MAX_CHUNK_BYTES : (i + 1) * chunks.MAX_CHUNK_BYTES])
        yield chunks.serialize_with_chunk(common_pb2.ModelChunk(version=version), i, count, part)


class _ModelChunks:
    """The serialized chunk messages of each job's newest model, made once per version: N nodes
    downloading it cost one slicing, hashing and encoding of it, not N (the bytes are Uploads' one cached copy)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, bytes, list[bytes]]] = {}

    def get(self, job_id: str, version: int, data: bytes, start: int) -> list[bytes]:
        hit = self._cache.get(job_id)
        if hit is None or hit[0] != version or hit[1] is not data:
            hit = self._cache[job_id] = (version, data, list(_model_stream(version, data)))
        if start > len(hit[2]):
            raise ProtocolError(f"from_chunk {start} beyond the {len(hit[2])} chunks of the model")
        return hit[2][start:]


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg
        self.model_chunks = _ModelChunks()

    @_abort_on_error
    async def Register(self, request: node_pb2.RegisterRequest, context: Any) -> node_pb2.RegisterReply:
        node_id = self.agg.register(request, source_of(context.peer()))
        return node_pb2.RegisterReply(node_id=node_id, protocol_version=PROTOCOL_VERSION)

    @_abort_on_error
    async def Heartbeat(self, request: node_pb2.HeartbeatRequest, context: Any) -> node_pb2.HeartbeatReply:
        self.agg.authenticate("Heartbeat", request)
        return node_pb2.HeartbeatReply(server_time_ms=int(time.time() * 1000))

    @_abort_on_error
    async def PullTask(self, request: node_pb2.PullTaskRequest, context: Any) -> node_pb2.PullTaskReply:
        node_id = self.agg.authenticate("PullTask", request)
        task = await self.agg.pull_task(node_id, float(request.wait_seconds))
        reply = node_pb2.PullTaskReply(task=serde.task_to_proto(task)) if task is not None else node_pb2.PullTaskReply()
        reply.receipts.extend(serde.receipt_to_proto(r) for r in self.agg.receipts(node_id, request.receipts_after))
        return reply

    @_abort_on_error
    async def DeclineTask(self, request: node_pb2.DeclineTaskRequest, context: Any) -> node_pb2.DeclineTaskReply:
        node_id = self.agg.authenticate("DeclineTask", request)
        self.agg.decline(node_id, request)
        return node_pb2.DeclineTaskReply()

    @_abort_on_error_stream
    async def DownloadModel(self, request: node_pb2.DownloadModelRequest, context: Any) -> AsyncIterator[bytes]:
        node_id = self.agg.authenticate("DownloadModel", request)
        with self.agg.call_slot(node_id, "DownloadModel"):
            data = self.agg.model_for_node(node_id, request.job_id, request.version)
            for msg in self.model_chunks.get(request.job_id, request.version, data, request.from_chunk):
                yield msg

    @_abort_on_error
    async def UploadUpdate(self, request_iterator: AsyncIterator[tuple[node_pb2.UpdateChunk, int]], context: Any) -> node_pb2.UploadReply:
        """Each message comes with its size on the wire (``WITH_SIZE``)."""
        return serde.upload_progress_to_proto(await self.agg.upload(request_iterator))

    @_abort_on_error
    async def RotateKey(self, request: node_pb2.RotateKeyRequest, context: Any) -> node_pb2.RotateKeyReply:
        node_id, operator = self.agg.rotate_key(request)
        return node_pb2.RotateKeyReply(node_id=node_id, operator_id=operator)

    @_abort_on_error
    async def UploadStatus(self, request: node_pb2.UploadStatusRequest, context: Any) -> node_pb2.UploadReply:
        node_id = self.agg.authenticate("UploadStatus", request)
        return serde.upload_progress_to_proto(self.agg.upload_status(node_id, request.task_id))


class DriverServicer(driver_pb2_grpc.DriverServiceServicer):
    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg

    @_abort_on_error
    async def SubmitJob(self, request: driver_pb2.SubmitJobRequest, context: Any) -> driver_pb2.SubmitJobReply:
        self.agg.check_submitter(request.submit_token)  # before anything of the spec is read
        job_id, token = self.agg.submit_job(serde.job_spec_from_proto(request.spec), request.protocol_version)
        return driver_pb2.SubmitJobReply(job_id=job_id, token=token)

    @_abort_on_error
    async def PublishModel(self, request_iterator: AsyncIterator[driver_pb2.PublishChunk], context: Any) -> driver_pb2.PublishReply:
        parts: list[bytes] = []
        first: driver_pb2.PublishChunk | None = None
        async for msg in request_iterator:
            if first is None:
                first = msg
                self.agg.check_token(msg.job_id, msg.token)
            elif (msg.job_id, msg.version) != (first.job_id, first.version):
                raise ProtocolError("all chunks of one publish must name the same job and version")
            parts.append(chunks.verify(msg.chunk, expected_index=len(parts), expected_count=first.chunk.count))
        if first is None or len(parts) != first.chunk.count:
            raise ProtocolError("publish stream ended before its last chunk")
        result = serde.round_result_from_proto(first.result) if first.HasField("result") else None
        self.agg.publish_model(first.job_id, first.version, b"".join(parts), result)
        return driver_pb2.PublishReply(version=first.version)

    @_abort_on_error_stream
    async def WatchJob(self, request: driver_pb2.WatchJobRequest, context: Any) -> AsyncIterator[driver_pb2.JobEvent]:
        self.agg.check_token(request.job_id, request.token)
        async for ev in self.agg.watch(request.job_id):
            yield serde.job_event_to_proto(ev)

    @_abort_on_error_stream
    async def FetchCohortSums(self, request: driver_pb2.FetchCohortSumsRequest, context: Any) -> AsyncIterator[bytes]:
        spec = self.agg.check_token(request.job_id, request.token)
        cohorts, index = self.agg.cohort_sums(request.job_id, request.round, spec.cohort_size)
        per_cohort: dict[int, int] = {}
        for ci, _ in index:
            per_cohort[ci] = per_cohort.get(ci, 0) + 1
        for ci, idx in index:
            data, digest = self.agg.cohort_sum(request.job_id, request.round, ci, idx)
            yield chunks.serialize_with_chunk(driver_pb2.CohortSumChunk(cohort=ci, members=cohorts[ci]), idx, per_cohort[ci], data, digest)
            crash_point("fetch_sums")

    @_abort_on_error_stream
    async def DownloadJobModel(self, request: driver_pb2.DownloadJobModelRequest, context: Any) -> AsyncIterator[bytes]:
        self.agg.check_token(request.job_id, request.token)
        for msg in _model_stream(request.version, self.agg.model_bytes(request.job_id, request.version)):
            yield msg

    @_abort_on_error
    async def GetJob(self, request: driver_pb2.GetJobRequest, context: Any) -> driver_pb2.JobStatus:
        self.agg.check_token(request.job_id, request.token)
        return serde.job_status_to_proto(self.agg.job_status(request.job_id))

    @_abort_on_error
    async def CancelJob(self, request: driver_pb2.CancelJobRequest, context: Any) -> driver_pb2.JobStatus:
        self.agg.check_token(request.job_id, request.token)
        await self.agg.cancel_job(request.job_id, request.reason)
        return serde.job_status_to_proto(self.agg.job_status(request.job_id))

    @_abort_on_error
    async def ListNodes(self, request: driver_pb2.ListNodesRequest, context: Any) -> driver_pb2.ListNodesReply:
        if len(request.node_ids) > 1000:
            raise ProtocolError("ListNodes: at most 1000 node ids at once")
        return driver_pb2.ListNodesReply(nodes=[serde.node_record_to_proto(r) for r in self.agg.node_records(list(request.node_ids))])


__all__ = [
    "DriverServicer",
    "NodeServicer",
    "RejectUndecodable",
    "Undecodable",
    "WITH_SIZE",
]
