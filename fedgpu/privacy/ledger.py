"""The data owner's privacy ledger: every DP-SGD segment a node ran on the owner's data, durably.

One SQLite file per owner (default ``~/.fedgpu/privacy.db``), append-only. A row is one round of
one job on one dataset: exactly the ``(noise_multiplier, sample_rate, steps)`` segment Opacus's
accountant composes, plus who, what and when. Epsilon is never stored or summed by hand: it is
recomputed each time by replaying the stored history into a fresh Opacus accountant, so the number
fedgpu reports is Opacus's number on the stored history.

Composition rules:
* all events on the same dataset fingerprint compose, across jobs (sequential composition); the
  file belongs to one owner, so the owner column is a label, not a key;
* different datasets of one owner are disjoint records, so they compose in parallel: epsilon is
  reported per dataset, the owner-level figure is the maximum, and a cap applies per dataset;
* the delta stored with an event is the one its job asked for; epsilon is computed at the delta
  the caller asks (a mechanism's segments do not depend on delta).

The history handed to the accountant is canonical: events with the same (sigma, q) are merged into
one segment (composition is commutative, so the guarantee is the same). This keeps the PRV
accountant's work proportional to the number of distinct settings, not of rounds, and makes a job
that was planned as one segment end at exactly the epsilon it was planned for.

Cost: Opacus's PRV accountant takes far longer per distinct segment than RDP, and its time and memory
grow with epsilon (docs/privacy.md, "Cost of PRV"). ``epsilon`` always uses the configured
accountant. The admission check in ``project``/``charge`` uses it too up to ``prv_max_segments``
distinct segments and RDP beyond: RDP's epsilon is a valid, looser upper bound, so the check only
errs towards refusing.

Durability: WAL journal with ``synchronous=FULL``, so a charge is on disk when ``charge`` returns
and survives a SIGKILL or power loss right after. The node charges *before* it trains: a crash
mid-round counts as spent, never the other way round.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedgpu.datasets import ArrayDataset
from fedgpu.errors import ConfigError, PrivacyBudgetExceeded, StorageError
from fedgpu.privacy.dp import Accountant, epsilon_of, parse_accountant

DEFAULT_LEDGER = Path("~/.fedgpu/privacy.db")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    owner            TEXT    NOT NULL,
    dataset_fp       TEXT    NOT NULL,
    job_id           TEXT    NOT NULL,
    round            INTEGER NOT NULL,
    noise_multiplier REAL    NOT NULL CHECK (noise_multiplier > 0),
    sample_rate      REAL    NOT NULL CHECK (sample_rate > 0 AND sample_rate <= 1),
    steps            INTEGER NOT NULL CHECK (steps > 0),
    delta            REAL    NOT NULL CHECK (delta > 0 AND delta < 1),
    created_at       REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS privacy_events_dataset ON privacy_events (dataset_fp, id);
"""

Segment = tuple[float, float, int]  # (noise_multiplier, sample_rate, steps), Opacus's history entry


