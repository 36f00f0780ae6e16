"""The store's contract: one suite, run on every backend (Flower's linkstate_test.py does the same).

:class:`StoreContract` says what any backend must do; a subclass per backend supplies ``database_url``,
a fresh, empty database for each test. SQLite always runs. PostgreSQL runs when
``FEDGPU_TEST_POSTGRES_URL`` is set (tests/conftest.py's ``postgres_url``: a new schema per test), and
in CI, where a missing URL fails instead of skipping.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import MetaData, Table, create_engine, insert, inspect, make_url, text

from fedgpu.aggregator.database import BASELINE_REVISION, MIGRATIONS, hide_password_in_logs, normalise_url, redact_url
from fedgpu.aggregator.schema import metadata
from fedgpu.aggregator.store import Store
from fedgpu.cli.rewards import verify
from fedgpu.errors import NotFoundError, StorageError
from fedgpu.rewards.chain import GENESIS, LedgerEntry, LedgerRow, build_rows, public_key_bytes, sign_head, verify_ledger
from fedgpu.wire.records import ReplicaDispute, RoundRecord

SCRIPT = ScriptDirectory(str(MIGRATIONS))
HEAD = SCRIPT.get_current_head()
EARLIER = [r.revision for r in SCRIPT.walk_revisions() if r.revision != HEAD]  # newest first
# Databases made before migrations, by metadata.create_all of the fedgpu of the day (no alembic_version):
# up to 2026-11-29 the baseline's tables; from 2026-12-01 also the index ledger_by_node (revision 0002's).
PRE_MIGRATION = {"before ledger_by_node": BASELINE_REVISION, "with ledger_by_node": "0002"}
AWKWARD_FLOATS = (1 / 3, 1e-300, 123456.789, -1e300, 2.0**-1074)  # the hash chain needs them back bit for bit


def record(cohorts: list[list[str]], attempt: int = 0) -> RoundRecord:
    members = tuple(sorted(m for c in cohorts for m in c))
    status = dict.fromkeys(members, "complete")
    return RoundRecord(members, tuple(tuple(c) for c in cohorts), status, 100, 200, dict.fromkeys(members, 50), dict.fromkeys(members, 100), dict.fromkeys(members, 0.5), {}, 1.5, attempt, f"attempt-{attempt}")


def entries(job_id: str, rnd: int, nodes: str = "abc") -> list[LedgerEntry]:
    return [LedgerEntry(job_id, rnd, f"n{n}", AWKWARD_FLOATS[i % len(AWKWARD_FLOATS)], 10.0 * i + 1 / 3, tuple(f"n{m}" for m in nodes), "d" * 64) for i, n in enumerate(nodes)]


def pay(store: Store, key: Ed25519PrivateKey, job_id: str, rnd: int, nodes: str = "abc") -> list[LedgerRow]:
    """Close round ``rnd`` the way the aggregator does: model, result, ledger rows and signed head in one put_model."""
    rows = build_rows(store.ledger_head() or GENESIS, entries(job_id, rnd, nodes))
    head = {"job_id": job_id, "round": rnd, "head_hash": rows[-1].entry_hash, "signature": sign_head(key, job_id, rnd, rows[-1].entry_hash).hex(), "evidence": "{}"}
    store.put_model(job_id, rnd, f"model {rnd}".encode(), f"{rnd:064d}", {"accuracy": 0.5}, [r.to_record() for r in rows], head)
    return rows


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def migrate(url: str, revision: str, *, forget_revisions: bool = False) -> None:
    """Bring an empty database to ``revision`` with Alembic itself; ``forget_revisions`` drops alembic_version,
    leaving what a fedgpu from before migrations made."""
    engine = create_engine(normalise_url(url))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        if forget_revisions:
            conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()


def fill_old_database(url: str, key: Ed25519PrivateKey) -> list[dict[str, object]]:
    """A job, two paid rounds and the signing key, written with the tables as the database has them
    (reflected, not store.metadata: an old database lacks what later revisions add); returns the ledger rows."""
    engine = create_engine(normalise_url(url))
    old = MetaData()
    old.reflect(engine)
    rows: list[LedgerRow] = []
    heads = []
    for rnd in (1, 2):
        new = build_rows(rows[-1].entry_hash if rows else GENESIS, entries("job-old", rnd))
        rows += new
        heads.append({"job_id": "job-old", "round": rnd, "head_hash": new[-1].entry_hash, "signature": sign_head(key, "job-old", rnd, new[-1].entry_hash).hex(), "evidence": "{}"})
    with engine.begin() as c:
        c.execute(insert(old.tables["meta"]).values(key="signing_key", value=pem(key)))
        c.execute(insert(old.tables["jobs"]).values(id="job-old", name="old", spec=b"\x00spec", token_hash="t" * 64, state="done", round=2, model_version=2, message="", created_at=1.0))
        c.execute(insert(old.tables["models"]).values(job_id="job-old", version=2, data=b"model 2", sha256="2" * 64))
        for row in rows:
            c.execute(insert(old.tables["reward_ledger"]).values(**row.to_record()))
        for head in heads:
            c.execute(insert(old.tables["ledger_heads"]).values(**head))
    with engine.connect() as c:
        stored = [dict(r) for r in c.execute(Table("reward_ledger", MetaData(), autoload_with=c).select().order_by(text("id"))).mappings()]
    engine.dispose()
    return stored


class StoreContract:
    """What every backend must do. Subclasses define the fixture ``database_url``: a fresh, empty database."""

    url: str

    @pytest.fixture(autouse=True)
    def _database(self, database_url: str) -> Iterator[None]:
        self.url = database_url
        self.opened: list[Store] = []
        yield
        for store in self.opened:
            store.engine.dispose()

    def make_store(self) -> Store:
        """A Store on this test's database; a second call is a reopen of the same database (a restart)."""
        store = Store(self.url)
        self.opened.append(store)
        return store

    # --- schema and migrations -------------------------------------------------------------------
    def test_the_migrations_build_exactly_the_schema_store_py_declares(self) -> None:
        store = self.make_store()
        with store.engine.connect() as c:
            assert MigrationContext.configure(c).get_current_heads() == (HEAD,)
            diff = compare_metadata(MigrationContext.configure(c), metadata)
        assert diff == [], f"store.metadata and migrations/versions disagree; add a revision (fedgpu/aggregator/migrations/env.py says how): {diff}"

    def test_everything_survives_a_reopen(self) -> None:
        store = self.make_store()
        key = Ed25519PrivateKey.generate()
        store.set_meta("signing_key", pem(key))
        store.upsert_node("na", b"pk-a", "a", {"models": ["m"]})
        store.create_job("job-1", "j", b"spec", "t" * 64)
        store.put_model("job-1", 0, b"model 0", "0" * 64, None)
        store.save_round("job-1", 1, 1, record([["na", "nb", "nc"]]))
        pay(store, key, "job-1", 1)
        store.engine.dispose()
        again = self.make_store()
        assert again.get_meta("signing_key") == pem(key)
        assert [n["id"] for n in again.all_nodes()] == ["na"]
        assert again.job("job-1").model_version == 1
        assert again.round("job-1", 1) is not None
        ok, message = verify_ledger(again.ledger_rows(), again.heads(), public_key_bytes(key))
        assert ok, message

    @pytest.mark.parametrize("revision", EARLIER)
    def test_a_database_at_an_earlier_revision_is_upgraded_and_keeps_its_ledger(self, revision: str) -> None:
        migrate(self.url, revision)
        key = Ed25519PrivateKey.generate()
        before = fill_old_database(self.url, key)
        store = self.make_store()
        self._check_upgraded(store, key, before)

    @pytest.mark.parametrize("made_by", sorted(PRE_MIGRATION))
    def test_a_database_made_before_migrations_is_stamped_and_upgraded(self, made_by: str) -> None:
        migrate(self.url, PRE_MIGRATION[made_by], forget_revisions=True)
        key = Ed25519PrivateKey.generate()
        before = fill_old_database(self.url, key)
        store = self.make_store()
        self._check_upgraded(store, key, before)

    def _check_upgraded(self, store: Store, key: Ed25519PrivateKey, before: list[dict[str, object]]) -> None:
        with store.engine.connect() as c:
            assert MigrationContext.configure(c).get_current_heads() == (HEAD,)
            assert compare_metadata(MigrationContext.configure(c), metadata) == []
        assert "ledger_by_node" in {ix["name"] for ix in inspect(store.engine).get_indexes("reward_ledger")}
        assert store.ledger_rows() == before
        ok, message = verify(store, None)  # `fedgpu rewards verify`: with the key the database holds
        assert ok, message
        assert store.job("job-old").model_version == 2 and store.model("job-old", 2) == b"model 2"
        assert [r["id"] for r in store.receipts_for("na", 0)] == [r["id"] for r in before if r["node_id"] == "na"]
        pay(store, key, "job-old", 3)  # the upgraded ledger goes on: new ids after the old ones, the chain unbroken
        assert [r["id"] for r in store.ledger_rows()][: len(before)] == [r["id"] for r in before]
        assert verify_ledger(store.ledger_rows(), store.heads(), public_key_bytes(key))[0]

    def test_a_database_from_a_newer_fedgpu_is_refused(self) -> None:
        self.make_store().engine.dispose()
        engine = create_engine(normalise_url(self.url))
        with engine.begin() as c:
            c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        engine.dispose()
        with pytest.raises(StorageError, match=r"revision 9999.*newer fedgpu"):
            Store(self.url)

    def test_a_database_with_only_some_of_the_tables_is_refused(self) -> None:
        engine = create_engine(normalise_url(self.url))
        with engine.begin() as c:
            c.execute(text("CREATE TABLE nodes (id VARCHAR(32) PRIMARY KEY)"))
        engine.dispose()
        with pytest.raises(StorageError, match="not an aggregator's database"):
            Store(self.url)

    def test_processes_opening_an_empty_database_at_once_all_succeed(self, tmp_path: Path) -> None:
        """Three aggregators (or CLI commands) started together on a new database: one creates the schema."""
        go = tmp_path / "go"
        opener = (
            "import pathlib, sys, time\n"
            "from fedgpu.aggregator.store import Store\n"
            "pathlib.Path(sys.argv[1] + '.ready').touch()\n"
            "while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.001)\n"
            "Store(sys.argv[3])\n"
        )
        procs = [subprocess.Popen([sys.executable, "-c", opener, str(tmp_path / f"p{i}"), str(go), self.url], stderr=subprocess.PIPE) for i in range(3)]
        end = time.monotonic() + 60
        while not all((tmp_path / f"p{i}.ready").exists() for i in range(3)) and time.monotonic() < end:
            time.sleep(0.01)
        go.touch()
        errors = [p.communicate(timeout=60)[1].decode()[-2000:] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], errors
        with self.make_store().engine.connect() as c:
            assert MigrationContext.configure(c).get_current_heads() == (HEAD,)

    # --- meta ------------------------------------------------------------------------------------
    def test_meta_holds_bytes_by_key_and_overwrites(self) -> None:
        store = self.make_store()
        assert store.get_meta("signing_key") is None
        store.set_meta("signing_key", b"\x00\xffkey")
        store.set_meta("other", b"")
        store.set_meta("signing_key", b"second")
        assert store.get_meta("signing_key") == b"second" and store.get_meta("other") == b""

    # --- nodes -----------------------------------------------------------------------------------
    def test_a_node_registers_once_and_later_registrations_update_its_name_and_capabilities(self) -> None:
        store = self.make_store()
        store.upsert_node("n1", b"\x00key-1", "first", {"models": ["a"], "device": "cpu"})
        (node,) = store.all_nodes()
        assert node["public_key"] == b"\x00key-1" and isinstance(node["public_key"], bytes)
        assert node["capabilities"] == {"models": ["a"], "device": "cpu"} and node["registered_at"] == node["last_seen"]
        store.upsert_node("n1", b"another key", "renamed", {"models": ["b"]})
        store.upsert_node("n2", b"key-2", "second", {})
        by_id = {n["id"]: n for n in store.all_nodes()}
        assert set(by_id) == {"n1", "n2"}
        n1 = by_id["n1"]
        assert (n1["name"], n1["capabilities"], n1["public_key"]) == ("renamed", {"models": ["b"]}, b"\x00key-1")  # the key never changes
        assert n1["registered_at"] == node["registered_at"] and n1["last_seen"] >= node["last_seen"]

    # --- jobs ------------------------------------------------------------------------------------
    def test_a_job_starts_waiting_for_its_model_and_moves_through_its_states(self) -> None:
        store = self.make_store()
        spec = bytes(range(256))  # protobuf bytes: any byte, NUL included
        store.create_job("job-1", "first", spec, "h" * 64)
        store.create_job("job-2", "second", b"", "g" * 64)
        job = store.job("job-1")
        assert (job.name, job.spec, job.token_hash, job.state, job.round, job.model_version, job.message) == ("first", spec, "h" * 64, "waiting_model", 0, -1, "")
        store.set_job("job-1", state="cancelled", message="by its driver")
        assert (store.job("job-1").state, store.job("job-1").message) == ("cancelled", "by its driver")
        assert [j.id for j in store.all_jobs()] == ["job-1", "job-2"]  # in order of creation
        assert [j.id for j in store.jobs_in_state("waiting_model", "running")] == ["job-2"]
        assert store.jobs_in_state("done") == []
        with pytest.raises(NotFoundError):
            store.job("job-3")

    def test_a_job_id_is_taken_once(self) -> None:
        store = self.make_store()
        store.create_job("job-1", "first", b"", "h" * 64)
        with pytest.raises(StorageError):
            store.create_job("job-1", "again", b"", "h" * 64)
        assert store.job("job-1").name == "first"

    # --- models ----------------------------------------------------------------------------------
    def test_models_keep_the_initial_version_and_the_latest_two_with_their_hashes(self) -> None:
        store = self.make_store()
        store.create_job("job-1", "j", b"", "t")
        store.put_model("job-1", 0, b"\x00model 0", "a" * 64, None)
        job = store.job("job-1")
        assert (job.state, job.model_version) == ("running", 0)
        for v in range(1, 5):
            store.put_model("job-1", v, f"model {v}".encode(), f"{v}" * 64, None)
        assert store.job("job-1").model_version == 4
        assert store.model("job-1", 0) == b"\x00model 0" and store.model_sha256("job-1", 0) == "a" * 64
        assert [store.model_sha256("job-1", v) for v in range(1, 5)] == [None, None, "3" * 64, "4" * 64]
        with pytest.raises(NotFoundError):
            store.model("job-1", 2)
        store.put_model("job-1", 4, b"model 4 again", "5" * 64, None)  # the same version replaces
        assert store.model("job-1", 4) == b"model 4 again" and store.model_sha256("job-1", 4) == "5" * 64

    # --- rounds and sums -------------------------------------------------------------------------
    def test_a_saved_round_is_ready_and_publishing_its_model_closes_it(self) -> None:
        store = self.make_store()
        store.create_job("job-1", "j", b"", "t")
        rec = record([["na", "nb"], ["nc", "nd"]])
        store.save_round("job-1", 1, 2, rec)
        rnd = store.round("job-1", 1)
        assert rnd is not None
        assert (rnd["state"], rnd["attempts"], rnd["record"], rnd["result"]) == ("ready", 2, rec, {})
        assert store.job("job-1").round == 1
        assert store.round("job-1", 2) is None
        store.put_model("job-1", 1, b"model 1", "1" * 64, {"accuracy": 0.9})
        closed = store.round("job-1", 1)
        assert closed is not None and (closed["state"], closed["result"]) == ("done", {"accuracy": 0.9})
        store.save_round("job-1", 2, 1, record([["na"]]))
        assert [r["round"] for r in store.rounds_of("job-1")] == [1, 2]

    def test_saving_a_round_again_replaces_its_record(self) -> None:
        store = self.make_store()
        store.create_job("job-1", "j", b"", "t")
        store.save_round("job-1", 1, 1, record([["na"], ["nb"]]))
        store.save_round("job-1", 1, 2, record([["na", "nb"]], attempt=1))
        rnd = store.round("job-1", 1)
        assert rnd is not None and rnd["attempts"] == 2 and rnd["record"].attempt == 1 and rnd["record"].cohorts == (("na", "nb"),)

    # --- rewards ledger --------------------------------------------------------------------------
    def test_a_round_closes_with_its_ledger_rows_and_signed_head_and_the_chain_verifies(self) -> None:
        store = self.make_store()
        key = Ed25519PrivateKey.generate()
        store.set_meta("signing_key", pem(key))
        store.create_job("job-1", "j", b"", "t")
        store.create_job("job-2", "k", b"", "t")
        assert store.ledger_head() is None and store.paid("job-1") == 0.0
        for rnd in (1, 2):
            store.save_round("job-1", rnd, 1, record([["na", "nb", "nc"]]))
            pay(store, key, "job-1", rnd)
        last = pay(store, key, "job-2", 1, "abcde")
        rows = store.ledger_rows()
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows) and len({r["id"] for r in rows}) == 11
        assert [(r["job_id"], r["round"], r["node_id"]) for r in rows][-5:] == [("job-2", 1, f"n{n}") for n in "abcde"]
        assert [repr(r["value"]) for r in store.ledger_rows("job-2")] == [repr(v) for v in AWKWARD_FLOATS]
        assert store.ledger_head() == last[-1].entry_hash
        assert store.paid("job-1") == pytest.approx(2 * sum(10.0 * i + 1 / 3 for i in range(3)))
        assert [(h["job_id"], h["round"]) for h in store.heads()] == [("job-1", 1), ("job-1", 2), ("job-2", 1)]
        assert [h["round"] for h in store.heads("job-1")] == [1, 2]
        assert verify_ledger(store.ledger_rows(), store.heads(), public_key_bytes(key))[0]
        assert store.round("job-1", 2)["state"] == "done"  # type: ignore[index]

    def test_a_ledger_row_worth_negative_zero_still_verifies(self) -> None:
        store = self.make_store()
        key = Ed25519PrivateKey.generate()
        store.create_job("job-1", "j", b"", "t")
        rows = build_rows(GENESIS, [LedgerEntry("job-1", 1, "na", -0.0, 0.0 * -1, ("na",), "d" * 64)])
        head = {"job_id": "job-1", "round": 1, "head_hash": rows[-1].entry_hash, "signature": sign_head(key, "job-1", 1, rows[-1].entry_hash).hex(), "evidence": "{}"}
        store.put_model("job-1", 1, b"m", "1" * 64, None, [r.to_record() for r in rows], head)
        ok, message = verify_ledger(store.ledger_rows(), store.heads(), public_key_bytes(key))
        assert ok, message

    def test_a_second_payment_for_a_node_and_round_is_refused_and_nothing_of_its_round_is_written(self) -> None:
        store = self.make_store()
        key = Ed25519PrivateKey.generate()
        store.create_job("job-1", "j", b"", "t")
        store.save_round("job-1", 1, 1, record([["na", "nb", "nc"]]))
        pay(store, key, "job-1", 1)
        store.save_round("job-1", 2, 1, record([["na"]]))
        again = build_rows(store.ledger_head() or GENESIS, [LedgerEntry("job-1", 1, "na", 0.1, 10.0, ("na",), "d" * 64)])
        with pytest.raises(StorageError, match="duplicate payment"):
            store.put_model("job-1", 2, b"model 2", "2" * 64, {"accuracy": 1.0}, [again[0].to_record()], None)
        assert len(store.ledger_rows()) == 3 and store.paid("job-1") == pytest.approx(sum(10.0 * i + 1 / 3 for i in range(3)))
        assert store.job("job-1").model_version == 1 and store.model_sha256("job-1", 2) is None
        rnd = store.round("job-1", 2)
        assert rnd is not None and rnd["state"] == "ready"  # its sums still fetchable
        with pytest.raises(StorageError):  # a second head for the round is refused the same way
            store.put_model("job-1", 2, b"model 2", "2" * 64, None, None, {"job_id": "job-1", "round": 1, "head_hash": "x", "signature": "y", "evidence": "{}"})

    def test_receipts_for_pages_through_a_nodes_rows_by_id_cursor(self) -> None:
        store = self.make_store()
        key = Ed25519PrivateKey.generate()
        store.create_job("job-1", "j", b"", "t")
        store.create_job("job-2", "k", b"", "t")
        for rnd in (1, 2, 3):
            pay(store, key, "job-1", rnd)
            pay(store, key, "job-2", rnd, "ba")
        mine = [r for r in store.ledger_rows() if r["node_id"] == "na"]
        assert len(mine) == 6
        page = store.receipts_for("na", 0, limit=4)
        assert [r["id"] for r in page] == [r["id"] for r in mine[:4]]
        rest = store.receipts_for("na", page[-1]["id"], limit=4)
        assert [r["id"] for r in rest] == [r["id"] for r in mine[4:]]
        assert store.receipts_for("na", rest[-1]["id"]) == []
        heads = {(h["job_id"], h["round"]): h for h in store.heads()}
        for r, row in zip(page + rest, mine, strict=True):
            assert (r["job_id"], r["round"], r["node_id"], r["reward"], r["entry_hash"]) == (row["job_id"], row["round"], "na", row["reward"], row["entry_hash"])
            assert (r["head_hash"], r["signature"]) == (heads[r["job_id"], r["round"]]["head_hash"], heads[r["job_id"], r["round"]]["signature"])
        assert store.receipts_for("nobody", 0) == []

    # --- measured capacity -------------------------------------------------------------------------
    def test_capacity_records_add_up_per_node_survive_a_reopen_and_sign_like_a_receipt(self) -> None:
        from fedgpu.aggregator.capacity import CapacityBook
        from fedgpu.capacity import SignedRecord, sign_record

        store = self.make_store()
        store.upsert_node("na", b"pk-a", "a", {"models": ["m"], "device": "cuda:H100 (claimed)"})
        store.upsert_node("nb", b"pk-b", "b", {"models": ["m"]})
        store.add_capacity("na", tasks=1, samples=500, compute_seconds=2.0, turnaround_seconds=2.5, bytes_up=1000, upload_seconds=0.5)
        store.add_capacity("na", tasks=1, samples=500, compute_seconds=3.0, turnaround_seconds=3.5, bytes_up=3000, upload_seconds=0.5)
        store.add_capacity("na", misses=1)
        with pytest.raises(StorageError, match="unknown capacity"):
            store.add_capacity("na", gpus=8)
        store.engine.dispose()
        again = self.make_store()
        (row,) = again.capacity()
        assert (row["node_id"], row["tasks"], row["misses"], row["samples"], row["bytes_up"]) == ("na", 2, 1, 1000, 4000)
        assert row["compute_seconds"] == pytest.approx(5.0) and row["turnaround_seconds"] == pytest.approx(6.0)
        recs = {r.node_id: r for r in CapacityBook(again).records()}
        a = recs["na"]
        assert a.samples_per_second == pytest.approx(200.0) and a.mean_turnaround == pytest.approx(3.0) and a.upload_rate == pytest.approx(4000.0)
        assert a.device == "cuda:H100 (claimed)" and recs["nb"].tasks == 0 and recs["nb"].samples_per_second == 0.0
        signed = sign_record(Ed25519PrivateKey.generate(), a)
        back = SignedRecord.from_json(signed.to_json())
        assert back == signed and back.verify()
        forged = SignedRecord(dataclasses.replace(a, tasks=99), signed.signature, signed.aggregator_key)
        assert not forged.verify()

    def test_node_values_are_read_back_per_job_and_round(self) -> None:
        store = self.make_store()
        key = Ed25519PrivateKey.generate()
        store.create_job("job-1", "j", b"spec", "t" * 64)
        store.put_model("job-1", 0, b"model 0", "0" * 64, None)
        store.save_round("job-1", 1, 1, record([["na", "nb", "nc"]]))
        pay(store, key, "job-1", 1)
        values = store.node_values("job-1")
        assert sorted(values) == ["na", "nb", "nc"] and all(len(v) == 1 for v in values.values())
        assert store.node_values("job-2") == {}

    # --- verification state ----------------------------------------------------------------------
    def test_disputes_and_flagged_nodes_are_written_with_the_publish_and_survive_a_reopen(self) -> None:
        store = self.make_store()
        key = Ed25519PrivateKey.generate()
        store.create_job("job-1", "j", b"spec", "t" * 64)
        store.put_model("job-1", 0, b"model 0", "0" * 64, None)
        big_seed = 2**63 - 5  # task seeds are 63-bit
        d1 = ReplicaDispute(1, 3, big_seed, 0, ("na", "nb"), ("nc",))
        store.save_round("job-1", 1, 1, record([["na"], ["nb"], ["nc"]]))
        store.put_model("job-1", 1, b"model 1", "1" * 64, {"accuracy": 0.5}, disputes=[d1], flagged=["nx"])
        store.engine.dispose()
        again = self.make_store()
        assert again.disputes("job-1") == [d1] and again.flagged("job-1") == {"nx": 1}
        # the next publish replaces the disputes (each is re-run once) and adds to the flagged list
        again.save_round("job-1", 2, 1, record([["na"], ["nc"]]))
        again.put_model("job-1", 2, b"model 2", "2" * 64, {"accuracy": 0.6}, disputes=[], flagged=["nx", "nb"])
        assert again.disputes("job-1") == [] and again.flagged("job-1") == {"nx": 1, "nb": 2}
        assert again.disputes("job-2") == [] and again.flagged("job-2") == {}
        # a publish that fails writes none of it
        with pytest.raises(StorageError):
            rows = build_rows(again.ledger_head() or GENESIS, entries("job-1", 3))
            head = {"job_id": "job-1", "round": 3, "head_hash": rows[-1].entry_hash, "signature": sign_head(key, "job-1", 3, rows[-1].entry_hash).hex(), "evidence": "{}"}
            twice = [r.to_record() for r in rows] * 2  # a duplicate payment: refused by the database
            again.put_model("job-1", 3, b"model 3", "3" * 64, {"accuracy": 0.7}, twice, head, disputes=[d1], flagged=["nz"])
        assert again.disputes("job-1") == [] and again.flagged("job-1") == {"nx": 1, "nb": 2}

    # --- declines --------------------------------------------------------------------------------
    def test_declines_are_kept_per_job_and_node_the_latest_reason_winning(self) -> None:
        store = self.make_store()
        store.add_decline("job-1", "na", "budget", "epsilon cap reached")
        store.add_decline("job-1", "nb", "dataset", "no such dataset")
        store.add_decline("job-1", "na", "model", "unknown model")
        store.add_decline("job-2", "na", "budget", "later")
        assert store.declined("job-1") == {"na": "model: unknown model", "nb": "dataset: no such dataset"}
        assert store.declined("job-2") == {"na": "budget: later"} and store.declined("job-3") == {}


