"""The newest model's chunk messages are made (serialized) once per version and handed to every download."""

from __future__ import annotations

import pytest

from fedgpu.aggregator.service import _ModelChunks
from fedgpu.errors import ProtocolError
from fedgpu.proto.fedgpu.v1 import common_pb2
from fedgpu.wire import chunks


def test_downloads_of_one_version_share_its_chunks_and_a_new_version_replaces_them() -> None:
    cache = _ModelChunks()
    v1 = bytes(range(256)) * (chunks.MAX_CHUNK_BYTES // 128)  # two full chunks
    first = cache.get("job-1", 1, v1, 0)
    msgs = [common_pb2.ModelChunk.FromString(m) for m in first]
    assert [m.chunk.index for m in msgs] == [0, 1] and b"".join(chunks.verify(m.chunk) for m in msgs) == v1
    again = cache.get("job-1", 1, v1, 1)
    assert len(again) == 1 and again[0] is first[1]  # not sliced and hashed again
    v2 = b"\x01" * 10
    newer = cache.get("job-1", 2, v2, 0)
    assert [(m.version, chunks.verify(m.chunk)) for m in map(common_pb2.ModelChunk.FromString, newer)] == [(2, v2)]
    with pytest.raises(ProtocolError):
        cache.get("job-1", 2, v2, 2)
