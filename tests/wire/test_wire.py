import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgpu.errors import AuthError, ProtocolError
from fedgpu.proto.fedgpu.v1 import node_pb2
from fedgpu.wire import chunks, tensors
from fedgpu.wire.auth import Identity, Verifier


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=5000), size=st.integers(1, 700))
def test_split_join_round_trip(data: bytes, size: int) -> None:
    parts = chunks.split(data, size)
    assert all(len(p.data) <= size for p in parts)
    assert chunks.join(parts) == data


def test_tampered_reordered_and_truncated_payloads_fail() -> None:
    parts = chunks.split(b"x" * 3000, 1000)
    bad = node_pb2.UpdateChunk().chunk.__class__()
    bad.CopyFrom(parts[1])
    bad.data = b"y" * 1000
    with pytest.raises(ProtocolError, match="SHA-256"):
        chunks.join([parts[0], bad, parts[2]])
    with pytest.raises(ProtocolError, match="out of order"):
        chunks.join([parts[1], parts[0], parts[2]])
    with pytest.raises(ProtocolError, match="ended after 2 of 3"):
        chunks.join(parts[:2])
    big = chunks.make_chunk(0, 1, b"z" * (chunks.MAX_CHUNK_BYTES + 1))
    with pytest.raises(ProtocolError, match="more than"):
        chunks.verify(big)


def test_signatures_forgery_and_replay(tmp_path) -> None:  # type: ignore[no-untyped-def]
    me = Identity.load_or_create(tmp_path / "me.pem")
    assert (tmp_path / "me.pem").stat().st_mode & 0o777 == 0o600
    assert Identity.load_or_create(tmp_path / "me.pem").node_id == me.node_id
    other = Identity.generate()
    v = Verifier()
    req = node_pb2.PullTaskRequest(wait_seconds=3)
    me.sign("PullTask", req)
    v.verify("PullTask", req, me.public_key)
    with pytest.raises(AuthError, match="replayed"):
        v.verify("PullTask", req, me.public_key)
    req2 = node_pb2.PullTaskRequest(wait_seconds=3)
    me.sign("PullTask", req2)
    req2.wait_seconds = 4  # altered after signing
    with pytest.raises(AuthError, match="does not verify"):
        v.verify("PullTask", req2, me.public_key)
    req3 = node_pb2.PullTaskRequest()
    other.sign("PullTask", req3)
    req3.auth.node_id = me.node_id  # impersonation
    with pytest.raises(AuthError):
        v.verify("PullTask", req3, me.public_key)
    req4 = node_pb2.PullTaskRequest()
    me.sign("PullTask", req4)
    with pytest.raises(AuthError):  # signed for another method
        v.verify("DeclineTask", req4, me.public_key)
    req5 = node_pb2.PullTaskRequest()
    me.sign("PullTask", req5)
    req5.auth.timestamp_ms = int(time.time() * 1000) - 3_600_000
    with pytest.raises(AuthError, match="off"):
        v.verify("PullTask", req5, me.public_key)


def test_an_update_chunk_is_signed_by_its_digest_which_binds_its_data() -> None:
    me, v = Identity.generate(), Verifier()
    msg = node_pb2.UpdateChunk(task_id="t", fingerprint="f", chunk=chunks.make_chunk(0, 1, b"x" * 4096))
    me.sign("UploadUpdate", msg)
    assert msg.chunk.data == b"x" * 4096  # signing leaves the message whole
    v.verify("UploadUpdate", node_pb2.UpdateChunk.FromString(msg.SerializeToString()), me.public_key)
    assert msg.chunk.data == b"x" * 4096
    forged = node_pb2.UpdateChunk.FromString(msg.SerializeToString())
    forged.chunk.data = b"y" * 4096  # other data under the signed digest: the signature holds, the digest does not
    v2 = Verifier()
    v2.verify("UploadUpdate", forged, me.public_key)
    with pytest.raises(ProtocolError, match="SHA-256"):
        chunks.verify(forged.chunk)
    redigested = node_pb2.UpdateChunk.FromString(msg.SerializeToString())
    redigested.chunk.CopyFrom(chunks.make_chunk(0, 1, b"y" * 4096))  # a new digest to match: the signature fails
    with pytest.raises(AuthError, match="does not verify"):
        Verifier().verify("UploadUpdate", redigested, me.public_key)


