"""An upload's chunks are checked one by one however they are read: signed, fresh, intact, in order.

The upload path counts a message by its size on the wire and builds a chunk's signed body without
copying its data; these tests make sure no check was lost on the way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from fedgpu import crypto
from fedgpu.aggregator.attempt import RoundState, TaskState, TaskStatus
from fedgpu.aggregator.registry import NodeRegistry
from fedgpu.aggregator.store import Store
from fedgpu.aggregator.uploads import Uploads
from fedgpu.crypto.plain import PlainKeyPair
from fedgpu.errors import AuthError, ProtocolError, StateError
from fedgpu.proto.fedgpu.v1 import node_pb2
from fedgpu.wire import PROTOCOL_VERSION, chunks
from fedgpu.wire.auth import Identity
from fedgpu.wire.records import EncryptionContext, PrivacyPlan, Task, TrainingPlan, UploadProgress

VALUES = 1000  # per chunk; the update is two chunks of 1000 values (999 parameters + the weight slot each)


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.store = Store(str(tmp / "a.db"))
        self.registry = NodeRegistry(self.store, booted_ms=0)
        self.uploads = Uploads(self.store, self.registry, tmp / "spool")
        self.me = Identity.generate()
        req = node_pb2.RegisterRequest(public_key=self.me.public_key, name="me", protocol_version=PROTOCOL_VERSION)
        self.me.sign("Register", req)
        self.registry.register(req)
        now = time.time()
        self.rs = RoundState("job-1", 1, 1, "a1", "none", now, now + 60, crypto.adder("none", PlainKeyPair(values_per_chunk=VALUES).params),
                             [[self.me.node_id]], {}, 2, tmp / "acc")
        self.rs.acc_dir.mkdir()
        task = Task("t1", "job-1", 1, 0, "mlp", "digits", TrainingPlan(1, 16, 0.05, 0.0, 1), PrivacyPlan(False, 0.0, 0.0, 0.0, 0, "rdp", "sample", 0.0, 0.0, 0),
                    EncryptionContext("none", b"", b"", "fp", VALUES), int(now * 1000) + 60_000, 2 * (VALUES - 1), 2)
        self.ts = TaskState(task=task, node_id=self.me.node_id, cohort=0)
        self.uploads.offer(self.rs, self.ts)
        self.payloads = [np.full(VALUES, i + 1, np.float32).tobytes() for i in range(2)]

    def signed(self, index: int, data: bytes | None = None) -> node_pb2.UpdateChunk:
        msg = node_pb2.UpdateChunk(task_id="t1", fingerprint="fp", chunk=chunks.make_chunk(index, 2, data if data is not None else self.payloads[index]), train_seconds=1.5)
        self.me.sign("UploadUpdate", msg)
        return msg

    def close(self) -> None:
        self.store.engine.dispose()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.close()


def upload(setup: Setup, *wires: bytes, received: Callable[[int], None] | None = None) -> UploadProgress:
    async def stream() -> AsyncIterator[tuple[node_pb2.UpdateChunk, int]]:
        for raw in wires:  # as the server's deserializer hands them on: parsed, with their size on the wire
            yield node_pb2.UpdateChunk.FromString(raw), len(raw)

    return asyncio.run(setup.uploads.upload(stream(), received))


def test_an_upload_is_counted_by_its_wire_size_and_spooled_as_sent(setup: Setup) -> None:
    wires = [setup.signed(i).SerializeToString() for i in range(2)]
    seen: list[int] = []
    progress = upload(setup, *wires, received=seen.append)
    assert progress.complete and setup.ts.status is TaskStatus.COMPLETE
    assert seen == [len(w) for w in wires] and setup.ts.bytes_up == sum(map(len, wires))
    assert [setup.rs.raw_path(0, i).read_bytes() for i in range(2)] == setup.payloads


def test_a_chunk_whose_bytes_were_altered_after_signing_is_refused(setup: Setup) -> None:
    wire = setup.signed(0).SerializeToString()
    at = wire.index(setup.payloads[0]) + 100  # one byte of the data, in transit
    tampered = wire[:at] + bytes([wire[at] ^ 1]) + wire[at + 1 :]
    with pytest.raises(ProtocolError, match="SHA-256"):
        upload(setup, tampered)
    assert setup.ts.status is TaskStatus.FAILED and setup.ts.bytes_up == 0
    assert not setup.uploads.part_path("t1").exists()


@pytest.mark.parametrize("field", ["task_id", "train_seconds", "index", "sha256"])
def test_a_chunk_whose_signed_fields_were_altered_is_refused(setup: Setup, field: str) -> None:
    msg = setup.signed(0)
    if field == "task_id":
        msg.task_id = "t2"
    elif field == "train_seconds":
        msg.train_seconds = 0.5
    elif field == "index":
        msg.chunk.index = 1
    else:
        msg.chunk.CopyFrom(chunks.make_chunk(0, 2, setup.payloads[1]))  # other data under a digest that matches it
    with pytest.raises(AuthError, match="does not verify"):
        upload(setup, msg.SerializeToString())
    assert setup.ts.received == 0 and setup.ts.status is TaskStatus.ASSIGNED  # nobody's update is failed by a forgery


def test_a_replayed_chunk_is_refused(setup: Setup) -> None:
    first = setup.signed(0).SerializeToString()
    with pytest.raises(AuthError, match="replayed"):  # the same signed message twice in one stream
        upload(setup, first, first)
    assert setup.ts.received == 1
    with pytest.raises(AuthError, match="replayed"):  # or in a later stream
        upload(setup, first)
    with pytest.raises(StateError, match="already received"):  # signed afresh, but a chunk already in
        upload(setup, setup.signed(0).SerializeToString())
    assert upload(setup, setup.signed(1).SerializeToString()).complete
    with pytest.raises(AuthError, match="replayed"):
        upload(setup, first)
