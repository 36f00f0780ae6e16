"""Chunked payloads: every large thing on the wire is a sequence of <= 1 MiB chunks with SHA-256."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

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
    if len(chunk.data) > MAX_CHUNK_BYTES:
        raise ProtocolError(f"chunk {chunk.index} carries {len(chunk.data)} bytes, more than {MAX_CHUNK_BYTES}")
    if not 1 <= chunk.count <= MAX_CHUNKS:
        raise ProtocolError(f"chunk count {chunk.count} out of range 1..{MAX_CHUNKS}")
    if chunk.index >= chunk.count:
        raise ProtocolError(f"chunk index {chunk.index} >= count {chunk.count}")
    if expected_count is not None and chunk.count != expected_count:
        raise ProtocolError(f"chunk count {chunk.count} differs from the expected {expected_count}")
    if expected_index is not None and chunk.index != expected_index:
        raise ProtocolError(f"chunk index {chunk.index} out of order: expected {expected_index}")
    if hashlib.sha256(chunk.data).digest() != chunk.sha256:
        raise ProtocolError(f"chunk {chunk.index}: SHA-256 does not match its data (corrupted or tampered)")
    return chunk.data


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


__all__ = ["MAX_CHUNKS", "MAX_CHUNK_BYTES", "join", "make_chunk", "split", "verify"]
