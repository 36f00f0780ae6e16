"""Chunked payloads: every large thing on the wire is a sequence of <= 1 MiB chunks with SHA-256."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from google.protobuf.message import Message

from fedgpu.errors import ProtocolError
from fedgpu.proto.fedgpu.v1 import common_pb2 as pb

MAX_CHUNK_BYTES = 1 << 20          # 1 MiB of data per chunk
MAX_CHUNKS = 1 << 16               # 64 GiB payloads are not a thing we accept


def make_chunk(index: int, count: int, data: bytes) -> pb.Chunk:
    return pb.Chunk(index=index, count=count, sha256=hashlib.sha256(data).digest(), data=data)


def split(data: bytes, size: int = MAX_CHUNK_BYTES) -> list[pb.Chunk]:
    """Cut ``data`` into chunks of at most ``size`` bytes (one empty chunk for empty data)."""
    count = max(1, -(-len(data) // size))
    return [make_chunk(i, count, data[i * size : (i + 1) * size]) for i in range(count)]


def verify(chunk: pb.Chunk, expected_index: int | None = None, expected_count: int | None = None) -> bytes:
    """Check a chunk's bounds and digest; return its data. Raises ProtocolError with what is wrong."""
    data = chunk.data  # read once: each read of a bytes field copies it out of the message
    if len(data) > MAX_CHUNK_BYTES:
        raise ProtocolError(f"chunk {chunk.index} carries {len(data)} bytes, more than {MAX_CHUNK_BYTES}")
    if not 1 <= chunk.count <= MAX_CHUNKS:
        raise ProtocolError(f"chunk count {chunk.count} out of range 1..{MAX_CHUNKS}")
    if chunk.index >= chunk.count:
        raise ProtocolError(f"chunk index {chunk.index} >= count {chunk.count}")
    if expected_count is not None and chunk.count != expected_count:
        raise ProtocolError(f"chunk count {chunk.count} differs from the expected {expected_count}")
    if expected_index is not None and chunk.index != expected_index:
        raise ProtocolError(f"chunk index {chunk.index} out of order: expected {expected_index}")
    if hashlib.sha256(data).digest() != chunk.sha256:
        raise ProtocolError(f"chunk {chunk.index}: SHA-256 does not match its data (corrupted or tampered)")
    return data


def serialize_with_chunk(envelope: Message, index: int, count: int, data: bytes, sha256: bytes | None = None) -> bytes:
    """``envelope`` (its ``chunk`` field unset) serialized with ``chunk`` a chunk of ``data``.

    The bytes a parser reads as ``envelope`` with ``chunk=make_chunk(index, count, data)``, made
    without copying ``data`` into a message and out again (a chunk message costs three copies of its
    data before gRPC has it: into the chunk, into the envelope, out to bytes; this costs one).
    Handlers yield them to a response serializer that passes bytes on (fedgpu.aggregator.service).
    """
    field = envelope.DESCRIPTOR.fields_by_name["chunk"].number
    if envelope.HasField("chunk"):
        raise ValueError("serialize_with_chunk: the envelope's chunk must be unset")
    head = pb.Chunk(index=index, count=count, sha256=sha256 if sha256 is not None else hashlib.sha256(data).digest()).SerializeToString()
    data_key = _key(4) + _varint(len(data)) if data else b""  # Chunk.data is field 4, after index, count and sha256
    return b"".join((envelope.SerializeToString(), _key(field), _varint(len(head) + len(data_key) + len(data)), head, data_key, data))


def _key(field: int) -> bytes:
    return _varint(field << 3 | 2)  # wire type 2: length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def join(chunks: Iterable[pb.Chunk]) -> bytes:
    """Reassemble a payload from its chunks in order, verifying each."""
    parts: list[bytes] = []
    count: int | None = None
    for i, c in enumerate(chunks):
        parts.append(verify(c, expected_index=i, expected_count=count))
        count = c.count
    if count is None or len(parts) != count:
        raise ProtocolError(f"payload ended after {len(parts)} of {count} chunks")
    return b"".join(parts)


__all__ = ["MAX_CHUNKS", "MAX_CHUNK_BYTES", "join", "make_chunk", "serialize_with_chunk", "split", "verify"]
