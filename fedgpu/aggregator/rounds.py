"""Rounds: opening an attempt, closing it into released cohort sums, and the cohort history of each job.

It owns the open attempt of each job (``open``: job -> RoundState) and the cache of which cohorts
each closed round released (read from the store once per job and process, so it survives a
restart). Opening picks eligible nodes (registry), splits them into cohorts that rarely meet again
and offers their tasks (uploads; on a public-data job, fedgpu.aggregator.replication says which task each
member runs, and which tasks run twice); closing merges cohorts smaller than k, writes the released sums
to their folder (fedgpu.aggregator.released) and then the record in one transaction, off the event
loop. What an attempt accumulated is in its own spool folder, so a restart redoes it from nothing; a
closed round's sums stay until its model is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import random
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from fedgpu import crypto
from fedgpu.aggregator import replication
from fedgpu.aggregator.attempt import RoundState, TaskState, TaskStatus
from fedgpu.aggregator.capacity import CapacityBook
from fedgpu.aggregator.cohorts import assign_cohorts, co_membership, merge_small
from fedgpu.aggregator.events import Events
from fedgpu.aggregator.registry import NodeRegistry
from fedgpu.aggregator.released import ReleasedSums
from fedgpu.aggregator.selection import offered, plan_of, select
from fedgpu.aggregator.store import Store
from fedgpu.aggregator.uploads import Uploads
from fedgpu.errors import StateError
from fedgpu.faults import crash_point
from fedgpu.wire.records import JobEvent, JobEventKind, JobSpec, ReplicaDispute, RoundRecord, Task
from fedgpu.wire.serde import task_wire_size

# A round that could over-select waits this long for its extra nodes before it opens with nodes_per_round:
# without it, a straggler still busy or a node still reconnecting after a restart silently cancels over-selection.
OVER_SELECT_WAIT_S = 3.0

log = logging.getLogger("fedgpu.aggregator")


def task_seed(job_seed: int, rnd: int, node_name: str) -> int:
    """A node's training seed for a round: its own, so that honest nodes do not train in lockstep, and from
    its name (not its fresh random key) so that a rerun with the same seed and node names trains the same."""
    node_salt = int.from_bytes(hashlib.sha256(node_name.encode()).digest()[:4], "little")
    return (job_seed * 7919 + rnd * 104729 + node_salt) % (2**63)


class Rounds:
    def __init__(self, store: Store, registry: NodeRegistry, uploads: Uploads, events: Events, capacity: CapacityBook | None = None) -> None:
        self.store = store
        self.registry = registry
        self.uploads = uploads
        self.events = events
        self.capacity = capacity or CapacityBook(store)  # measured per node: selection's input, `fedgpu nodes`' output
        self.sums = ReleasedSums(uploads.released_dir)      # closed rounds' sums, until their model is published
        self._ready: dict[tuple[str, int], str] = {}        # (job, round) -> attempt id of a ready round the driver is fetching
        self.open: dict[str, RoundState] = {}              # job -> open round
        self._released: dict[str, dict[int, list[list[str]]]] = {}  # job -> round -> cohorts released (cache of the store)
        # Public-data jobs, caches of the store (written with each publish, so a restart resumes them): the tasks
        # the driver found disputed in the latest round, each re-run by a third node in the next, and the nodes
        # the driver caught, offered none of the job's tasks.
        self._disputes: dict[str, list[ReplicaDispute]] = {}
        self._flagged: dict[str, set[str]] = {}

    # ---- cohort history ------------------------------------------------------------------------
    def together(self, job_id: str) -> Counter[frozenset[str]]:
        """How often each pair of nodes shared a released cohort in this job (cohort assignment keeps it
        low). The history is read from the store once per job and process, so it survives a restart,
        and is then kept up to date as rounds close: no round re-reads every earlier round's record."""
        history = self._released.get(job_id)
        if history is None:
            history = self._released[job_id] = {r["round"]: [list(c) for c in r["record"].cohorts] for r in self.store.rounds_of(job_id)}
        return co_membership(history.values())

    def released(self, job_id: str, rnd: int, cohorts: list[list[str]]) -> None:
        """Record a closed round's cohorts (a redone round replaces its earlier attempt, as in the store)."""
        if job_id in self._released:
            self._released[job_id][rnd] = cohorts

    def disputes(self, job_id: str) -> list[ReplicaDispute]:
        """The disputes published with the job's latest round (each re-run once, in the round after it)."""
        if job_id not in self._disputes:
            self._disputes[job_id] = self.store.disputes(job_id)
        return self._disputes[job_id]

    def flagged(self, job_id: str) -> set[str]:
        if job_id not in self._flagged:
            self._flagged[job_id] = set(self.store.flagged(job_id))
        return self._flagged[job_id]

    def verification_published(self, job_id: str, disputes: list[ReplicaDispute], flagged: set[str]) -> None:
        """A round's publish wrote these to the store: the next round's plan uses them."""
        self._disputes[job_id] = disputes
        self.flagged(job_id).update(flagged)

    def forget(self, job_id: str) -> None:
        """The job ended: its history is no longer needed."""
        self._released.pop(job_id, None)
        self.sums.drop(job_id)
        self._ready = {key: a for key, a in self._ready.items() if key[0] != job_id}
        self._disputes.pop(job_id, None)
        self._flagged.pop(job_id, None)
        self.capacity.forget(job_id)

    # ---- releasing sums ------------------------------------------------------------------------
    def sweep(self) -> None:
        """At start: delete every folder of sums that no ready round names (closes killed before their
        commit, rounds published but killed before their folder went)."""
        keep = set()
        for job in self.store.all_jobs():
            rec = self.store.round(job.id, job.model_version + 1)
            if rec is not None and rec["state"] == "ready":
                keep.add(ReleasedSums.name(job.id, rec["round"], rec["record"].attempt_id))
        gone = self.sums.sweep(keep)
        if gone:
            log.info("deleted %d folders of sums no ready round names: %s", len(gone), ", ".join(gone[:5]))

    def published(self, job_id: str, version: int) -> None:
        """Model ``version`` is stored: round ``version``'s sums (and any older) are no longer needed."""
        self.sums.drop(job_id, range(1, version + 1))
        self._ready = {key: a for key, a in self._ready.items() if key[0] != job_id or key[1] > version}

    def cohort_sums(self, job_id: str, rnd: int, k: int) -> tuple[list[list[str]], list[tuple[int, int]]]:
        """A closed round's cohorts and its (cohort, chunk) index, checked once more against k."""
        rec = self.store.round(job_id, rnd)
        if rec is None:
            raise StateError(f"round {rnd} of job {job_id} is not closed yet")
        cohorts = [list(c) for c in rec["record"].cohorts]
        small = [c for c in cohorts if len(c) < k]
        if small:  # rounds are saved with merged cohorts, so this is the last line of defence
            raise StateError(f"refusing to release a sum of {len(small[0])} contributors (cohort size k = {k})")
        if rec["state"] != "ready":
            raise StateError(f"round {rnd} of job {job_id} was published: its sums are gone")
        attempt_id = self._ready[(job_id, rnd)] = rec["record"].attempt_id
        return cohorts, self.sums.index(job_id, rnd, attempt_id)

    def cohort_sum(self, job_id: str, rnd: int, cohort: int, chunk: int) -> tuple[bytes, bytes]:
        """One chunk of a ready round's sums and its SHA-256 (its attempt remembered from :meth:`cohort_sums`: no query per chunk)."""
        attempt_id = self._ready.get((job_id, rnd))
        if attempt_id is None:
            rec = self.store.round(job_id, rnd)
            if rec is None or rec["state"] != "ready":
                raise StateError(f"round {rnd} of job {job_id} is not ready: its sums are not released or already gone")
            attempt_id = rec["record"].attempt_id
        return self.sums.read(job_id, rnd, attempt_id, cohort, chunk)

    # ---- one attempt ---------------------------------------------------------------------------
    async def _wait_for_nodes(self, job_id: str, spec: JobSpec, timeout: float, hopeless: Callable[[], str | None] | None = None) -> list[str]:
        """The eligible nodes, once the round's offered count (over-selection included) is there; or
        nodes_per_round once no more may come soon (see below) or after OVER_SELECT_WAIT_S; or, after
        ``timeout``, min_nodes; after twice that, whoever is there. ``hopeless`` says when no live node could
        ever serve the job: then the wait ends after ``timeout`` (within one deadline), not twice it."""
        start = time.monotonic()
        end = start + timeout
        while True:
            flagged = self.flagged(job_id)
            declined = set(self.store.declined(job_id)) | flagged
            nodes = self.registry.eligible(spec.model, spec.dataset_capability, declined | self.uploads.busy())
            want = max(spec.nodes_per_round - len(flagged), 1)  # a flagged node never comes back to the job: no waiting for it
            offer = offered(plan_of(spec.selection), want, spec.privacy.enabled, spec.cohort_size)
            now = time.monotonic()
            if len(nodes) >= offer or (now >= end and len(nodes) >= max(spec.min_nodes, 1)):
                return nodes
            if len(nodes) >= want and (now >= start + min(OVER_SELECT_WAIT_S, timeout) or not self._more_may_come(spec, declined, offer)):
                return nodes
            if now >= end + timeout or (now >= end and hopeless is not None and hopeless()):
                return nodes
            self.registry.node_available.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.registry.node_available.wait(), timeout=0.5)

    def _more_may_come(self, spec: JobSpec, declined: set[str], offer: int) -> bool:
        """Whether waiting could fill the over-selected slots: a busy node (another job's task) may free
        up, and right after a restart the nodes of the last process are still coming back."""
        if time.monotonic() - self.registry.started < self.registry.live_grace:
            return True
        return len(self.registry.eligible(spec.model, spec.dataset_capability, declined)) >= offer

    async def run(
        self, job_id: str, spec: JobSpec, rnd: int, version: int, attempt: int, hopeless: Callable[[], str | None] | None = None
    ) -> RoundRecord | None:
        """Open attempt ``attempt`` of round ``rnd``, wait for its uploads or its deadline, close it.
        None: too few nodes reported (the caller retries, or fails the job when ``hopeless`` says why)."""
        nodes = await self._wait_for_nodes(job_id, spec, min(spec.deadline_seconds, 30.0), hopeless)
        if len(nodes) < max(spec.min_nodes, spec.cohort_size):
            log.info("job %s round %d: %d eligible nodes, need %d", job_id, rnd, len(nodes), spec.min_nodes)
            return None
        rng = random.Random(spec.seed * 1_000_003 + rnd * 1009 + attempt)
        picked = select(
            nodes, spec.nodes_per_round, self.capacity.history(job_id), plan_of(spec.selection), rng, spec.deadline_seconds,
            minimum=max(spec.min_nodes, spec.cohort_size), dp=spec.privacy.enabled, cohort_size=spec.cohort_size,
        )
        chosen = picked.chosen
        plan, disputes = None, self.disputes(job_id)  # a retried attempt re-runs them again
        if spec.public_data is not None:
            device = {n: str(self.registry.node_caps.get(n, {}).get("device", "")) for n in chosen}
            plan = replication.plan_round(spec.public_data, spec.seed, rnd, version, chosen, random.SystemRandom(), disputes, device)
        together = self.together(job_id)
        cohorts = assign_cohorts(chosen, spec.cohort_size, random.SystemRandom(), together)
        enc = spec.encryption
        adder = crypto.adder(enc.scheme, enc.params)
        layout = crypto.ChunkLayout(int(spec.num_params), int(enc.values_per_chunk))
        bounds = spec.claim_bounds
        now = time.time()
        attempt_id = uuid.uuid4().hex[:16]  # no restart reuses it, so no attempt ever meets another's spool
        rs = RoundState(
            job_id=job_id,
            round=rnd,
            attempt=attempt,
            attempt_id=attempt_id,
            scheme=enc.scheme,
            opened_at=now,
            deadline=now + spec.deadline_seconds,
            adder=adder,
            cohorts=cohorts,
            tasks={},
            num_chunks=layout.num_chunks,
            acc_dir=self.uploads.spool / f"{job_id}-r{rnd}-{attempt_id}",
            replicas=plan,
            enough=picked.enough if picked.enough < len(chosen) else 0,
        )
        for ci, members in enumerate(cohorts):
            for node_id in members:
                seed, start, shard = task_seed(spec.seed, rnd, self.registry.name(node_id)), version, None
                if plan is not None:  # a public-data task: its shard and seed are the task's, shared by its replicas
                    planned = plan.task_of(node_id)
                    seed, start, shard = planned.seed, planned.model_version, replication.shard_of(spec.public_data, planned)  # type: ignore[arg-type]
                task = Task(
                    task_id=uuid.uuid4().hex,
                    job_id=job_id,
                    round=rnd,
                    model_version=start,
                    model=spec.model,
                    dataset=spec.dataset,
                    training=dataclasses.replace(spec.training, seed=seed),
                    privacy=spec.privacy,
                    encryption=enc,
                    deadline_ms=int(rs.deadline * 1000),
                    num_params=spec.num_params,
                    num_chunks=layout.num_chunks,
                    max_weight=bounds.max_weight,
                    update_norm_bound=bounds.update_norm_bound,
                    schema=spec.schema,
                    statistics=spec.standardize and rnd == 1,
                    nodes_per_round=spec.nodes_per_round,
                    public_data=shard,
                )
                self.uploads.offer(rs, TaskState(task=task, node_id=node_id, cohort=ci, bytes_down=task_wire_size(task)))
        rs.acc_dir.mkdir(parents=True)
        self.open[job_id] = rs
        self.events.emit(job_id, JobEvent(kind=JobEventKind.ROUND_OPENED, round=rnd, participants=tuple(chosen)))
        log.info("job %s round %d (attempt %d): %d nodes in %d cohorts", job_id, rnd, attempt, len(chosen), len(cohorts))
        try:
            await asyncio.wait_for(rs.done.wait(), timeout=spec.deadline_seconds)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            self._drop(rs)
            raise
        return await self._close(rs, spec)

    def _drop(self, rs: RoundState) -> None:
        """Forget an open round (its job was cancelled): its tasks are refused from now on."""
        self.uploads.retire(rs, at_deadline=False)
        self.open.pop(rs.job_id, None)
        shutil.rmtree(rs.acc_dir, ignore_errors=True)

    async def _close(self, rs: RoundState, spec: JobSpec) -> RoundRecord | None:
        self.uploads.retire(rs, at_deadline=True)
        self.open.pop(rs.job_id, None)
        self.capacity.round_closed(rs)
        by_cohort: list[list[str]] = [[] for _ in rs.cohorts]
        for ts in rs.tasks.values():
            if ts.status is TaskStatus.COMPLETE:
                by_cohort[ts.cohort].append(ts.node_id)
        complete = sum(len(c) for c in by_cohort)
        groups = merge_small([len(c) for c in by_cohort], spec.cohort_size)
        status = {ts.node_id: ts.status.value if ts.status is TaskStatus.COMPLETE else f"{ts.status.value}: {ts.message}" for ts in rs.tasks.values()}
        if groups is None or complete < max(spec.min_nodes, 1):
            shutil.rmtree(rs.acc_dir, ignore_errors=True)
            log.info("job %s round %d: %d of %d nodes reported, need %d", rs.job_id, rs.round, complete, len(rs.tasks), spec.min_nodes)
            return None
        merged_members = [sorted(m for ci in g for m in by_cohort[ci]) for g in groups]

        adder = rs.adder

        def merged() -> Iterator[tuple[int, int, bytes | Path]]:
            """Each released sum, one chunk at a time: the members' cohorts added together (a lone
            update's spooled file as it is, where the scheme's sum of one is the payload)."""
            for gi, g in enumerate(groups):
                for chunk in range(rs.num_chunks):
                    parts = [part for ci in g if by_cohort[ci] and (part := rs.cohort_sum(ci, chunk)) is not None]
                    if not parts:
                        raise StateError("internal: a reporting cohort has an empty chunk")
                    if len(parts) == 1 and isinstance(parts[0], Path) and adder.sum_is_payload:
                        yield gi, chunk, parts[0]
                        continue
                    first, *rest = (adder.add(adder.zero(), p.read_bytes()) if isinstance(p, Path) else p for p in parts)
                    for other in rest:
                        first = adder.combine(first, other)
                    yield gi, chunk, adder.to_bytes(first)

        tasks = rs.tasks.values()
        record = RoundRecord(
            participants=tuple(sorted(m for c in merged_members for m in c)),
            cohorts=tuple(tuple(c) for c in merged_members),
            node_status=status,
            bytes_up=sum(ts.bytes_up for ts in tasks),
            bytes_down=sum(ts.bytes_down for ts in tasks),
            bytes_up_by_node={ts.node_id: ts.bytes_up for ts in tasks},
            bytes_down_by_node={ts.node_id: ts.bytes_down for ts in tasks},
            train_seconds={ts.node_id: ts.train_seconds for ts in tasks if ts.status is TaskStatus.COMPLETE},
            epsilon={ts.node_id: ts.epsilon for ts in tasks if ts.epsilon is not None},
            seconds=time.time() - rs.opened_at,
            attempt=rs.attempt,
            attempt_id=rs.attempt_id,
            node_names={ts.node_id: self.registry.name(ts.node_id) for ts in tasks},
            upload_seconds={ts.node_id: ts.upload_seconds for ts in tasks if ts.status is TaskStatus.COMPLETE},
            aggregation_seconds=sum(ts.fold_seconds for ts in tasks),
            encrypt_seconds={ts.node_id: ts.encrypt_seconds for ts in tasks if ts.status is TaskStatus.COMPLETE},
            replicas=rs.replicas.replica_sets({m for c in merged_members for m in c}) if rs.replicas is not None else (),
        )

        def persist() -> None:
            """The sums, durably, then the row that names them; in a thread: the loop goes on serving."""
            try:
                self.sums.write(rs.job_id, rs.round, rs.attempt_id, merged())
                try:
                    self.store.save_round(rs.job_id, rs.round, rs.attempt, record)
                except BaseException:
                    self.sums.drop(rs.job_id, [rs.round])
                    raise
            finally:
                shutil.rmtree(rs.acc_dir, ignore_errors=True)

        await asyncio.to_thread(persist)
        crash_point("round_saved")
        self.released(rs.job_id, rs.round, merged_members)
        log.info("job %s round %d closed: %d nodes in %d cohorts", rs.job_id, rs.round, complete, len(groups))
        return record


__all__ = [
    "OVER_SELECT_WAIT_S",
    "Rounds",
    "task_seed",
]
