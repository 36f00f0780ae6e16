"""The node registry: who is registered (public key, capabilities), who was seen lately, who may work.

It owns each node's key and capabilities (a cache of the store's ``nodes`` table, loaded at start),
the liveness clock (when each node last called) and the ``Verifier`` that refuses forged and replayed
requests. Everything else asks it who a request comes from and which nodes can take a job; it asks
nothing of the rest of the aggregator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from fedgpu.aggregator.store import Store
from fedgpu.errors import AuthError, ProtocolError, StateError
from fedgpu.proto.fedgpu.v1 import node_pb2
from fedgpu.wire import PROTOCOL_VERSION
from fedgpu.wire.auth import Verifier, node_id_for

log = logging.getLogger("fedgpu.aggregator")

NODE_TIMEOUT_S = 30.0      # a node unseen for this long is not offered tasks


def check_protocol(version: int, who: str) -> None:
    """Refuse a peer of another protocol major version (0: an old peer that sends none)."""
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"this aggregator speaks fedgpu protocol {PROTOCOL_VERSION}, the {who} speaks {version or 'an older one'}: "
            f"install the same fedgpu major version on both"
        )


class NodeRegistry:
    def __init__(self, store: Store, booted_ms: int, node_timeout: float = NODE_TIMEOUT_S) -> None:
        self.store = store
        # Signatures made before this process booted are refused: no replay across a restart.
        self.verifier = Verifier(not_before_ms=booted_ms)
        self.node_timeout = node_timeout
        self.last_seen: dict[str, float] = {}
        self.pubkeys: dict[str, bytes] = {}
        self.node_caps: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, bytes] = {}   # node -> the session of the process that registered it last
        self.node_available = asyncio.Event()  # set whenever a node calls: a round waiting for nodes looks again

    def load(self) -> None:
        for n in self.store.all_nodes():
            self.pubkeys[n["id"]] = n["public_key"]
            self.node_caps[n["id"]] = n["capabilities"]

    def register(self, req: node_pb2.RegisterRequest) -> str:
        check_protocol(req.protocol_version, "node")
        if len(req.public_key) != 32:
            raise ProtocolError("public_key must be a raw 32-byte Ed25519 key")
        if len(req.name) > 200 or len(req.capabilities.models) > 1000 or len(req.capabilities.datasets) > 1000:
            raise ProtocolError("registration too large: name <= 200 chars, <= 1000 models and datasets")
        node_id = node_id_for(req.public_key)
        if req.auth.node_id not in ("", node_id):
            raise AuthError("auth.node_id does not belong to this public key")
        self.verifier.verify("Register", req, req.public_key)
        self._claim_session(node_id, req.session)
        caps = {"models": sorted(req.capabilities.models), "datasets": sorted(req.capabilities.datasets), "device": req.capabilities.device[:200], "name": req.name or node_id}
        self.store.upsert_node(node_id, req.public_key, req.name or node_id, caps)
        self.pubkeys[node_id] = req.public_key
        self.node_caps[node_id] = caps
        self.seen(node_id)
        log.info("node %s registered (%s, %s)", node_id, req.name, caps["device"])
        return node_id

    def _claim_session(self, node_id: str, session: bytes) -> None:
        """One live process per identity: a Register from another process while the node id is live is refused."""
        if len(session) > 64:
            raise ProtocolError("session must be at most 64 bytes")
        if not session:
            return  # a node of an older version sends none
        held = self.sessions.get(node_id)
        idle = time.monotonic() - self.last_seen.get(node_id, -1e9)
        if held is not None and held != session and idle <= self.node_timeout:
            raise StateError(
                f"node {node_id} is already live in another process (its last call was {idle:.0f} s ago): two `fedgpu node` "
                f"processes share one identity. Give each its own --home; a process that has just stopped is forgotten after {self.node_timeout:.0f} s"
            )
        self.sessions[node_id] = session

    def authenticate(self, method: str, req: object) -> str:
        node_id = str(req.auth.node_id)  # type: ignore[attr-defined]
        key = self.pubkeys.get(node_id)
        if key is None:
            raise AuthError(f"node {node_id!r} is not registered; call Register first")
        self.verifier.verify(method, req, key)
        self.seen(node_id)
        return node_id

    def seen(self, node_id: str) -> None:
        self.last_seen[node_id] = time.monotonic()
        self.node_available.set()

    def name(self, node_id: str) -> str:
        return str(self.node_caps.get(node_id, {}).get("name", node_id))

    def live(self) -> set[str]:
        """Nodes seen within the liveness timeout."""
        now = time.monotonic()
        return {n for n, t in self.last_seen.items() if now - t <= self.node_timeout}

    def capable(self, model: str, dataset: str) -> set[str]:
        """Nodes that said they have the model and the dataset, alive or not."""
        return {n for n, c in self.node_caps.items() if model in c.get("models", []) and dataset in c.get("datasets", [])}

    def eligible(self, model: str, dataset: str, exclude: Iterable[str]) -> list[str]:
        """Capable nodes seen within the timeout, apart from ``exclude`` (declined or busy), sorted."""
        now = time.monotonic()
        skip = set(exclude)
        out = []
        for node_id, caps in self.node_caps.items():
            if now - self.last_seen.get(node_id, -1e9) > self.node_timeout or node_id in skip:
                continue
            if model in caps.get("models", []) and dataset in caps.get("datasets", []):
                out.append(node_id)
        return sorted(out)


__all__ = [
    "NODE_TIMEOUT_S",
    "NodeRegistry",
    "check_protocol",
]
