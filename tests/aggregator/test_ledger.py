"""The reward ledger in the aggregator's database: hash chain, signed heads, one payment per node and round."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update

from fedgpu.aggregator.ledger import round_rows
from fedgpu.aggregator.schema import ledger
from fedgpu.aggregator.store import Store
from fedgpu.errors import ProtocolError, StorageError
from fedgpu.rewards.chain import GENESIS, LedgerEntry, build_rows, public_key_bytes, sign_head, verify_ledger
from fedgpu.wire.records import JobSpec, RoundRecord, RoundResult


def fill(store: Store, key: Ed25519PrivateKey, rounds: int = 3) -> None:
    store.set_meta("signing_key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    store.create_job("job-1", "j", b"", "t")
    for rnd in range(1, rounds + 1):
        entries = [LedgerEntry("job-1", rnd, n, 0.1 * i, 10.0 * i, ("a", "b", "c"), "0" * 64) for i, n in enumerate("abc")]
        rows = build_rows(store.ledger_head() or GENESIS, entries)
        head = {"job_id": "job-1", "round": rnd, "head_hash": rows[-1].entry_hash, "signature": sign_head(key, "job-1", rnd, rows[-1].entry_hash).hex(), "evidence": "{}"}
        store.put_model("job-1", rnd, b"m", "0" * 64, None, [r.to_record() for r in rows], head)


def alter_a_row(store: Store) -> int:
    """Change the reward of the 5th row behind the chain's back; returns its id."""
    target = store.ledger_rows()[4]
    with store.engine.begin() as c:
        c.execute(update(ledger).where(ledger.c.id == target["id"]).values(reward=999.0))
    return int(target["id"])


def test_verify_passes_then_names_the_altered_row(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "a.db"))
    key = Ed25519PrivateKey.generate()
    fill(store, key)
    ok, msg = verify_ledger(store.ledger_rows(), store.heads(), public_key_bytes(key))
    assert ok, msg
    row_id = alter_a_row(store)
    ok, msg = verify_ledger(store.ledger_rows(), store.heads(), public_key_bytes(key))
    assert not ok and f"row {row_id} " in msg and "round 2" in msg


@pytest.mark.e2e
def test_the_verify_command_names_the_altered_row(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "a.db"))
    fill(store, Ed25519PrivateKey.generate())
    r = subprocess.run([sys.executable, "-m", "fedgpu", "rewards", "verify", "--db", str(tmp_path / "a.db")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("ledger OK"), r.stdout + r.stderr
    row_id = alter_a_row(store)
    r = subprocess.run([sys.executable, "-m", "fedgpu", "rewards", "verify", "--db", str(tmp_path / "a.db")], capture_output=True, text=True)
    assert r.returncode == 1 and f"row {row_id} " in r.stdout


def test_a_signature_from_another_key_fails(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "a.db"))
    fill(store, Ed25519PrivateKey.generate())
    other = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ok, msg = verify_ledger(store.ledger_rows(), store.heads(), other)
    assert not ok and "signature" in msg


def test_ledger_refuses_a_second_payment(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "a.db"))
    key = Ed25519PrivateKey.generate()
    fill(store, key, rounds=1)
    again = build_rows(store.ledger_head(), [LedgerEntry("job-1", 1, "a", 0.1, 10.0, ("a",), "0" * 64)])
    with pytest.raises(StorageError, match="duplicate payment"):
        store.put_model("job-1", 2, b"m", "0" * 64, None, [again[0].to_record()], None)
    assert len(store.ledger_rows()) == 3  # the whole transaction rolled back
    assert store.job("job-1").model_version == 1


def test_an_unearned_pool_carries_over_but_the_job_never_pays_more_than_its_pools(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "a.db"))
    key = Ed25519PrivateKey.generate()
    fill(store, key, rounds=2)  # each round paid 0 + 10 + 20 = 30 of a pool of 100: 140 carried
    spec = JobSpec(reward_pool=100.0)
    record = RoundRecord(("a", "b", "c"), (("a", "b", "c"),), {}, 0, 0, {}, {}, {}, {}, 0.0)
    ok = RoundResult(rewards={"a": 200.0, "b": 40.0, "c": 0.0})  # 60 + 240 = 300 = 3 pools
    rows, head = round_rows(store, key, spec, "job-1", 3, record, ok)
    assert len(rows) == 3 and head is not None
    too_much = RoundResult(rewards={"a": 200.0, "b": 41.0, "c": 0.0})
    with pytest.raises(ProtocolError, match="more than 3 rounds' pools"):
        round_rows(store, key, spec, "job-1", 3, record, too_much)


def test_the_last_round_of_a_job_may_pay_earlier_participants_only(tmp_path: Path) -> None:
    """Held pay (public data) or the settled unearned pool (any job): only at the last round, only to nodes that took part."""
    from fedgpu.wire.records import PublicDataPlan

    store = Store(str(tmp_path / "a.db"))
    key = Ed25519PrivateKey.generate()
    store.create_job("job-1", "j", b"", "t")
    for rnd, members in ((1, ("a", "q")), (2, ("a", "b"))):
        store.save_round("job-1", rnd, 1, RoundRecord(members, tuple((m,) for m in members), {}, 0, 0, {}, {}, {}, {}, 0.0))
    spec = JobSpec(reward_pool=100.0, rounds=3, public_data=PublicDataPlan(replication=0.1))
    record = RoundRecord(("a", "b"), (("a",), ("b",)), {}, 0, 0, {}, {}, {}, {}, 0.0)
    rows, _ = round_rows(store, key, spec, "job-1", 3, record, RoundResult(rewards={"a": 1.0, "b": 1.0, "q": 5.0}, released=("q",)))
    assert [(r.node_id, r.reward, r.cohort) for r in rows] == [("a", 1.0, ("a",)), ("b", 1.0, ("b",)), ("q", 5.0, ())]
    with pytest.raises(ProtocolError, match="no earlier round"):
        round_rows(store, key, spec, "job-1", 3, record, RoundResult(rewards={"z": 1.0}, released=("z",)))
    with pytest.raises(ProtocolError, match="only a job's last round"):
        round_rows(store, key, JobSpec(reward_pool=100.0, rounds=4, public_data=spec.public_data), "job-1", 3, record, RoundResult(rewards={"q": 1.0}, released=("q",)))
    private = JobSpec(reward_pool=100.0, rounds=3)  # a private-data job's settlement at its end
    rows, _ = round_rows(store, key, private, "job-1", 3, record, RoundResult(rewards={"a": 1.0, "q": 5.0}, released=("q",)))
    assert [(r.node_id, r.reward) for r in rows] == [("a", 1.0), ("b", 0.0), ("q", 5.0)]
    with pytest.raises(ProtocolError, match="not in round 3"):
        round_rows(store, key, spec, "job-1", 3, record, RoundResult(rewards={"q": 1.0}))  # not listed as released
