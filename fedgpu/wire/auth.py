"""Node identity: an Ed25519 key per node, requests signed, replays refused.

The node id is derived from the public key, so nobody can register under another node's id, and
every request proves possession of the key. The signed bytes are the method name, the request
serialized deterministically with its ``auth`` field cleared, the timestamp and a nonce. A request
carrying a chunk (an update's) is signed without the chunk's data: its SHA-256, which the receiver
checks against the data before using it (``fedgpu.wire.chunks.verify``), stands for it, so a 1 MiB
chunk is hashed once and not serialised, copied and hashed again by Ed25519 on both sides.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf import unknown_fields
from google.protobuf.message import Message

from fedgpu.errors import AuthError, ConfigError
from fedgpu.proto.fedgpu.v1 import common_pb2 as pb

CLOCK_SKEW_MS = 120_000


def node_id_for(public_key: bytes) -> str:
    return "n" + hashlib.sha256(public_key).hexdigest()[:15]


def _signed_bytes(method: str, request: object, timestamp_ms: int, nonce: bytes) -> bytes:
    body = _chunk_body(request) if isinstance(request, Message) and "chunk" in request.DESCRIPTOR.fields_by_name else None
    if body is None:
        body = _body_without_auth(request)
    return b"fedgpu.v1|" + method.encode() + b"|" + body + b"|" + timestamp_ms.to_bytes(8, "little") + nonce


def _body_without_auth(request: object) -> bytes:
    """The request serialized deterministically with ``auth`` cleared and, if it has one, its chunk's data."""
    auth = request.auth  # type: ignore[attr-defined]
    saved = pb.NodeAuth()
    saved.CopyFrom(auth)
    request.ClearField("auth")  # type: ignore[attr-defined]
    data = None
    if "chunk" in request.DESCRIPTOR.fields_by_name and request.HasField("chunk"):  # type: ignore[attr-defined]
        data = request.chunk.data  # type: ignore[attr-defined]
        request.chunk.ClearField("data")  # type: ignore[attr-defined]
    try:
        return bytes(request.SerializeToString(deterministic=True))  # type: ignore[attr-defined]
    finally:
        request.auth.CopyFrom(saved)  # type: ignore[attr-defined]
        if data:
            request.chunk.data = data  # type: ignore[attr-defined]


def _chunk_body(request: Message) -> bytes | None:
    """What :func:`_body_without_auth` makes, for a request carrying a chunk, without reading the chunk's data.

    The mutate-and-restore way copies the 1 MiB data out of the message and back in (two fresh
    allocations, ~1.5 ms a chunk); this one builds a copy of the small fields only. Its output is the
    same bytes; a request with fields this build would drop (unknown ones, from a newer peer) or that
    it cannot copy field by field gets None, and the caller the exact way.
    """
    chunk: Message = request.chunk
    if unknown_fields.UnknownFieldSet(request) or unknown_fields.UnknownFieldSet(chunk):
        return None
    body = type(request)()
    for fd, value in request.ListFields():
        if fd.name == "auth":
            continue
        if fd.name == "chunk":
            body_chunk: Message = body.chunk
            body_chunk.SetInParent()
            for cfd in value.DESCRIPTOR.fields:  # not ListFields(): that would read the data out too
                if cfd.name != "data":
                    setattr(body_chunk, cfd.name, getattr(value, cfd.name))
        elif isinstance(value, (bool, int, float, str, bytes)):  # a singular scalar (an enum is an int)
            setattr(body, fd.name, value)
        else:  # a message, repeated or map field: copied by the exact way
            return None
    return bytes(body.SerializeToString(deterministic=True))


def rotation_bytes(old_public_key: bytes, new_public_key: bytes) -> bytes:
    """What the new key signs to accept a rotation: the two keys, in order (RotateKey)."""
    return b"fedgpu.v1|RotateKey|" + old_public_key + b"|" + new_public_key