def test_state_bytes_are_checked_against_the_architecture() -> None:
    ref = {"w": torch.zeros(3, 2), "b": torch.zeros(2)}
    good = tensors.state_to_bytes({"w": torch.ones(3, 2), "b": torch.ones(2)})
    assert tensors.state_from_bytes(good, ref)["w"].sum() == 6
    with pytest.raises(ProtocolError, match=r"shape|needs"):
        tensors.state_from_bytes(tensors.state_to_bytes({"w": torch.ones(2, 3), "b": torch.ones(2)}), ref)
    with pytest.raises(ProtocolError, match="NaN"):
        tensors.state_from_bytes(tensors.state_to_bytes({"w": torch.full((3, 2), float("nan")), "b": torch.ones(2)}), ref)
    with pytest.raises(ProtocolError, match="missing"):
        tensors.state_from_bytes(tensors.state_to_bytes({"w": torch.ones(3, 2)}), ref)
    with pytest.raises(ProtocolError, match="safetensors"):
        tensors.state_from_bytes(b"\x80\x04\x95 definitely a pickle", ref)


def test_flatten_unflatten_round_trip() -> None:
    ref = {"a": torch.randn(4, 3), "n": torch.tensor(7), "b": torch.randn(5)}
    flat = tensors.flatten(ref)
    assert flat.shape == (17,)
    back = tensors.unflatten(flat, ref)
    assert torch.equal(back["a"], ref["a"]) and torch.equal(back["n"], ref["n"])
    with pytest.raises(ProtocolError):
        tensors.unflatten(np.zeros(16), ref)


def test_a_chunk_request_is_signed_over_the_same_bytes_whichever_way_they_are_built() -> None:
    from fedgpu.wire.auth import _body_without_auth, _chunk_body

    data = b"d" * 5000
    full = node_pb2.UpdateChunk(task_id="t", fingerprint="f", chunk=chunks.make_chunk(2, 3, data), train_seconds=1.5, epsilon=0.25, encrypt_seconds=0.5)
    for msg in (full, node_pb2.UpdateChunk(task_id="t"), node_pb2.UpdateChunk(chunk=chunks.make_chunk(0, 1, b""))):
        Identity.generate().sign("UploadUpdate", msg)
        fast = _chunk_body(msg)
        assert fast is not None and fast == _body_without_auth(msg) and data not in fast
    assert full.chunk.data == data  # neither way changes the message
    # A field this aggregator does not know (a newer node's): the exact way, which keeps it under the signature.
    me = Identity.generate()
    newer = node_pb2.UpdateChunk.FromString(full.SerializeToString() + bytes([0x98, 0x06, 5]))  # field 99 = 5
    me.sign("UploadUpdate", newer)
    assert _chunk_body(newer) is None
    Verifier().verify("UploadUpdate", node_pb2.UpdateChunk.FromString(newer.SerializeToString()), me.public_key)
    dropped = node_pb2.UpdateChunk.FromString(newer.SerializeToString()[:-3])  # the unknown field cut off in transit
    with pytest.raises(AuthError, match="does not verify"):
        Verifier().verify("UploadUpdate", dropped, me.public_key)


def test_a_chunk_serialized_by_hand_parses_as_the_message_would() -> None:
    from fedgpu.proto.fedgpu.v1 import common_pb2, driver_pb2

    for size in (0, 1, 127, 128, 16_383, 16_384, chunks.MAX_CHUNK_BYTES):
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        made = chunks.serialize_with_chunk(driver_pb2.CohortSumChunk(cohort=3, members=["a", "b"]), 4, 9, data)
        expected = driver_pb2.CohortSumChunk(cohort=3, members=["a", "b"], chunk=chunks.make_chunk(4, 9, data))
        assert made == expected.SerializeToString()
        assert chunks.verify(driver_pb2.CohortSumChunk.FromString(made).chunk, 4, 9) == data
    model = common_pb2.ModelChunk.FromString(chunks.serialize_with_chunk(common_pb2.ModelChunk(version=7), 0, 1, b"abc"))
    assert model.version == 7 and chunks.verify(model.chunk) == b"abc"
    with pytest.raises(ValueError, match="unset"):
        chunks.serialize_with_chunk(common_pb2.ModelChunk(chunk=chunks.make_chunk(0, 1, b"")), 0, 1, b"abc")
