"""1,000 hostile messages across every RPC: each is refused with a status that names the problem
(never UNKNOWN, never an INTERNAL crash), and the aggregator goes on serving.

The aggregator is the real one (``fedgpu aggregator`` in its own process, TLS on 127.0.0.1).
Messages reach it as raw bytes (``request_serializer`` is the identity), so anything can be sent:
random bytes, valid messages truncated or with bits flipped, another method's message, and
well-formed messages with garbage in every field. Half of the well-formed node messages are
signed by a registered node, and half of the driver messages carry a real job's id and token, so
the garbage gets past authentication into the aggregator's own checks.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from fedgpu import crypto
from fedgpu.config import EncryptionConfig, JobConfig, TrainingConfig
from fedgpu.demo import Cluster
from fedgpu.proto.fedgpu.v1 import common_pb2, driver_pb2, driver_pb2_grpc, node_pb2, node_pb2_grpc
from fedgpu.wire import PROTOCOL_VERSION, chunks
from fedgpu.wire.auth import Identity
from fedgpu.wire.serde import job_to_proto
from fedgpu.wire.transport import open_channel

SEED = 16
MESSAGES = 1_000
CALL_TIMEOUT_S = 10.0   # far above any honest answer here: a call that needs it is a hang, and fails the test


@dataclass(frozen=True)
class Method:
    path: str
    request: type[Message]
    client_streaming: bool
    server_streaming: bool


def every_method() -> list[Method]:
    """Every RPC of node.proto and driver.proto, from the descriptors: a new RPC is fuzzed without editing this file."""
    out = []
    for file in (node_pb2.DESCRIPTOR, driver_pb2.DESCRIPTOR):
        for service in file.services_by_name.values():
            for m in service.methods:
                out.append(Method(f"/{service.full_name}/{m.name}", message_factory.GetMessageClass(m.input_type), m.client_streaming, m.server_streaming))
    return out


class Fuzzer:
    def __init__(self, rng: random.Random, node: Identity, job_id: str, token: str) -> None:
        self.rng, self.node, self.job_id, self.token = rng, node, job_id, token

    # ---- values ----------------------------------------------------------------------------
    def text(self) -> str:
        pool = ["", "\x00", "a" * self.rng.randint(1, 3000), "../../etc/passwd", "'; DROP TABLE nodes; --", "\u202e\U0001f4a5", "nan", "-1"]
        if self.rng.random() < 0.5:
            return self.rng.choice(pool)
        return "".join(chr(self.rng.choice([self.rng.randint(32, 126), self.rng.randint(0x80, 0xD7FF)])) for _ in range(self.rng.randint(0, 40)))

    def blob(self) -> bytes:
        return self.rng.randbytes(self.rng.choice([0, 1, 7, 32, 33, 64, 500, 5000]))

    def scalar(self, f: FieldDescriptor) -> Any:
        t, r = f.type, self.rng
        if t == FieldDescriptor.TYPE_STRING:
            return self.text()
        if t == FieldDescriptor.TYPE_BYTES:
            return self.blob()
        if t == FieldDescriptor.TYPE_BOOL:
            return r.random() < 0.5
        if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return r.choice([0.0, -0.0, 1e308 if t == FieldDescriptor.TYPE_DOUBLE else 3e38, -1.0, math.nan, math.inf, -math.inf, r.uniform(-1e6, 1e6)])
        if t == FieldDescriptor.TYPE_ENUM:
            return r.choice([v.number for v in f.enum_type.values] + [r.randint(-(2**31), 2**31 - 1)])
        if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return r.choice([0, 1, 2**31, 2**32 - 1, r.randint(0, 100)])
        if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return r.choice([0, 1, 2**63, 2**64 - 1, r.randint(0, 100)])
        if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
            return r.choice([0, -1, 2**31 - 1, -(2**31), r.randint(-100, 100)])
        return r.choice([0, -1, 2**63 - 1, -(2**63), r.randint(-100, 100)])

    def fill(self, msg: Message, depth: int = 0) -> Message:
        """Garbage in a random subset of the fields, nested messages included."""
        d: Descriptor = msg.DESCRIPTOR
        for f in d.fields:
            if self.rng.random() < 0.3:
                continue
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                mp = getattr(msg, f.name)
                key_f, val_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
                for _ in range(self.rng.choice([1, 3, 50])):
                    mp[self.scalar(key_f)] = self.scalar(val_f)
            elif f.message_type is not None:
                if depth >= 3:
                    continue
                if f.label == FieldDescriptor.LABEL_REPEATED:
                    for _ in range(self.rng.choice([1, 2, 20])):
                        self.fill(getattr(msg, f.name).add(), depth + 1)
                elif f.message_type.full_name == "fedgpu.v1.Chunk" and self.rng.random() < 0.5:
                    getattr(msg, f.name).CopyFrom(chunks.make_chunk(0, 1, self.blob()))  # consistent: reaches the payload checks
                else:
                    self.fill(getattr(msg, f.name), depth + 1)
            elif f.label == FieldDescriptor.LABEL_REPEATED:
                getattr(msg, f.name).extend(self.scalar(f) for _ in range(self.rng.choice([1, 5, 200])))
            else:
                setattr(msg, f.name, self.scalar(f))
        return msg

    def authentic(self, method: Method, msg: Message) -> Message:
        """Make half of the garbage authentic: signed by a registered node, or naming the real job with its token."""
        names = msg.DESCRIPTOR.fields_by_name
        if self.rng.random() < 0.5:
            return msg
        if "job_id" in names and "token" in names and not method.path.endswith("/WatchJob"):  # a real watch never ends
            msg.job_id, msg.token = self.job_id, self.token  # type: ignore[attr-defined]
        if "auth" in names:
            if "public_key" in names:
                msg.public_key = self.node.public_key  # type: ignore[attr-defined]
            if "wait_seconds" in names:
                msg.wait_seconds = self.rng.randint(0, 1)  # type: ignore[attr-defined]  # a signed long-poll waits for real
            self.node.sign(method.path.rsplit("/", 1)[1], msg)
        return msg

    # ---- messages --------------------------------------------------------------------------
    def one(self, method: Method, all_methods: list[Method]) -> tuple[str, bytes]:
        kind = self.rng.choice(["random", "truncated", "bitflip", "other_type", "garbage", "garbage"])
        if kind == "random":
            return kind, self.rng.randbytes(self.rng.choice([1, 2, 5, 16, 100, 2000]))
        if kind == "other_type":
            other = self.rng.choice(all_methods).request
            return kind, self.fill(other()).SerializeToString()
        msg = self.fill(method.request())
        if kind == "garbage":
            return kind, self.authentic(method, msg).SerializeToString()
        raw = bytearray(msg.SerializeToString() or b"\x0a\x05hello")
        if kind == "truncated":
            return kind, bytes(raw[: self.rng.randrange(len(raw))]) if len(raw) > 1 else b"\x0a"
        for _ in range(self.rng.randint(1, 8)):
            raw[self.rng.randrange(len(raw))] ^= 1 << self.rng.randrange(8)
        return kind, bytes(raw)


def raw(data: bytes) -> bytes:
    return data  # the request serializer: arbitrary bytes reach the server


def call(channel: grpc.Channel, method: Method, payloads: list[bytes]) -> grpc.StatusCode:
    try:
        if method.client_streaming:
            channel.stream_unary(method.path, request_serializer=raw)(iter(payloads), timeout=CALL_TIMEOUT_S)
        elif method.server_streaming:
            for _ in channel.unary_stream(method.path, request_serializer=raw)(payloads[0], timeout=CALL_TIMEOUT_S):
                pass
        else:
            channel.unary_unary(method.path, request_serializer=raw)(payloads[0], timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def submit_job(channel: grpc.Channel) -> tuple[str, str]:
    cfg = JobConfig(
        name="fuzz", model="digits_cnn", dataset="digits", rounds=2, nodes_per_round=2, min_nodes=2, deadline_seconds=20,
        training=TrainingConfig(epochs=1, batch_size=16, lr=0.05), encryption=EncryptionConfig("none"),
    ).validate()
    k = crypto.generate_keys("none")
    ctx = common_pb2.EncryptionContext(
        scheme=k.scheme, params=k.params, public_material=k.public_material,
        fingerprint=crypto.context_fingerprint(k.scheme, k.params, k.public_material), values_per_chunk=k.values_per_chunk,
    )
    reply = driver_pb2_grpc.DriverServiceStub(channel).SubmitJob(driver_pb2.SubmitJobRequest(spec=job_to_proto(cfg, ctx, 10_026), protocol_version=PROTOCOL_VERSION), timeout=30)
    return reply.job_id, reply.token


def register(channel: grpc.Channel, node: Identity) -> str:
    req = node_pb2.RegisterRequest(public_key=node.public_key, name="fuzz", capabilities=node_pb2.Capabilities(models=["digits_cnn"], datasets=["digits"]), protocol_version=PROTOCOL_VERSION)
    node.sign("Register", req)
    return node_pb2_grpc.NodeServiceStub(channel).Register(req, timeout=30).node_id


def test_fuzzed_messages_are_refused_cleanly_and_the_aggregator_keeps_serving(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, dict(os.environ))
    try:
        address = cluster.start_aggregator()
        channel = open_channel(address, cluster.tls)
        node = Identity.load_or_create(tmp_path / "fuzz.pem")
        register(channel, node)
        job_id, token = submit_job(channel)
        rng = random.Random(SEED)
        fuzzer = Fuzzer(rng, node, job_id, token)
        methods = every_method()
        assert len(methods) == 16
        statuses: Counter[str] = Counter()
        by_method: dict[str, Counter[str]] = {}
        t0 = time.monotonic()
        for i in range(MESSAGES):
            m = methods[i % len(methods)]
            count = rng.choice([1, 1, 2, 4]) if m.client_streaming else 1
            payloads = [fuzzer.one(m, methods)[1] for _ in range(count)]
            code = call(channel, m, payloads)
            statuses[code.name] += 1
            by_method.setdefault(m.path.rsplit("/", 1)[1], Counter())[code.name] += 1
        seconds = time.monotonic() - t0
        print(f"\n{MESSAGES} fuzzed calls in {seconds:.1f} s: {dict(statuses)}")
        for name, c in sorted(by_method.items()):
            print(f"  {name:<18} {dict(c)}")
        assert statuses["UNKNOWN"] == 0, by_method
        assert statuses["INTERNAL"] == 0, by_method
        assert statuses["DEADLINE_EXCEEDED"] == 0, by_method
        assert statuses["UNAVAILABLE"] == 0, by_method  # the aggregator never went away
        assert register(channel, Identity.load_or_create(tmp_path / "after.pem"))  # still serves an honest node
        channel.close()
    finally:
        cluster.close()
    log = (tmp_path / "aggregator.log").read_text()
    for sign_of_a_crash in ("crashed", "Traceback", "Unexpected"):
        assert sign_of_a_crash not in log, log[log.find(sign_of_a_crash) - 2000 :][:4000]