def dataset_fingerprint(data: ArrayDataset) -> str:
    """sha256 over shapes, dtypes and bytes of the owner's arrays: the same records give the same key."""
    h = hashlib.sha256()
    for arr in (np.ascontiguousarray(data.x), np.ascontiguousarray(data.y)):
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class PrivacyEvent:
    """One round of DP-SGD on one dataset; validated so a bad event can never reach the table."""

    owner: str
    dataset_fp: str
    job_id: str
    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float

    def __post_init__(self) -> None:
        for name in ("owner", "dataset_fp", "job_id"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"privacy event: {name} must be a non-empty string")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ConfigError(f"privacy event: noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not (0 < self.sample_rate <= 1):
            raise ConfigError(f"privacy event: sample_rate must lie in (0, 1], got {self.sample_rate}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"privacy event: steps must be a positive integer, got {self.steps!r}")
        if not (0 < self.delta < 1):
            raise ConfigError(f"privacy event: delta must lie in (0, 1), got {self.delta}")
        if isinstance(self.round, bool) or not isinstance(self.round, int) or self.round < 0:
            raise ConfigError(f"privacy event: round must be an integer >= 0, got {self.round!r}")

    @property
    def segment(self) -> Segment:
        return (self.noise_multiplier, self.sample_rate, self.steps)


@dataclass(frozen=True)
class StoredEvent:
    id: int
    event: PrivacyEvent
    created_at: float


@dataclass(frozen=True)
class JobSpend:
    """One row of ``fedgpu budget``: what one job spent on one dataset (alone), and the dataset's total."""

    owner: str
    dataset_fp: str
    job_id: str
    rounds: int
    steps: int
    epsilon_job: float  # this job's events alone
    epsilon_dataset: float  # all jobs on this dataset: what the cap is checked against
    first_at: float
    last_at: float


def canonical_history(segments: list[Segment]) -> list[Segment]:
    """Merge segments with equal (sigma, q), in order of first appearance; composition is commutative."""
    merged: dict[tuple[float, float], int] = {}
    for sigma, q, steps in segments:
        merged[(sigma, q)] = merged.get((sigma, q), 0) + int(steps)
    return [(sigma, q, steps) for (sigma, q), steps in merged.items()]


class OwnerLedger:
    """A data owner's append-only record of DP-SGD segments, with epsilon recomputed by Opacus.

    Opens and closes a connection per call: nothing is cached in memory, so what the methods see is
    always what is on disk, several processes (node, CLI) can share the file, and a kill at any
    point leaves either the whole event or none of it.
    """

    def __init__(
        self,
        path: str | Path = DEFAULT_LEDGER,
        accountant: str | Accountant = Accountant.PRV,
        *,
        prv_max_segments: int = 8,
    ) -> None:
        self.path = Path(path).expanduser()
        self.accountant = parse_accountant(accountant)
        self.prv_max_segments = prv_max_segments
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.executescript(_SCHEMA)
        except OSError as exc:
            raise StorageError(f"cannot create the privacy ledger at {self.path}: {exc}") from exc

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the privacy ledger {self.path}: {exc}") from exc
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")  # a commit is on disk before it returns
            yield con
        except sqlite3.Error as exc:
            raise StorageError(f"privacy ledger {self.path}: {exc}") from exc
        finally:
            con.close()

    # -- reading ---------------------------------------------------------------------------------

    def events(self, *, dataset_fp: str | None = None, job_id: str | None = None) -> list[StoredEvent]:
        with self._connect() as con:
            return self._select(con, dataset_fp=dataset_fp, job_id=job_id)

    @staticmethod
    def _select(con: sqlite3.Connection, *, dataset_fp: str | None = None, job_id: str | None = None) -> list[StoredEvent]:
        where: list[str] = []
        args: list[str] = []
        for col, val in (("dataset_fp", dataset_fp), ("job_id", job_id)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = (
            "SELECT id, owner, dataset_fp, job_id, round, noise_multiplier, sample_rate, steps, delta, created_at "
            "FROM privacy_events" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        )
        return [
            StoredEvent(r[0], PrivacyEvent(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]), r[9])
            for r in con.execute(sql, args)
        ]

    def history(self, dataset_fp: str, *, job_id: str | None = None) -> list[Segment]:
        """The canonical Opacus history of one dataset (optionally one job's part of it)."""
        return canonical_history([s.event.segment for s in self.events(dataset_fp=dataset_fp, job_id=job_id)])

    def datasets(self) -> list[str]:
        with self._connect() as con:
            return [r[0] for r in con.execute("SELECT dataset_fp FROM privacy_events GROUP BY dataset_fp ORDER BY MIN(id)")]

    def epsilon_by_dataset(self, delta: float, job_id: str | None = None) -> dict[str, float]:
        """Epsilon per dataset at ``delta``, replayed into a fresh accountant from the stored rows."""
        by_fp: dict[str, list[Segment]] = {}
        for s in self.events(job_id=job_id):
            by_fp.setdefault(s.event.dataset_fp, []).append(s.event.segment)
        return {fp: self._epsilon(segs, delta) for fp, segs in by_fp.items()}

    def epsilon(self, delta: float, job_id: str | None = None, *, dataset_fp: str | None = None) -> float:
        """Epsilon the owner has spent at ``delta``: of one dataset, or the maximum over datasets
        (disjoint datasets compose in parallel). With ``job_id``, only that job's events count."""
        if dataset_fp is not None:
            return self._epsilon([s.event.segment for s in self.events(dataset_fp=dataset_fp, job_id=job_id)], delta)
        return max(self.epsilon_by_dataset(delta, job_id).values(), default=0.0)

    def _epsilon(self, segments: list[Segment], delta: float, accountant: Accountant | None = None) -> float:
        if not (0 < delta < 1):
            raise ConfigError(f"delta must lie in (0, 1), got {delta}")
        return epsilon_of(canonical_history(segments), delta, accountant or self.accountant)

    def admission_accountant(self, segments: list[Segment]) -> Accountant:
        """The accountant the cap check uses: the configured one, or RDP when PRV would be slow."""
        if self.accountant is Accountant.PRV and len(canonical_history(segments)) > self.prv_max_segments:
            return Accountant.RDP
        return self.accountant

    def project(self, event: PrivacyEvent) -> float:
        """Epsilon of ``event``'s dataset, at ``event.delta``, if ``event`` were added (admission accountant)."""
        return self.project_all([event])

    def project_all(self, events: list[PrivacyEvent]) -> float:
        """Epsilon of the events' dataset, at the first one's delta, if all of ``events`` (one dataset) were added."""
        if not events or len({e.dataset_fp for e in events}) != 1:
            raise ConfigError("project_all takes one or more events of one dataset")
        history = [s.event.segment for s in self.events(dataset_fp=events[0].dataset_fp)] + [e.segment for e in events]
        return self._epsilon(history, events[0].delta, self.admission_accountant(history))

    # -- writing ---------------------------------------------------------------------------------

    def charge(self, event: PrivacyEvent, cap: float) -> float:
        """Record ``event`` if the dataset's epsilon stays within ``cap``; return the new epsilon.

        Check and insert happen in one write transaction, so two processes charging at once cannot
        both slip under the cap. Raises ``PrivacyBudgetExceeded`` (nothing recorded) above the cap.
        The event is durable when this returns.
        """
        if not (math.isfinite(cap) and cap > 0):
            raise ConfigError(f"epsilon cap must be a positive number, got {cap}")
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")  # take the write lock before reading the history
            try:
                history = [s.event.segment for s in self._select(con, dataset_fp=event.dataset_fp)]
                mechanism = self.admission_accountant([*history, event.segment])
                projected = self._epsilon([*history, event.segment], event.delta, mechanism)
                if projected > cap:
                    spent = self._epsilon(history, event.delta, mechanism)
                    raise PrivacyBudgetExceeded(
                        f"owner {event.owner!r}, dataset {event.dataset_fp[:19]}: job {event.job_id!r} round "
                        f"{event.round} would raise epsilon from {spent:.4f} to {projected:.4f} "
                        f"(delta {event.delta:g}, {mechanism.value} accountant), above the cap "
                        f"{cap:g}; nothing was trained or recorded. Raise the cap, ask for a job with a "
                        "larger noise multiplier or fewer steps, or stop serving this dataset"
                    )
                con.execute(
                    "INSERT INTO privacy_events (owner, dataset_fp, job_id, round, noise_multiplier, "
                    "sample_rate, steps, delta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.owner,
                        event.dataset_fp,
                        event.job_id,
                        event.round,
                        float(event.noise_multiplier),
                        float(event.sample_rate),
                        int(event.steps),
                        float(event.delta),
                        time.time(),
                    ),
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return projected

    # -- reporting -------------------------------------------------------------------------------

    def by_job(self, delta: float) -> list[JobSpend]:
        """Per (dataset, job): rounds, steps, the job's own epsilon and the dataset's total, at ``delta``."""
        stored = self.events()
        per_fp: dict[str, list[Segment]] = {}
        groups: dict[tuple[str, str, str], list[StoredEvent]] = {}
        for s in stored:
            per_fp.setdefault(s.event.dataset_fp, []).append(s.event.segment)
            groups.setdefault((s.event.owner, s.event.dataset_fp, s.event.job_id), []).append(s)
        totals = {fp: self._epsilon(segs, delta) for fp, segs in per_fp.items()}
        return [
            JobSpend(
                owner=owner,
                dataset_fp=fp,
                job_id=job,
                rounds=len(rows),
                steps=sum(r.event.steps for r in rows),
                epsilon_job=self._epsilon([r.event.segment for r in rows], delta),
                epsilon_dataset=totals[fp],
                first_at=rows[0].created_at,
                last_at=rows[-1].created_at,
            )
            for (owner, fp, job), rows in groups.items()
        ]


__all__ = [
    "DEFAULT_LEDGER",
    "JobSpend",
    "OwnerLedger",
    "PrivacyEvent",
    "Segment",
    "StoredEvent",
    "canonical_history",
    "dataset_fingerprint",
]
