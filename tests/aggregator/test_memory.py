"""The aggregator's allocator setting: a chunk's buffers, freed and made again, cost no fresh pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

# One chunk's way through the aggregator, 40 times: its buffers' page faults counted.
PROBE = """
import hashlib, resource, sys, tempfile
from pathlib import Path
from fedgpu.aggregator.memory import reuse_large_buffers
from fedgpu.proto.fedgpu.v1 import driver_pb2, node_pb2
from fedgpu.wire import chunks
from fedgpu.wire.auth import Identity
if sys.argv[1] == "tuned":
    assert reuse_large_buffers()
me = Identity.generate()
msg = node_pb2.UpdateChunk(task_id="t", chunk=chunks.make_chunk(0, 1, bytes(995_000)))
me.sign("UploadUpdate", msg)
raw = msg.SerializeToString()
spool = Path(tempfile.mkdtemp()) / "0"
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    got = node_pb2.UpdateChunk.FromString(raw)  # a chunk received,
    data = got.chunk.data                       # checked,
    hashlib.sha256(data).digest()
    spool.write_bytes(data)                     # spooled,
    del got, data
    back = spool.read_bytes()                   # and served
    out = chunks.serialize_with_chunk(driver_pb2.CohortSumChunk(cohort=0), 0, 1, back)
    del back, out
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_chunks_buffers_are_reused_instead_of_faulted_in_again() -> None:
    faults = {how: int(subprocess.run([sys.executable, "-c", PROBE, how], check=True, capture_output=True, text=True).stdout) for how in ("default", "tuned")}
    assert faults["tuned"] < 40 * 50 and faults["tuned"] * 10 < faults["default"], faults  # fresh pages: ~450 faults a chunk