def verify_rotation(old_public_key: bytes, new_public_key: bytes, signature: bytes) -> None:
    """Refuse a rotation the new key did not sign (AuthError): nobody can rotate onto a key they do not hold."""
    try:
        Ed25519PublicKey.from_public_bytes(new_public_key).verify(signature, rotation_bytes(old_public_key, new_public_key))
    except (InvalidSignature, ValueError) as exc:
        raise AuthError("new_key_signature does not verify: sign rotation_bytes(old key, new key) with the new key") from exc


class Identity:
    """A node's key pair, kept in a file with owner-only permissions."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.node_id = node_id_for(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: str | Path) -> Identity:
        p = Path(path)
        if p.exists():
            try:
                key = serialization.load_pem_private_key(p.read_bytes(), password=None)
            except ValueError as exc:
                raise ConfigError(f"{p} is not a PEM private key; move it away to create a new identity") from exc
            if not isinstance(key, Ed25519PrivateKey):
                raise ConfigError(f"{p} is not an Ed25519 key")
            return cls(key)
        ident = cls.generate()
        p.parent.mkdir(parents=True, exist_ok=True)
        ident.save(p)
        return ident

    def accept_rotation(self, old_public_key: bytes) -> bytes:
        """This (new) key's signature accepting the rotation from ``old_public_key``."""
        return self._key.sign(rotation_bytes(old_public_key, self.public_key))

    def save(self, path: str | Path) -> None:
        """Write the key to a new file, owner-only (refuses to overwrite)."""
        pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(Path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())

    def sign(self, method: str, request: object) -> None:
        """Fill ``request.auth`` in place."""
        ts = int(time.time() * 1000)
        nonce = os.urandom(16)
        request.auth.CopyFrom(pb.NodeAuth(node_id=self.node_id, timestamp_ms=ts, nonce=nonce))  # type: ignore[attr-defined]
        sig = self._key.sign(_signed_bytes(method, request, ts, nonce))
        request.auth.signature = sig  # type: ignore[attr-defined]


class Verifier:
    """Checks signatures and refuses replays, across restarts too.

    Within one process the recent nonces are remembered. Across a restart nothing needs to be: a
    request signed before ``not_before_ms`` (the aggregator's start) is refused, so a replay of
    anything captured before the restart fails however fresh its timestamp still is, and a request
    signed after it is in this process's nonce memory. The price: a node whose clock runs behind the
    aggregator's is refused for that long after a restart (it signs again with backoff).
    """

    def __init__(self, max_nonces: int = 200_000, not_before_ms: int = 0) -> None:
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._max = max_nonces
        self.not_before_ms = not_before_ms

    def verify(self, method: str, request: object, public_key: bytes) -> None:
        auth = request.auth  # type: ignore[attr-defined]
        now = int(time.time() * 1000)
        if abs(now - auth.timestamp_ms) > CLOCK_SKEW_MS:
            raise AuthError(f"request timestamp is {abs(now - auth.timestamp_ms) / 1000:.0f} s off; check the node's clock")
        if auth.timestamp_ms < self.not_before_ms:
            raise AuthError(
                f"request signed {(self.not_before_ms - auth.timestamp_ms) / 1000:.1f} s before the aggregator started: "
                "a replay, or the node's clock is behind; sign it again"
            )
        if len(auth.nonce) != 16 or len(auth.signature) != 64:
            raise AuthError("auth needs a 16-byte nonce and a 64-byte Ed25519 signature")
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(
                auth.signature, _signed_bytes(method, request, auth.timestamp_ms, auth.nonce)
            )
        except (InvalidSignature, ValueError) as exc:
            raise AuthError(f"signature of {method} does not verify for node {auth.node_id}") from exc
        key = public_key + auth.nonce
        if key in self._seen:
            raise AuthError(f"replayed request: nonce already used by node {auth.node_id}")
        self._seen[key] = auth.timestamp_ms
        while len(self._seen) > self._max or (self._seen and next(iter(self._seen.values())) < now - 2 * CLOCK_SKEW_MS):
            self._seen.popitem(last=False)


__all__ = ["CLOCK_SKEW_MS", "Identity", "Verifier", "node_id_for", "rotation_bytes", "verify_rotation"]
