"""The aggregator's database: nodes, jobs, models, rounds, rewards (cohort sums are files: fedgpu.aggregator.released).

SQLAlchemy Core over any URL: a SQLite file by default (WAL, synchronous=FULL), or PostgreSQL
(``pip install "fedgpu[postgres]"``); tests/aggregator/test_store.py runs one contract suite on both.
Everything a restart needs lives here but the released sums, which a ready round's row names by its
attempt id; an open round's in-flight uploads do not: a round attempt
the process did not close is discarded on restart and the round is opened again (docs/protocol.md).

The tables are in :mod:`fedgpu.aggregator.schema` and ship as Alembic revisions in
``migrations/versions/``; opening a Store runs ``upgrade head`` (:func:`fedgpu.aggregator.database.upgrade_schema`),
so an existing ledger survives an upgrade of fedgpu.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from alembic.util.exc import CommandError
from sqlalchemy import (
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError

from fedgpu.aggregator.database import normalise_url, redact_url, sqlite_pragmas, upgrade_schema, without_password
from fedgpu.aggregator.schema import (
    declines,
    flagged_nodes,
    jobs,
    key_rotations,
    ledger,
    ledger_heads,
    meta_kv,
    models,
    node_capacity,
    nodes,
    replica_disputes,
    rounds,
)
from fedgpu.errors import NotFoundError, StorageError
from fedgpu.faults import crash_point
from fedgpu.wire.records import ReplicaDispute, RoundRecord

_T = TypeVar("_T")


@dataclass(frozen=True)
class JobRow:
    id: str
    name: str
    spec: bytes
    token_hash: str
    state: str
    round: int
    model_version: int
    message: str



class Store:
    """The aggregator's database at ``url`` (a SQLAlchemy URL or a SQLite file path), schema upgraded on open.

    ``self.url`` is the URL without its password: what logs and errors show.
    """

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(normalise_url(url))
        except (ArgumentError, ValueError):  # their messages may quote the URL, password and all
            raise StorageError(f"--db {redact_url(url)} is neither a database URL (postgresql://user:password@host:5432/db) nor a SQLite file path") from None
        shown = self.url = redact_url(parsed)  # for logs and errors: never the password
        try:
            # pool_pre_ping: a server that restarted or dropped an idle connection costs a reconnect, not an error.
            self.engine: Engine = create_engine(parsed, pool_pre_ping=parsed.get_backend_name() != "sqlite")
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", sqlite_pragmas)
            upgrade_schema(self.engine)
        except ImportError as exc:  # the URL's driver is not installed
            raise StorageError(f"cannot open database {shown}: its driver is not installed ({exc}); for PostgreSQL: pip install \"fedgpu[postgres]\"") from exc
        except (SQLAlchemyError, CommandError) as exc:
            message = without_password(str(exc), parsed)
            # A driver's message that quoted the password is not chained either: a traceback would show it.
            raise StorageError(f"cannot open database {shown}: {message}") from (exc if message == str(exc) else None)

    def _run(self, fn: Callable[[Connection], _T]) -> _T:
        """Run ``fn`` in one transaction; database errors become a StorageError (nothing written)."""
        try:
            with self.engine.begin() as conn:
                return fn(conn)
        except IntegrityError as exc:
            raise StorageError(f"refused by the database, nothing written (a duplicate payment or record?): {exc.orig}") from exc
        except DBAPIError as exc:
            raise StorageError(f"database error, nothing written (disk full, locked, or the server unreachable?): {exc.orig}") from exc

    # --- key-value -----------------------------------------------------------------------------
    def get_meta(self, key: str) -> bytes | None:
        value = self._run(lambda c: c.execute(select(meta_kv.c.value).where(meta_kv.c.key == key)).scalar())
        return None if value is None else bytes(value)

    def set_meta(self, key: str, value: bytes) -> None:
        def fn(c: Connection) -> None:
            c.execute(delete(meta_kv).where(meta_kv.c.key == key))
            c.execute(insert(meta_kv).values(key=key, value=value))

        self._run(fn)

    # --- nodes ---------------------------------------------------------------------------------
    def upsert_node(self, node_id: str, public_key: bytes, name: str, capabilities: dict[str, Any]) -> None:
        now = time.time()

        def fn(c: Connection) -> None:
            caps = json.dumps(capabilities, sort_keys=True)
            if c.execute(select(nodes.c.id).where(nodes.c.id == node_id)).first():
                c.execute(update(nodes).where(nodes.c.id == node_id).values(name=name, capabilities=caps, last_seen=now))
            else:
                c.execute(insert(nodes).values(id=node_id, public_key=public_key, name=name, capabilities=caps, registered_at=now, last_seen=now))

        self._run(fn)

    def all_nodes(self) -> list[dict[str, Any]]:
        rows = self._run(lambda c: c.execute(select(nodes)).mappings().all())
        return [{**r, "capabilities": json.loads(r["capabilities"])} for r in rows]

    def rotate_key(self, node_id: str, successor_id: str, public_key: bytes, operator_id: str) -> None:
        """Retire ``node_id``'s key for ``successor_id``'s, in one transaction: the successor inherits its
        name and capabilities, and the chain of keys that began with ``operator_id`` grows by one."""
        now = time.time()

        def fn(c: Connection) -> None:
            old = c.execute(select(nodes).where(nodes.c.id == node_id)).mappings().first()
            if old is None:
                raise NotFoundError(f"node {node_id} is not registered; call Register first")
            c.execute(insert(nodes).values(id=successor_id, public_key=public_key, name=old["name"], capabilities=old["capabilities"], registered_at=now, last_seen=now))
            c.execute(insert(key_rotations).values(node_id=node_id, successor_id=successor_id, operator_id=operator_id, rotated_at=now))

        self._run(fn)

    def key_rotations(self) -> list[dict[str, Any]]:
        """Every rotation, oldest first: ``node_id`` (retired), ``successor_id``, ``operator_id``, ``rotated_at``."""
        return [dict(r) for r in self._run(lambda c: c.execute(select(key_rotations).order_by(key_rotations.c.rotated_at)).mappings().all())]

    def operators(self) -> dict[str, str]:
        """The operator (first id of its chain of keys) of every node that rotated or was rotated to."""
        out: dict[str, str] = {}
        for r in self.key_rotations():
            out[r["node_id"]] = out[r["successor_id"]] = r["operator_id"]
        return out

    # --- measured capacity -----------------------------------------------------------------------
    _CAPACITY_SUMS = ("tasks", "misses", "samples", "compute_seconds", "turnaround_seconds", "bytes_up", "upload_seconds")

    def add_capacity(self, node_id: str, **amounts: float) -> None:
        """Add one task's measurements (``tasks``, ``misses``, ``samples``, ``compute_seconds``, ...) to the
        node's capacity record, created at its first; in one transaction, so concurrent rounds add up."""
        unknown = set(amounts) - set(self._CAPACITY_SUMS)
        if unknown:
            raise StorageError(f"internal: unknown capacity fields {sorted(unknown)}")
        now = time.time()

        def fn(c: Connection) -> None:
            if c.execute(select(node_capacity.c.node_id).where(node_capacity.c.node_id == node_id)).first() is None:
                c.execute(insert(node_capacity).values(node_id=node_id, updated_at=now, **{k: amounts.get(k, 0) for k in self._CAPACITY_SUMS}))
            else:
                c.execute(
                    update(node_capacity)
                    .where(node_capacity.c.node_id == node_id)
                    .values(updated_at=now, **{k: node_capacity.c[k] + v for k, v in amounts.items()})
                )

        self._run(fn)

    def capacity(self) -> list[dict[str, Any]]:
        """Every node's capacity record (nodes that never completed or missed a task have none)."""
        return [dict(r) for r in self._run(lambda c: c.execute(select(node_capacity).order_by(node_capacity.c.node_id)).mappings().all())]

    def node_values(self, job_id: str) -> dict[str, list[float]]:
        """Each node's value estimates in a job, round by round (the ledger's ``value``: the driver's node_values)."""
        rows = self._run(
            lambda c: c.execute(select(ledger.c.node_id, ledger.c.value).where(ledger.c.job_id == job_id).order_by(ledger.c.round)).all()
        )
        out: dict[str, list[float]] = {}
        for node_id, value in rows:
            out.setdefault(str(node_id), []).append(float(value))
        return out

    # --- jobs ----------------------------------------------------------------------------------
    def create_job(self, job_id: str, name: str, spec: bytes, token_hash: str) -> None:
        self._run(
            lambda c: c.execute(
                insert(jobs).values(
                    id=job_id, name=name, spec=spec, token_hash=token_hash, state="waiting_model", round=0, model_version=-1, message="", created_at=time.time()
                )
            )
        )

    def job(self, job_id: str) -> JobRow:
        row = self._run(lambda c: c.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first())
        if row is None:
            raise NotFoundError(f"job {job_id} does not exist")
        return JobRow(**{k: row[k] for k in JobRow.__dataclass_fields__})

    def all_jobs(self) -> list[JobRow]:
        rows = self._run(lambda c: c.execute(select(jobs).order_by(jobs.c.created_at)).mappings().all())
        return [JobRow(**{k: r[k] for k in JobRow.__dataclass_fields__}) for r in rows]

    def jobs_in_state(self, *states: str) -> list[JobRow]:
        rows = self._run(lambda c: c.execute(select(jobs).where(jobs.c.state.in_(states))).mappings().all())
        return [JobRow(**{k: r[k] for k in JobRow.__dataclass_fields__}) for r in rows]

    def set_job(self, job_id: str, **values: Any) -> None:
        self._run(lambda c: c.execute(update(jobs).where(jobs.c.id == job_id).values(**values)))

    # --- models --------------------------------------------------------------------------------
    def put_model(
        self, job_id: str, version: int, data: bytes, sha256: str, round_result: dict[str, Any] | None, ledger_rows: list[dict[str, Any]] | None = None,
        head: dict[str, Any] | None = None, disputes: Sequence[ReplicaDispute] | None = None, flagged: Sequence[str] = (),
    ) -> None:
        """Store a model version; for version r >= 1 also close round r and write its rewards, in one transaction.
        ``disputes`` (public-data jobs): the round's open disputes, replacing the job's earlier ones;
        ``flagged``: nodes caught so far (added to the job's list). Both in the same transaction, so a
        restart finds the verification state of exactly the rounds whose rewards it holds."""

        def fn(c: Connection) -> None:
            c.execute(delete(models).where(models.c.job_id == job_id, models.c.version == version))
            c.execute(insert(models).values(job_id=job_id, version=version, data=data, sha256=sha256))
            # Keep the initial model and the latest two: enough to resume and to serve stragglers.
            c.execute(delete(models).where(models.c.job_id == job_id, models.c.version > 0, models.c.version < version - 1))
            values: dict[str, Any] = {"model_version": version}
            if version == 0:
                values["state"] = "running"
            if round_result is not None:
                c.execute(update(rounds).where(rounds.c.job_id == job_id, rounds.c.round == version).values(state="done", result=json.dumps(round_result)))
            for row in ledger_rows or []:
                c.execute(insert(ledger).values(**row))
            if head is not None:
                c.execute(insert(ledger_heads).values(**head))
            if disputes is not None:
                self._put_disputes(c, job_id, disputes)
            if flagged:
                self._add_flagged(c, job_id, version, flagged)
            c.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
            crash_point("ledger_write")  # inside the transaction: a kill here must leave none of it

        self._run(fn)

    def model_sha256(self, job_id: str, version: int) -> str | None:
        sha = self._run(lambda c: c.execute(select(models.c.sha256).where(models.c.job_id == job_id, models.c.version == version)).scalar())
        return None if sha is None else str(sha)

    def model(self, job_id: str, version: int) -> bytes:
        data = self._run(lambda c: c.execute(select(models.c.data).where(models.c.job_id == job_id, models.c.version == version)).scalar())
        if data is None:
            raise NotFoundError(f"job {job_id} has no model version {version}")
        return bytes(data)

    # --- rounds --------------------------------------------------------------------------------
    def save_round(self, job_id: str, rnd: int, attempts: int, record: RoundRecord) -> None:
        """Persist a closed round, ready for its driver; its sums are already in their folder (fedgpu.aggregator.released)."""

        def fn(c: Connection) -> None:
            c.execute(delete(rounds).where(rounds.c.job_id == job_id, rounds.c.round == rnd))
            c.execute(insert(rounds).values(job_id=job_id, round=rnd, state="ready", attempts=attempts, record=record.to_json(), result="{}", closed_at=time.time()))
            c.execute(update(jobs).where(jobs.c.id == job_id).values(round=rnd))

        self._run(fn)

    def round(self, job_id: str, rnd: int) -> dict[str, Any] | None:
        row = self._run(lambda c: c.execute(select(rounds).where(rounds.c.job_id == job_id, rounds.c.round == rnd)).mappings().first())
        if row is None:
            return None
        return {**row, "record": RoundRecord.from_json(row["record"]), "result": json.loads(row["result"])}

    def rounds_of(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._run(lambda c: c.execute(select(rounds).where(rounds.c.job_id == job_id).order_by(rounds.c.round)).mappings().all())
        return [{**r, "record": RoundRecord.from_json(r["record"]), "result": json.loads(r["result"])} for r in rows]

    # --- verification state (public-data jobs) ---------------------------------------------------
    @staticmethod
    def _put_disputes(c: Connection, job_id: str, disputes: Sequence[ReplicaDispute]) -> None:
        c.execute(delete(replica_disputes).where(replica_disputes.c.job_id == job_id))
        for d in disputes:
            c.execute(
                insert(replica_disputes).values(
                    job_id=job_id, round=d.round, shard=d.shard, seed=d.seed, model_version=d.model_version,
                    members=json.dumps(list(d.members)), prefer=json.dumps(list(d.prefer)),
                )
            )

    @staticmethod
    def _add_flagged(c: Connection, job_id: str, rnd: int, flagged: Sequence[str]) -> None:
        have = set(c.execute(select(flagged_nodes.c.node_id).where(flagged_nodes.c.job_id == job_id)).scalars())
        for node_id in sorted(set(flagged) - have):
            c.execute(insert(flagged_nodes).values(job_id=job_id, node_id=node_id, round=rnd))

    def disputes(self, job_id: str) -> list[ReplicaDispute]:
        """The disputes published with the job's latest round: the next round gives each to a third node."""
        rows = self._run(
            lambda c: c.execute(
                select(replica_disputes).where(replica_disputes.c.job_id == job_id).order_by(replica_disputes.c.round, replica_disputes.c.shard)
            ).mappings().all()
        )
        return [
            ReplicaDispute(r["round"], r["shard"], int(r["seed"]), r["model_version"], tuple(json.loads(r["members"])), tuple(json.loads(r["prefer"])))
            for r in rows
        ]

    def flagged(self, job_id: str) -> dict[str, int]:
        """Every node the job's driver flagged, and the round whose publish first named it."""
        rows = self._run(lambda c: c.execute(select(flagged_nodes.c.node_id, flagged_nodes.c.round).where(flagged_nodes.c.job_id == job_id)).all())
        return {str(n): int(r) for n, r in rows}

    # --- declines ------------------------------------------------------------------------------
    def add_decline(self, job_id: str, node_id: str, reason: str, message: str) -> None:
        def fn(c: Connection) -> None:
            c.execute(delete(declines).where(declines.c.job_id == job_id, declines.c.node_id == node_id))
            c.execute(insert(declines).values(job_id=job_id, node_id=node_id, reason=reason, message=message))

        self._run(fn)

    def declined(self, job_id: str) -> dict[str, str]:
        rows = self._run(lambda c: c.execute(select(declines).where(declines.c.job_id == job_id)).mappings().all())
        return {r["node_id"]: f"{r['reason']}: {r['message']}" for r in rows}

    # --- rewards ledger --------------------------------------------------------------------------
    def ledger_rows(self, job_id: str | None = None) -> list[dict[str, Any]]:
        q = select(ledger).order_by(ledger.c.id)
        if job_id is not None:
            q = q.where(ledger.c.job_id == job_id)
        return [dict(r) for r in self._run(lambda c: c.execute(q).mappings().all())]

    def receipts_for(self, node_id: str | list[str], after: int, limit: int = 100) -> list[dict[str, Any]]:
        """A node's ledger rows with id > ``after``, each with its round's signed head: the receipts it lacks.

        Receipts are derived from the ledger, never held apart from it, so none is lost while the ledger
        stands; a node acknowledges what it holds by the last id it sends.
        """
        q = (
            select(ledger.c.id, ledger.c.job_id, ledger.c.round, ledger.c.node_id, ledger.c.reward, ledger.c.entry_hash, ledger_heads.c.head_hash, ledger_heads.c.signature)
            .join(ledger_heads, (ledger_heads.c.job_id == ledger.c.job_id) & (ledger_heads.c.round == ledger.c.round))
            .where(ledger.c.node_id.in_([node_id] if isinstance(node_id, str) else node_id), ledger.c.id > after)
            .order_by(ledger.c.id)
            .limit(limit)
        )
        return [dict(r) for r in self._run(lambda c: c.execute(q).mappings().all())]

    def paid(self, job_id: str) -> float:
        """Everything the ledger has paid this job so far."""
        return float(self._run(lambda c: c.execute(select(func.coalesce(func.sum(ledger.c.reward), 0.0)).where(ledger.c.job_id == job_id)).scalar()) or 0.0)

    def ledger_head(self) -> str | None:
        head = self._run(lambda c: c.execute(select(ledger.c.entry_hash).order_by(ledger.c.id.desc()).limit(1)).scalar())
        return None if head is None else str(head)

    def heads(self, job_id: str | None = None) -> list[dict[str, Any]]:
        q = select(ledger_heads).order_by(ledger_heads.c.job_id, ledger_heads.c.round)
        if job_id is not None:
            q = q.where(ledger_heads.c.job_id == job_id)
        return [dict(r) for r in self._run(lambda c: c.execute(q).mappings().all())]


__all__ = ["JobRow", "Store"]