class TestSQLite(StoreContract):

    @pytest.fixture
    def database_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "aggregator.db")  # a bare path: what --db gets by default


class TestPostgreSQL(StoreContract):
    @pytest.fixture
    def database_url(self, postgres_url: str) -> str:
        return postgres_url


# --- credentials: the URL's password never in a log line or an error ---------------------------------
@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:secret@127.0.0.1:5432/fedgpu", "postgresql://u:***@127.0.0.1:5432/fedgpu"),
    ("postgresql+psycopg://u:s%40cret%25@db.example/fedgpu?sslmode=require", "postgresql+psycopg://u:***@db.example/fedgpu?sslmode=require"),
    ("postgresql://u:secret@127.0.0.1:port/fedgpu", "postgresql://u:***@127.0.0.1:port/fedgpu"),  # not parseable: masked all the same
    ("postgresql://u@127.0.0.1/fedgpu", "postgresql://u@127.0.0.1/fedgpu"),
    ("sqlite:////var/lib/fedgpu/aggregator.db", "sqlite:////var/lib/fedgpu/aggregator.db"),
])
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def _told(exc: BaseException) -> str:
    """Everything an error can show: its message and the whole traceback, chained exceptions included."""
    return "".join(traceback.format_exception(exc))


@pytest.mark.parametrize("url", [
    "postgresql://u:secret@127.0.0.1:1/fedgpu",  # nothing listens on port 1
    "postgresql://u:s%65cret@127.0.0.1:1/fedgpu",  # the password percent-encoded ("secret")
    "postgresql://u:secret@127.0.0.1:port/fedgpu",  # not a URL SQLAlchemy parses
    "postgresql+nodriver://u:secret@127.0.0.1/fedgpu",  # a driver that is not installed
])
def test_an_error_opening_the_database_never_shows_the_password(url: str) -> None:
    with pytest.raises(StorageError) as err:
        Store(url)
    assert "secret" not in _told(err.value) and "u:***@127.0.0.1" in str(err.value)


