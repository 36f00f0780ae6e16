"""Rotating a node's identity key over real gRPC: signed by both keys, the old one refused from then on,
the chain kept across a restart, admitted through an allow-list, and balances that follow the chain."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_admission import Client, refused  # type: ignore[import-not-found]

from fedgpu.aggregator.admission import AdmissionMode, AdmissionPolicy
from fedgpu.aggregator.local import LocalAggregator
from fedgpu.aggregator.store import Store
from fedgpu.config import EncryptionConfig, JobConfig, TrainingConfig
from fedgpu.datasets import public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.node.agent import NodeAgent, NodeConfig
from fedgpu.proto.fedgpu.v1 import node_pb2
from fedgpu.wire.auth import Identity


def rotate(c: Client, new, signer=None) -> node_pb2.RotateKeyReply:  # type: ignore[no-untyped-def]
    req = node_pb2.RotateKeyRequest(new_public_key=new.public_key, new_key_signature=(signer or new).accept_rotation(c.id.public_key))
    c.id.sign("RotateKey", req)
    return c.stub.RotateKey(req, timeout=10)


def test_a_rotated_key_is_refused_and_its_successor_takes_over(tmp_path: Path) -> None:
    db, spool = str(tmp_path / "agg.db"), tmp_path / "spool"
    with LocalAggregator(db, spool) as a:
        old = Client(a.address)
        old.register()
        old.pull()
        new_id = Identity.generate()
        details = refused(lambda: rotate(old, new_id, signer=Identity.generate()), grpc.StatusCode.UNAUTHENTICATED)
        assert "new_key_signature does not verify" in details  # nobody rotates onto a key they do not hold
        taken = Client(a.address)
        taken.register()
        taken.pull()
        assert "registered already" in refused(lambda: rotate(old, taken.id), grpc.StatusCode.FAILED_PRECONDITION)
        reply = rotate(old, new_id)
        assert (reply.node_id, reply.operator_id) == (new_id.node_id, old.id.node_id)
        assert rotate(old, new_id) == reply  # asked again after a lost reply: the same answer
        assert f"rotated to node {new_id.node_id}" in refused(old.heartbeat, grpc.StatusCode.UNAUTHENTICATED)
        assert "rotated to" in refused(old.register, grpc.StatusCode.UNAUTHENTICATED)
        new = Client(a.address, new_id)
        new.heartbeat()  # known without registering: it inherited the old key's row
        later = Identity.generate()
        assert rotate(new, later).operator_id == old.id.node_id  # a chain of three keys, one operator
        for c in (old, taken, new):
            c.close()
    with LocalAggregator(db, spool) as a:  # the chain survives a restart
        assert "rotated to" in refused(Client(a.address, old.id).heartbeat, grpc.StatusCode.UNAUTHENTICATED)
        assert "rotated to" in refused(Client(a.address, new_id).heartbeat, grpc.StatusCode.UNAUTHENTICATED)
        Client(a.address, later).heartbeat()
    store = Store(db)
    try:
        assert store.operators() == {old.id.node_id: old.id.node_id, new_id.node_id: old.id.node_id, later.node_id: old.id.node_id}
    finally:
        store.engine.dispose()


def test_an_allowed_key_rotates_onto_an_unlisted_one(tmp_path: Path) -> None:
    first, second = Identity.generate(), Identity.generate()
    allow = tmp_path / "nodes.allow"
    allow.write_text(first.public_key.hex() + "\n")
    with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool", admission=AdmissionPolicy(mode=AdmissionMode.ALLOWLIST, allow_file=allow)) as a:
        refused(Client(a.address, second).register, grpc.StatusCode.PERMISSION_DENIED)
        c = Client(a.address, first)
        c.register()
        c.pull()
        rotate(c, second)
        Client(a.address, second).register()  # admitted as the successor of a listed key


def test_the_agent_rotates_its_key_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    train, _ = public_split("digits", seed=0)
    save_npz(tmp_path / "d.npz", train.subset(np.arange(50)))
    with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool") as a:
        cfg = NodeConfig(aggregator=a.address, data={"digits": tmp_path / "d.npz"}, identity_path=tmp_path / "home" / "identity.pem", poll_seconds=1)
        agent = NodeAgent(cfg)
        agent.register()
        old = agent.node_id
        new, operator = agent.rotate_key()
        agent.channel.close()
    home = tmp_path / "home"
    assert (new, operator) == (NodeAgent(cfg).node_id, old)  # identity.pem is the new key now
    backup = home / f"identity.{old}.pem"
    assert backup.exists() and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert not (home / "identity.pem.new").exists()
    assert (home / "identity.chain").read_text().split()[0] == old


@pytest.mark.slow
def test_balances_follow_the_chain_of_keys(tmp_path: Path) -> None:
    """Rounds paid to a node's first key and to the key it rotated to are one operator's balance."""
    train, test = public_split("digits", seed=0)
    save_npz(tmp_path / "d.npz", train.subset(np.arange(400)))
    job = JobConfig(
        name="rot", model="digits_cnn", dataset="digits", rounds=1, nodes_per_round=1, min_nodes=1, deadline_seconds=20,
        training=TrainingConfig(epochs=1, batch_size=16, lr=0.05), encryption=EncryptionConfig("none"),
    ).validate()
    db = tmp_path / "agg.db"
    with LocalAggregator(str(db), tmp_path / "spool") as a:
        cfg = NodeConfig(aggregator=a.address, data={"digits": tmp_path / "d.npz"}, identity_path=tmp_path / "home" / "identity.pem", poll_seconds=1)
        ids = []
        for i in range(2):
            agent = NodeAgent(cfg)
            th = threading.Thread(target=agent.run, kwargs={"max_tasks": 1}, daemon=True)
            th.start()
            JobDriver(a.address, job, tmp_path / f"out{i}", validation=test).run()
            th.join(30)
            agent.stop()
            ids.append(agent.node_id)
            if i == 0:
                agent.rotate_key()
            agent.channel.close()
    assert ids[0] != ids[1]
    out = subprocess.run([sys.executable, "-m", "fedgpu", "rewards", "--db", str(db)], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "operator", "node", "now"]
    assert len(lines) == 2, out  # one operator, not two nodes
    fields = lines[1].split()
    at = fields.index(ids[0])  # after the node's name
    operator, now, rounds = fields[at : at + 3]
    assert (operator, now, rounds) == (ids[0], ids[1], "2")
