"""The node registry's rule of one live process per identity."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fedgpu.aggregator.registry import NodeRegistry
from fedgpu.aggregator.store import Store
from fedgpu.errors import StateError
from fedgpu.proto.fedgpu.v1 import node_pb2
from fedgpu.wire import PROTOCOL_VERSION
from fedgpu.wire.auth import Identity


def request(ident: Identity, session: bytes) -> node_pb2.RegisterRequest:
    req = node_pb2.RegisterRequest(public_key=ident.public_key, name="n", capabilities=node_pb2.Capabilities(models=["mlp"], datasets=["digits"]), protocol_version=PROTOCOL_VERSION, session=session)
    ident.sign("Register", req)
    return req


def test_one_live_process_per_identity(tmp_path: Path) -> None:
    registry = NodeRegistry(Store(f"sqlite:///{tmp_path / 'a.db'}"), booted_ms=0, live_grace=0.5)
    ident = Identity.load_or_create(tmp_path / "id.pem")
    registry.register(request(ident, b"a" * 16))
    beat(registry, ident)  # it shows life (registering alone is none)
    registry.register(request(ident, b"a" * 16))  # the same process again (e.g. after an aggregator restart): fine
    with pytest.raises(StateError, match="already live in another process"):
        registry.register(request(ident, b"b" * 16))
    registry.register(request(ident, b""))  # an older node sends no session: not checked
    time.sleep(0.6)  # the first process went quiet: it is forgotten after the liveness grace
    registry.register(request(ident, b"b" * 16))
    beat(registry, ident)
    with pytest.raises(StateError):
        registry.register(request(ident, b"a" * 16))


def beat(registry: NodeRegistry, ident: Identity) -> None:
    hb = node_pb2.HeartbeatRequest()
    ident.sign("Heartbeat", hb)
    registry.authenticate("Heartbeat", hb)