def test_a_wrong_password_refused_by_a_real_server_is_not_echoed(postgres_url: str) -> None:
    wrong = make_url(postgres_url).set(password="not-the-secret-8d1f")
    with pytest.raises(StorageError, match="password authentication failed") as err:
        Store(wrong.render_as_string(hide_password=False))
    assert "not-the-secret-8d1f" not in _told(err.value)


def test_hide_password_in_logs_blanks_it_in_messages_and_tracebacks() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logging.getLogger().addHandler(handler)
    try:
        url = "postgresql://u:p%40ss-secret@127.0.0.1/fedgpu"
        hide_password_in_logs(url)
        log = logging.getLogger("fedgpu.test")
        log.warning("database %s", url)
        log.warning("decoded: %s", make_url(url).password)
        try:
            raise RuntimeError(f"could not reach {make_url(url).render_as_string(hide_password=False)}")
        except RuntimeError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    text_out = out.getvalue()
    assert "secret" not in text_out and text_out.count("***") == 3 and "RuntimeError" in text_out, text_out


def _aggregator(db: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    ready = tmp_path / "agg.addr"
    return subprocess.Popen(
        [sys.executable, "-m", "fedgpu", "-vv", "aggregator", "--listen", "127.0.0.1:0", "--db", db, "--spool", str(tmp_path / "spool"), "--ready-file", str(ready)],
        stdout=(tmp_path / "agg.log").open("wb"), stderr=subprocess.STDOUT,
    )


@pytest.mark.e2e
def test_the_aggregator_logs_its_database_without_the_password(postgres_url: str, tmp_path: Path) -> None:
    password = make_url(postgres_url).password
    if not password:
        pytest.skip("FEDGPU_TEST_POSTGRES_URL has no password to hide")
    proc = _aggregator(postgres_url, tmp_path)
    try:
        end = time.monotonic() + 60
        while not (tmp_path / "agg.addr").exists() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert (tmp_path / "agg.addr").exists(), (tmp_path / "agg.log").read_text()[-3000:]
    finally:
        proc.terminate()
        proc.wait(30)
    log = (tmp_path / "agg.log").read_text()
    assert str(password) not in log and f"database {redact_url(postgres_url)}" in log, log[-3000:]


@pytest.mark.e2e
def test_the_aggregator_refusing_its_database_does_not_print_the_password(tmp_path: Path) -> None:
    proc = _aggregator("postgresql://fedgpu:secret@127.0.0.1:1/fedgpu", tmp_path)
    assert proc.wait(60) == StorageError.exit_code
    out = (tmp_path / "agg.log").read_text()
    assert "secret" not in out and "fedgpu: error: cannot open database postgresql://fedgpu:***@127.0.0.1:1/fedgpu" in out, out
