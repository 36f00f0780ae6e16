"""The node registry: who is registered (public key, capabilities), who is live, who may work.

It owns each node's key and capabilities (a cache of the store's ``nodes`` table, loaded at start),
the admission of new identities (``admission``: rate limits, allow-list), liveness (the PullTask
calls each node has open, when it last sent a signed request, who missed a deadline), the bound on
concurrent calls per identity, and the ``Verifier`` that refuses forged and replayed requests.
Everything else asks it who a request comes from and which nodes can take a job; it asks nothing of
the rest of the aggregator.

Liveness (docs/protocol.md, "Admission and liveness"): a node is eligible for a task only while it
is live, i.e. it has a PullTask open or sent a signed request in the last ``live_grace`` seconds.
Registering is not a sign of life: an identity that registered and never called again stays in
memory only (``unproven``), is never offered a task, and is forgotten after the policy's TTL. A
PullTask that ends because its caller went away (the connection closed, the process was killed)
ends the node's liveness at once. A node whose task failed at a deadline is not offered another
until it shows life after that deadline with a new PullTask.

Key rotation: a node may replace its key (``RotateKey``, signed by the old key and the new one). The
old id is retired (refused from then on), the new one inherits its name and capabilities, and both
belong to one operator: the first id of the chain, under which the ledger's balances are shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from fedgpu.aggregator.admission import Admission
from fedgpu.aggregator.store import Store
from fedgpu.errors import AuthError, ProtocolError, RateLimited, StateError
from fedgpu.proto.fedgpu.v1 import node_pb2
from fedgpu.wire import PROTOCOL_VERSION
from fedgpu.wire.auth import Verifier, node_id_for, verify_rotation

log = logging.getLogger("fedgpu.aggregator")

# A node is live while a PullTask is open, or for this long after its last signed request (nodes
# long-poll back to back; their heartbeat comes every 10 s while they train, when they are busy anyway).
LIVE_GRACE_S = 5.0


def check_protocol(version: int, who: str) -> None:
    """Refuse a peer of another protocol major version (0: an old peer that sends none)."""
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"this aggregator speaks fedgpu protocol {PROTOCOL_VERSION}, the {who} speaks {version or 'an older one'}: "
            f"install the same fedgpu major version on both"
        )


class NodeRegistry:
    def __init__(self, store: Store, booted_ms: int, admission: Admission | None = None, live_grace: float = LIVE_GRACE_S) -> None:
        self.store = store
        # Signatures made before this process booted are refused: no replay across a restart.
        self.verifier = Verifier(not_before_ms=booted_ms)
        self.admission = admission or Admission()
        self.live_grace = live_grace
        self.started = time.monotonic()
        self.pubkeys: dict[str, bytes] = {}
        self.node_caps: dict[str, dict[str, Any]] = {}
        self.unproven: dict[str, float] = {}       # registered here, no signed request since -> when (monotonic); not in the store
        self.last_life: dict[str, float] = {}      # node -> its last signed request (monotonic), Register apart
        self.open_calls: Counter[tuple[str, str]] = Counter()  # (node, method) -> calls open now
        self.missed: set[str] = set()              # nodes whose task failed at a deadline and that have not pulled since
        self.successor: dict[str, str] = {}        # retired id -> the id its key was rotated to
        self.retired_keys: dict[str, bytes] = {}   # retired id -> its public key
        self.operator: dict[str, str] = {}         # id in a chain of keys -> the chain's first id
        self.sessions: dict[str, bytes] = {}       # node -> the session of the process that registered it last
        self.node_available = asyncio.Event()  # set whenever a node shows life: a round waiting for nodes looks again

    def load(self) -> None:
        for n in self.store.all_nodes():
            self.pubkeys[n["id"]] = n["public_key"]
            self.node_caps[n["id"]] = n["capabilities"]
        for r in self.store.key_rotations():
            self._retire(r["node_id"], r["successor_id"], r["operator_id"])

    def _retire(self, node_id: str, successor_id: str, operator_id: str) -> None:
        self.successor[node_id] = successor_id
        self.operator[node_id] = self.operator[successor_id] = operator_id
        key = self.pubkeys.pop(node_id, None)
        if key is not None:
            self.retired_keys[node_id] = key
        self.node_caps.pop(node_id, None)
        self.last_life.pop(node_id, None)
        self.missed.discard(node_id)

    def _refuse_retired(self, node_id: str) -> None:
        if node_id in self.successor:
            raise AuthError(f"node {node_id}'s key was rotated to node {self.successor[node_id]}: sign with the new key (HOME/identity.pem)")

    def _earlier_keys(self, node_id: str) -> list[bytes]:
        """The first key of the node's chain, if it rotated: an allow-list entry for it admits its successors."""
        first = self.operator.get(node_id)
        return [self.retired_keys[first]] if first is not None and first in self.retired_keys else []

    def chain(self, node_id: str) -> list[str]:
        """Every id of the node's chain of keys (just the node when it never rotated)."""
        first = self.operator.get(node_id)
        return [node_id] if first is None else sorted(n for n, op in self.operator.items() if op == first)

    # ---- registration --------------------------------------------------------------------------
    def register(self, req: node_pb2.RegisterRequest, source: str = "unknown") -> str:
        check_protocol(req.protocol_version, "node")
        if len(req.public_key) != 32:
            raise ProtocolError("public_key must be a raw 32-byte Ed25519 key")
        if len(req.name) > 200 or len(req.capabilities.models) > 1000 or len(req.capabilities.datasets) > 1000:
            raise ProtocolError("registration too large: name <= 200 chars, <= 1000 models and datasets")
        node_id = node_id_for(req.public_key)
        if req.auth.node_id not in ("", node_id):
            raise AuthError("auth.node_id does not belong to this public key")
        self.admission.check_source(source)  # before the signature: one source cannot spend our CPU faster than its rate
        self._refuse_retired(node_id)
        self.admission.check_key(req.public_key, *self._earlier_keys(node_id))
        self.verifier.verify("Register", req, req.public_key)
        self._claim_session(node_id, req.session)
        caps = {"models": sorted(req.capabilities.models), "datasets": sorted(req.capabilities.datasets), "device": req.capabilities.device[:200], "name": req.name or node_id}
        now = time.monotonic()
        if node_id in self.pubkeys and node_id not in self.unproven:
            self.store.upsert_node(node_id, req.public_key, req.name or node_id, caps)  # known: its capabilities may have changed
        else:
            self._forget_unproven(now)
            if node_id not in self.unproven:
                if len(self.unproven) >= self.admission.policy.max_unproven:
                    raise RateLimited(
                        f"{len(self.unproven)} registered nodes have not connected since (the bound is {self.admission.policy.max_unproven}): "
                        f"retry in {self.admission.policy.unproven_ttl_s:.0f} s with back-off, and pull tasks right after registering"
                    )
                self.admission.check_new_identity()
            self.unproven.pop(node_id, None)  # to the end: the dict stays in registration order for _forget_unproven
            self.unproven[node_id] = now  # written to the store at its first signed request
        self.pubkeys[node_id] = req.public_key
        self.node_caps[node_id] = caps
        log.info("node %s registered (%s, %s)", node_id, req.name, caps["device"])
        return node_id

    def _claim_session(self, node_id: str, session: bytes) -> None:
        """One live process per identity: a Register from another process while the node id is live is refused."""
        if len(session) > 64:
            raise ProtocolError("session must be at most 64 bytes")
        if not session:
            return  # a node of an older version sends none
        held = self.sessions.get(node_id)
        if held is not None and held != session and self.live(node_id):
            raise StateError(
                f"node {node_id} is already live in another process: two `fedgpu node` processes share one identity. "
                f"Give each its own --home; a process that has stopped is forgotten {self.live_grace:.0f} s after its last call"
            )
        self.sessions[node_id] = session

    def _forget_unproven(self, now: float) -> None:
        """Drop the identities that registered longer than the TTL ago and never called again."""
        ttl = self.admission.policy.unproven_ttl_s
        while self.unproven:
            node_id, at = next(iter(self.unproven.items()))  # insertion order is registration order
            if now - at <= ttl:
                break
            del self.unproven[node_id]
            self.pubkeys.pop(node_id, None)
            self.node_caps.pop(node_id, None)

    def authenticate(self, method: str, req: object) -> str:
        node_id = str(req.auth.node_id)  # type: ignore[attr-defined]
        self._refuse_retired(node_id)
        key = self.pubkeys.get(node_id)
        if key is None:
            raise AuthError(f"node {node_id!r} is not registered; call Register first")
        self.verifier.verify(method, req, key)
        self.admission.check_key(key, *self._earlier_keys(node_id))  # a key taken off the allow-list is refused at once
        self._alive(node_id)
        return node_id

    def rotate_key(self, req: node_pb2.RotateKeyRequest, busy: set[str]) -> tuple[str, str]:
        """Retire the signer's key for ``req.new_public_key``: (the new id, the operator). Asked again
        after a lost reply (the same new key, signed by the retired one), it answers the same."""
        node_id = str(req.auth.node_id)
        key = self.pubkeys.get(node_id) or self.retired_keys.get(node_id)
        if key is None:
            raise AuthError(f"node {node_id!r} is not registered; call Register first")
        self.verifier.verify("RotateKey", req, key)
        new_key = bytes(req.new_public_key)
        if len(new_key) != 32:
            raise ProtocolError("new_public_key must be a raw 32-byte Ed25519 key")
        new_id = node_id_for(new_key)
        verify_rotation(key, new_key, bytes(req.new_key_signature))
        if node_id in self.successor:
            if self.successor[node_id] == new_id:
                return new_id, self.operator[node_id]
            self._refuse_retired(node_id)
        self.admission.check_key(key, *self._earlier_keys(node_id))
        if new_id == node_id or new_id in self.retired_keys or (new_id in self.pubkeys and new_id not in self.unproven):
            raise StateError(f"the new key (node {new_id}) is registered already: rotate to a freshly generated key")
        if node_id in busy:
            raise StateError(f"node {node_id} has a task in an open round: rotate its key once that round is over")
        self._alive(node_id)  # stored if it was not yet
        operator = self.operator.get(node_id, node_id)
        self.store.rotate_key(node_id, new_id, new_key, operator)
        self.unproven.pop(new_id, None)
        self.pubkeys[new_id] = new_key
        self.node_caps[new_id] = self.node_caps[node_id]
        self._retire(node_id, new_id, operator)
        log.info("node %s rotated its key: now node %s (operator %s)", node_id, new_id, operator)
        return new_id, operator

    def _alive(self, node_id: str) -> None:
        self.last_life[node_id] = time.monotonic()
        if self.unproven.pop(node_id, None) is not None:  # its first sign of life: now it is worth a row
            caps = self.node_caps[node_id]
            self.store.upsert_node(node_id, self.pubkeys[node_id], str(caps.get("name", node_id)), caps)
        self.node_available.set()

    # ---- open calls and liveness ---------------------------------------------------------------
    @contextlib.contextmanager
    def call_slot(self, node_id: str, method: str) -> Iterator[None]:
        """Hold one of the node's ``max_calls_per_node`` slots for ``method`` while the call is open."""
        key = (node_id, method)
        limit = self.admission.policy.max_calls_per_node
        if self.open_calls[key] >= limit:
            raise RateLimited(f"node {node_id} already has {self.open_calls[key]} {method} calls open (at most {limit} per node): wait for one to end")
        self.open_calls[key] += 1
        try:
            yield
        finally:
            self.open_calls[key] -= 1
            if self.open_calls[key] <= 0:
                del self.open_calls[key]

    @contextlib.contextmanager
    def pulling(self, node_id: str) -> Iterator[None]:
        """A PullTask in flight: the node is live throughout, and a new pull clears a missed deadline.
        Cancelled (its caller went away): the node is not live any more, unless another pull is open."""
        with self.call_slot(node_id, "PullTask"):
            self.missed.discard(node_id)
            self._alive(node_id)
            try:
                yield
            except asyncio.CancelledError:
                if self.open_calls[(node_id, "PullTask")] <= 1:
                    self.last_life.pop(node_id, None)
                raise
            self.last_life[node_id] = time.monotonic()

    def missed_deadline(self, node_id: str) -> None:
        """Its task failed at the deadline: no task until it pulls again."""
        self.missed.add(node_id)

    def live(self, node_id: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.open_calls[(node_id, "PullTask")] > 0 or now - self.last_life.get(node_id, -1e18) <= self.live_grace

    def live_nodes(self) -> set[str]:
        """Every live node: one liveness rule for the census, the unservable-job check and the metrics."""
        now = time.monotonic()
        return {n for n in list(self.last_life) + [n for n, _ in self.open_calls] if self.live(n, now)}

    # ---- who may work --------------------------------------------------------------------------
    def name(self, node_id: str) -> str:
        return str(self.node_caps.get(node_id, {}).get("name", node_id))

    def capable(self, model: str, dataset: str) -> set[str]:
        """Nodes that said they have the model and the dataset, live or not."""
        return {n for n, c in self.node_caps.items() if model in c.get("models", []) and dataset in c.get("datasets", [])}

    def eligible(self, model: str, dataset: str, exclude: Iterable[str]) -> list[str]:
        """Capable live nodes that did not miss a deadline since their last pull, apart from ``exclude``
        (declined or busy), sorted. Only nodes that showed life are looked at, and the stale are dropped."""
        now = time.monotonic()
        skip = set(exclude) | self.missed
        out = []
        for node_id in list(self.last_life):
            if not self.live(node_id, now):
                del self.last_life[node_id]
                continue
            caps = self.node_caps.get(node_id, {})
            if node_id not in skip and model in caps.get("models", []) and dataset in caps.get("datasets", []):
                out.append(node_id)
        return sorted(out)


__all__ = [
    "LIVE_GRACE_S",
    "NodeRegistry",
    "check_protocol",
]
