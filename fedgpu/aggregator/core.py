"""The aggregator's logic, apart from gRPC: nodes, tasks, uploads, cohort sums, job rounds.

It holds no key: updates are added with the job's key-free ``Adder`` as they complete, one
accumulator per (cohort, chunk). An upload is spooled to disk chunk by chunk and added into its
cohort only when it is complete and verified, so a node that vanishes mid-upload leaves no trace in
any sum, and memory stays one encrypted model per cohort whatever the number of nodes.

Crash consistency: every round attempt has its own id and spool folder, and a process starts by
deleting the whole spool. What an attempt accumulated exists only inside the process that opened it;
a closed round's sums live in the database, written in one transaction. A restart therefore redoes
the open round from nothing and can never add a killed attempt's leftovers into a released sum.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import AsyncIterator, Iterator

import numpy as np

from fedgpu import crypto
from fedgpu.aggregator.cohorts import assign_cohorts, co_membership, merge_small
from fedgpu.aggregator.ledger import load_signing_key, round_rows
from fedgpu.aggregator.rounds import RoundState, TaskState
from fedgpu.aggregator.store import Store
from fedgpu.errors import AuthError, FedgpuError, NotFoundError, ProtocolError, StateError
from fedgpu.faults import crash_point
from fedgpu.proto.fedgpu.v1 import driver_pb2, node_pb2
from fedgpu.rewards.chain import LedgerRow, public_key_bytes
from fedgpu.wire import PROTOCOL_VERSION, chunks
from fedgpu.wire.auth import Verifier, node_id_for
from fedgpu.wire.serde import job_from_proto

log = logging.getLogger("fedgpu.aggregator")

NODE_TIMEOUT_S = 30.0      # a node unseen for this long is not offered tasks
MAX_ATTEMPTS = 20          # failed attempts of one round before the job fails
EventKind = driver_pb2.JobEventKind
ENDED = (EventKind.JOB_EVENT_KIND_JOB_DONE, EventKind.JOB_EVENT_KIND_JOB_FAILED, EventKind.JOB_EVENT_KIND_JOB_CANCELLED)


def check_protocol(version: int, who: str) -> None:
    """Refuse a peer of another protocol major version (0: an old peer that sends none)."""
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"this aggregator speaks fedgpu protocol {PROTOCOL_VERSION}, the {who} speaks {version or 'an older one'}: "
            f"install the same fedgpu major version on both"
        )


class Aggregator:
    def __init__(self, store: Store, spool_dir: Path, node_timeout: float = NODE_TIMEOUT_S) -> None:
        self.store = store
        self.spool = spool_dir
        # Whatever an earlier process spooled belongs to attempts it never closed: discard it all.
        shutil.rmtree(self.spool, ignore_errors=True)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.booted_ms = int(time.time() * 1000)
        self.verifier = Verifier(not_before_ms=self.booted_ms)
        self.node_timeout = node_timeout
        self.last_seen: dict[str, float] = {}
        self.pubkeys: dict[str, bytes] = {}
        self.node_caps: dict[str, dict] = {}
        self.pending: dict[str, node_pb2.Task] = {}       # node -> task to deliver
        self.wakeups: dict[str, asyncio.Event] = {}
        self.node_available = asyncio.Event()
        self.tasks: dict[str, tuple[RoundState, TaskState]] = {}
        self.rounds: dict[str, RoundState] = {}            # job -> open round
        self.job_nodes: dict[str, set[str]] = {}           # job -> nodes ever given a task
        self.watchers: dict[str, list[asyncio.Queue[driver_pb2.JobEvent]]] = {}
        self.published: dict[str, asyncio.Event] = {}
        self.runners: dict[str, asyncio.Task[None]] = {}
        self.driver_seen: dict[str, float] = {}            # job -> when its driver last called (monotonic)
        self._model_cache: dict[str, tuple[int, bytes]] = {}
        self._released: dict[str, dict[int, list[list[str]]]] = {}  # job -> round -> cohorts released (cache of the store)

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Resume every running job: its last completed round stands, the open one is redone."""
        self.signing_key = load_signing_key(self.store)
        for n in self.store.all_nodes():
            self.pubkeys[n["id"]] = n["public_key"]
            self.node_caps[n["id"]] = n["capabilities"]
        for job in self.store.jobs_in_state("waiting_model", "running"):
            self._start_runner(job.id)

    async def stop(self) -> None:
        for t in self.runners.values():
            t.cancel()
        await asyncio.gather(*self.runners.values(), return_exceptions=True)

    def _start_runner(self, job_id: str) -> None:
        self.published.setdefault(job_id, asyncio.Event())
        self.runners[job_id] = asyncio.create_task(self._run_job(job_id), name=f"job-{job_id}")

    # ---- nodes ---------------------------------------------------------------------------------
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
        caps = {"models": sorted(req.capabilities.models), "datasets": sorted(req.capabilities.datasets), "device": req.capabilities.device[:200], "name": req.name or node_id}
        self.store.upsert_node(node_id, req.public_key, req.name or node_id, caps)
        self.pubkeys[node_id] = req.public_key
        self.node_caps[node_id] = caps
        self._seen(node_id)
        log.info("node %s registered (%s, %s)", node_id, req.name, caps["device"])
        return node_id

    def authenticate(self, method: str, req: object) -> str:
        node_id = req.auth.node_id  # type: ignore[attr-defined]
        key = self.pubkeys.get(node_id)
        if key is None:
            raise AuthError(f"node {node_id!r} is not registered; call Register first")
        self.verifier.verify(method, req, key)
        self._seen(node_id)
        return node_id

    def _seen(self, node_id: str) -> None:
        self.last_seen[node_id] = time.monotonic()
        self.node_available.set()

    def _eligible(self, job_id: str, model: str, dataset: str) -> list[str]:
        now = time.monotonic()
        declined = self.store.declined(job_id)
        busy = {t.node_id for _, t in self.tasks.values() if t.status in ("assigned", "uploading")}
        out = []
        for node_id, caps in self.node_caps.items():
            if now - self.last_seen.get(node_id, -1e9) > self.node_timeout or node_id in declined or node_id in busy:
                continue
            if model in caps.get("models", []) and dataset in caps.get("datasets", []):
                out.append(node_id)
        return sorted(out)

    def receipts(self, node_id: str, after: int) -> list[node_pb2.Receipt]:
        """The node's receipts after the last one it holds (``after``), from the ledger itself."""
        key = public_key_bytes(self.signing_key).hex()
        return [
            node_pb2.Receipt(
                id=r["id"], job_id=r["job_id"], round=r["round"], node_id=r["node_id"], reward=r["reward"],
                entry_hash=r["entry_hash"], head_hash=r["head_hash"], signature=r["signature"], aggregator_key=key,
            )
            for r in self.store.receipts_for(node_id, min(after, 2**63 - 1))  # a uint64 on the wire, an int64 in SQL
        ]

    async def pull_task(self, node_id: str, wait_seconds: float) -> node_pb2.Task | None:
        deadline = time.monotonic() + min(max(wait_seconds, 0.0), 60.0)
        ev = self.wakeups.setdefault(node_id, asyncio.Event())
        while True:
            self._seen(node_id)
            task = self.pending.get(node_id)
            if task is not None:
                return task
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ev.clear()
            try:
                await asyncio.wait_for(ev.wait(), timeout=min(remaining, 5.0))
            except asyncio.TimeoutError:
                pass

    def decline(self, node_id: str, req: node_pb2.DeclineTaskRequest) -> None:
        rs, ts = self._task(node_id, req.task_id)
        reason = node_pb2.DeclineReason.Name(req.reason).removeprefix("DECLINE_REASON_").lower()
        ts.status, ts.message = "declined", f"{reason}: {req.message[:500]}"
        self.pending.pop(node_id, None)
        if req.reason != node_pb2.DECLINE_REASON_FAILED:
            self.store.add_decline(rs.job_id, node_id, reason, req.message[:500])
        log.info("node %s declined %s round %d: %s", node_id, rs.job_id, rs.round, ts.message)
        rs.check_done()

    def _task(self, node_id: str, task_id: str) -> tuple[RoundState, TaskState]:
        entry = self.tasks.get(task_id)
        if entry is None:
            raise NotFoundError(f"task {task_id!r} is unknown or its round has closed")
        if entry[1].node_id != node_id:
            raise AuthError(f"task {task_id} belongs to another node")
        return entry

    def model_for_node(self, node_id: str, job_id: str, version: int) -> bytes:
        if node_id not in self.job_nodes.get(job_id, set()):
            raise AuthError(f"node {node_id} has no task in job {job_id}")
        data = self.model_bytes(job_id, version)
        rs = self.rounds.get(job_id)
        if rs is not None:
            for ts in rs.tasks.values():
                if ts.node_id == node_id:
                    ts.bytes_down += len(data)
        return data

    def model_bytes(self, job_id: str, version: int) -> bytes:
        """One cached copy of the newest model per job: N nodes downloading it cost one copy, not N."""
        hit = self._model_cache.get(job_id)
        if hit is None or hit[0] != version:
            hit = (version, self.store.model(job_id, version))
            self._model_cache[job_id] = hit
        return hit[1]

    # ---- uploads -------------------------------------------------------------------------------
    def upload_status(self, node_id: str, task_id: str) -> node_pb2.UploadReply:
        _, ts = self._task(node_id, task_id)
        return node_pb2.UploadReply(received=ts.received, complete=ts.status == "complete")

    async def upload(self, stream: AsyncIterator[node_pb2.UpdateChunk]) -> node_pb2.UploadReply:
        ts: TaskState | None = None
        async for msg in stream:
            node_id = self.authenticate("UploadUpdate", msg)
            rs, ts = self._task(node_id, msg.task_id)
            try:
                self._accept_chunk(rs, ts, msg)
            except (AuthError, StateError):
                raise
            except ProtocolError as exc:
                # The task's own authenticated node sent a malformed update: its task fails, the round goes on.
                self._fail_task(rs, ts, str(exc))
                raise
        if ts is None:
            raise ProtocolError("empty upload stream")
        return node_pb2.UploadReply(received=ts.received, complete=ts.status == "complete")

    def _accept_chunk(self, rs: RoundState, ts: TaskState, msg: node_pb2.UpdateChunk) -> None:
        if ts.status == "complete":
            raise StateError(f"task {ts.task.task_id} is already complete: replayed or duplicate chunk")
        if ts.status not in ("assigned", "uploading"):
            raise StateError(f"task {ts.task.task_id} is {ts.status}; its update is no longer accepted")
        if time.time() * 1000 > ts.task.deadline_ms:
            raise StateError(f"task {ts.task.task_id} missed its deadline")
        if msg.fingerprint != ts.task.encryption.fingerprint:
            raise ProtocolError("update encrypted for another context (fingerprint mismatch): fetch the task again")
        if msg.chunk.index < ts.received:
            raise StateError(f"chunk {msg.chunk.index} was already received: replay refused")
        data = chunks.verify(msg.chunk, expected_index=ts.received, expected_count=ts.task.num_chunks)
        try:
            rs.adder.check(data)
        except FedgpuError:
            raise
        except Exception as exc:  # a scheme's parser must never crash the server
            raise ProtocolError(f"malformed update chunk: {exc}") from exc
        layout = crypto.ChunkLayout(int(ts.task.num_params), int(ts.task.encryption.values_per_chunk))
        expected_values = layout.chunk_values(msg.chunk.index)
        got = rs.adder.count(data)
        if got != expected_values:
            raise ProtocolError(f"chunk {msg.chunk.index} holds {got} values, the model needs {expected_values}: wrong shape")
        path = self.spool / f"{ts.task.task_id}.part"
        with path.open("ab") as f:
            off = f.tell()
            f.write(data)
        ts.offsets.append((off, len(data)))
        ts.received += 1
        ts.bytes_up += len(msg.SerializeToString())
        ts.status = "uploading"
        ts.train_seconds = max(ts.train_seconds, msg.train_seconds)
        if msg.epsilon > 0:
            ts.epsilon = msg.epsilon
        if ts.received == ts.task.num_chunks:
            self._fold(rs, ts, path)
            crash_point("upload_folded")
        else:
            crash_point("upload_chunk")

    def _fail_task(self, rs: RoundState, ts: TaskState, message: str) -> None:
        if ts.status in ("assigned", "uploading"):
            ts.status, ts.message = "failed", message
            (self.spool / f"{ts.task.task_id}.part").unlink(missing_ok=True)
            self.pending.pop(ts.node_id, None)
            log.info("node %s: update rejected: %s", ts.node_id, message)
            rs.check_done()

    def _fold(self, rs: RoundState, ts: TaskState, path: Path) -> None:
        """Add a complete upload into its cohort's sum, one chunk in memory at a time, then forget it."""
        with path.open("rb") as f:
            for i, (off, size) in enumerate(ts.offsets):
                f.seek(off)
                rs.accumulate(ts.cohort, i, f.read(size))
        path.unlink(missing_ok=True)
        ts.offsets.clear()
        ts.status = "complete"
        self.pending.pop(ts.node_id, None)
        rs.check_done()

    # ---- driver --------------------------------------------------------------------------------
    def submit_job(self, spec: driver_pb2.JobSpec, protocol_version: int) -> tuple[str, str]:
        check_protocol(protocol_version, "driver")
        cfg = job_from_proto(spec, check_registry=False)  # ConfigError names the offending field; nodes check the model
        enc = spec.encryption
        crypto.adder(enc.scheme, enc.params)  # the parameters must parse
        if enc.fingerprint != crypto.context_fingerprint(enc.scheme, enc.params, enc.public_material):
            raise ProtocolError("encryption.fingerprint does not match the scheme, params and public key")
        if not 1 <= spec.num_params <= 500_000_000:
            raise ProtocolError(f"num_params {spec.num_params} out of range")
        job_id = "job-" + uuid.uuid4().hex[:12]
        token = secrets.token_hex(32)
        self.store.create_job(job_id, cfg.name, spec.SerializeToString(), hashlib.sha256(token.encode()).hexdigest())
        self.driver_seen[job_id] = time.monotonic()
        self._start_runner(job_id)
        log.info("job %s submitted: %s on %s, %d rounds", job_id, cfg.model, cfg.dataset, cfg.rounds)
        return job_id, token

    def check_token(self, job_id: str, token: str) -> driver_pb2.JobSpec:
        job = self.store.job(job_id)
        if not secrets.compare_digest(job.token_hash, hashlib.sha256(token.encode()).hexdigest()):
            raise AuthError(f"wrong token for job {job_id}")
        self.driver_seen[job_id] = time.monotonic()
        spec = driver_pb2.JobSpec()
        spec.ParseFromString(job.spec)
        return spec

    def publish_model(self, job_id: str, version: int, data: bytes, result: driver_pb2.RoundResult | None) -> None:
        """Store model ``version`` and, for a round, its rewards, in one transaction.

        Idempotent: the same model sent again for the version already stored (a driver that crashed or
        lost the connection before it heard the reply) is recognised by its hash and changes nothing.
        """
        job = self.store.job(job_id)
        if version == job.model_version and self.store.model_sha256(job_id, version) == hashlib.sha256(data).hexdigest():
            log.info("job %s: model version %d was already stored; nothing to do", job_id, version)
            return
        if job.state not in ("waiting_model", "running"):
            raise StateError(f"job {job_id} is {job.state}")
        expected = job.model_version + 1
        if version != expected:
            raise StateError(f"job {job_id} expects model version {expected}, got {version}")
        rec: dict = {}
        if version >= 1:
            rec = self.store.round(job_id, version) or {}
            if rec.get("state") != "ready":
                raise StateError(f"round {version} of job {job_id} is not closed yet")
        res = None
        rows: list[LedgerRow] = []
        head = None
        if result is not None and version >= 1:
            res = {"accuracy": result.accuracy, "loss": result.loss, "cohort_values": dict(result.cohort_values)}
            rows, head = round_rows(self.store, self.signing_key, self.check_token_free(job_id), job_id, version, rec["record"], result)
        crash_point("publish_received")
        self.store.put_model(job_id, version, data, hashlib.sha256(data).hexdigest(), res, [r.to_record() for r in rows], head)
        crash_point("published")
        self.published.setdefault(job_id, asyncio.Event()).set()  # receipts reach each node with its next pull

    def job_status(self, job_id: str) -> driver_pb2.JobStatus:
        job = self.store.job(job_id)
        version = max(job.model_version, 0)
        sha = self.store.model_sha256(job_id, job.model_version) if job.model_version >= 0 else None
        return driver_pb2.JobStatus(job_id=job.id, state=job.state, round=job.round, model_version=version, message=job.message, model_sha256=sha or "")

    async def cancel_job(self, job_id: str, reason: str) -> None:
        """End a job for good: its open round is dropped, and nothing is paid for rounds not published."""
        job = self.store.job(job_id)
        if job.state not in ("waiting_model", "running"):
            raise StateError(f"job {job_id} is {job.state}; only a waiting or running job can be cancelled")
        runner = self.runners.pop(job_id, None)
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        message = reason[:500] or "cancelled by its driver"
        self.store.set_job(job_id, state="cancelled", message=message)
        self._released.pop(job_id, None)
        self._emit(job_id, driver_pb2.JobEvent(kind=EventKind.JOB_EVENT_KIND_JOB_CANCELLED, round=job.round, message=message))
        log.info("job %s cancelled: %s", job_id, message)

    def check_token_free(self, job_id: str) -> driver_pb2.JobSpec:
        spec = driver_pb2.JobSpec()
        spec.ParseFromString(self.store.job(job_id).spec)
        return spec

    def cohort_sums(self, job_id: str, rnd: int, k: int) -> tuple[list[list[str]], list[tuple[int, int]]]:
        rec = self.store.round(job_id, rnd)
        if rec is None:
            raise StateError(f"round {rnd} of job {job_id} is not closed yet")
        cohorts = rec["record"]["cohorts"]
        small = [c for c in cohorts if len(c) < k]
        if small:  # rounds are saved with merged cohorts, so this is the last line of defence
            raise StateError(f"refusing to release a sum of {len(small[0])} contributors (cohort size k = {k})")
        if rec["state"] != "ready":
            raise StateError(f"round {rnd} of job {job_id} was published: its sums are gone")
        return cohorts, self.store.cohort_sum_index(job_id, rnd)

    async def watch(self, job_id: str) -> AsyncIterator[driver_pb2.JobEvent]:
        q: asyncio.Queue[driver_pb2.JobEvent] = asyncio.Queue()
        self.watchers.setdefault(job_id, []).append(q)
        try:
            job = self.store.job(job_id)
            rec = self.store.round(job_id, job.model_version + 1)
            if job.state == "done":
                yield driver_pb2.JobEvent(kind=EventKind.JOB_EVENT_KIND_JOB_DONE, round=job.round)
                return
            if job.state in ("failed", "cancelled"):
                kind = EventKind.JOB_EVENT_KIND_JOB_FAILED if job.state == "failed" else EventKind.JOB_EVENT_KIND_JOB_CANCELLED
                yield driver_pb2.JobEvent(kind=kind, round=job.round, message=job.message)
                return
            if rec is not None and rec["state"] == "ready":
                yield self._ready_event(job_id, job.model_version + 1, rec["record"])
            while True:
                ev = await q.get()
                yield ev
                if ev.kind in ENDED:
                    return
        finally:
            self.watchers[job_id].remove(q)
            self.driver_seen[job_id] = time.monotonic()

    def _emit(self, job_id: str, ev: driver_pb2.JobEvent) -> None:
        for q in self.watchers.get(job_id, []):
            q.put_nowait(ev)

    @staticmethod
    def _ready_event(job_id: str, rnd: int, record: dict) -> driver_pb2.JobEvent:
        return driver_pb2.JobEvent(
            kind=EventKind.JOB_EVENT_KIND_SUMS_READY,
            round=rnd,
            participants=record["participants"],
            cohorts=[driver_pb2.Cohort(members=c) for c in record["cohorts"]],
            bytes_up=record["bytes_up"],
            bytes_down=record["bytes_down"],
            seconds=record["seconds"],
            node_status=record["node_status"],
            epsilon=record.get("epsilon", {}),
            train_seconds=record.get("train_seconds", {}),
            bytes_up_by_node=record.get("bytes_up_by_node", {}),
            bytes_down_by_node=record.get("bytes_down_by_node", {}),
        )

    # ---- rounds --------------------------------------------------------------------------------
    async def _run_job(self, job_id: str) -> None:
        try:
            await self._drive(job_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a job's failure must not take the server down
            log.exception("job %s failed", job_id)
            self.store.set_job(job_id, state="failed", message=str(exc))
            self._emit(job_id, driver_pb2.JobEvent(kind=EventKind.JOB_EVENT_KIND_JOB_FAILED, message=str(exc)))

    async def _drive(self, job_id: str) -> None:
        published = self.published[job_id]
        spec = driver_pb2.JobSpec()
        spec.ParseFromString(self.store.job(job_id).spec)
        while True:
            job = self.store.job(job_id)
            if job.state == "waiting_model":
                published.clear()
                if not await self._await_driver(job_id, spec, published):
                    return
                continue
            rnd = job.model_version + 1
            if rnd > spec.rounds:
                self.store.set_job(job_id, state="done")
                self._released.pop(job_id, None)
                self._emit(job_id, driver_pb2.JobEvent(kind=EventKind.JOB_EVENT_KIND_JOB_DONE, round=spec.rounds))
                log.info("job %s done", job_id)
                return
            rec = self.store.round(job_id, rnd)
            if rec is None or rec["state"] != "ready":
                for attempt in range(1, MAX_ATTEMPTS + 1):
                    record = await self._run_round(job_id, spec, rnd, job.model_version, attempt)
                    if record is not None:
                        break
                    hopeless = self._declined_out(job_id, spec)
                    if hopeless:
                        self.store.set_job(job_id, state="failed", message=hopeless)
                        self._emit(job_id, driver_pb2.JobEvent(kind=EventKind.JOB_EVENT_KIND_JOB_FAILED, round=rnd, message=hopeless))
                        return
                    self._emit(job_id, driver_pb2.JobEvent(kind=EventKind.JOB_EVENT_KIND_ROUND_RETRY, round=rnd, message=f"attempt {attempt} gathered too few nodes"))
                else:
                    msg = f"round {rnd} failed {MAX_ATTEMPTS} times: fewer than min_nodes={spec.min_nodes} nodes reported; start more nodes"
                    self.store.set_job(job_id, state="failed", message=msg)
                    self._emit(job_id, driver_pb2.JobEvent(kind=EventKind.JOB_EVENT_KIND_JOB_FAILED, round=rnd, message=msg))
                    return
                self._emit(job_id, self._ready_event(job_id, rnd, record))
            published.clear()
            if self.store.job(job_id).model_version < rnd and not await self._await_driver(job_id, spec, published):
                return

    async def _await_driver(self, job_id: str, spec: driver_pb2.JobSpec, published: asyncio.Event) -> bool:
        """Wait for the driver's next publish; False: no driver was attached for the job's lease, so it is cancelled."""
        lease = spec.driver_lease_seconds or 600.0
        while not published.is_set():
            try:
                await asyncio.wait_for(published.wait(), timeout=min(lease, 1.0))
            except asyncio.TimeoutError:
                idle = time.monotonic() - self.driver_seen.setdefault(job_id, time.monotonic())
                if not self.watchers.get(job_id) and idle > lease:
                    self.runners.pop(job_id, None)  # this very task: cancel_job must not wait for itself
                    await self.cancel_job(job_id, f"no driver attached for {idle:.0f} s (lease {lease:g} s): resume it in time with `fedgpu train --resume`")
                    return False
        return True

    def _declined_out(self, job_id: str, spec: driver_pb2.JobSpec) -> str | None:
        """A message when too few capable nodes are left because the others declined the job for good."""
        declined = self.store.declined(job_id)
        if not declined:
            return None
        capable = {n for n, c in self.node_caps.items() if spec.model in c.get("models", []) and spec.dataset in c.get("datasets", [])}
        if len(capable - set(declined)) >= max(spec.min_nodes, spec.cohort_size):
            return None
        reasons = sorted({r.split(":")[0] for r in declined.values()})
        example = next(iter(declined.values()))
        return (
            f"too few nodes left: {len(declined)} of {len(capable)} capable nodes declined the job ({', '.join(reasons)}), "
            f"min_nodes is {spec.min_nodes}. First reason: {example}"
        )

    async def _wait_for_nodes(self, job_id: str, spec: driver_pb2.JobSpec, timeout: float) -> list[str]:
        end = time.monotonic() + timeout
        while True:
            nodes = self._eligible(job_id, spec.model, spec.dataset)
            if len(nodes) >= spec.nodes_per_round or (time.monotonic() >= end and len(nodes) >= max(spec.min_nodes, 1)):
                return nodes
            if time.monotonic() >= end + timeout:
                return nodes
            self.node_available.clear()
            try:
                await asyncio.wait_for(self.node_available.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass

    def together(self, job_id: str) -> Counter[frozenset[str]]:
        """How often each pair of nodes shared a released cohort in this job (cohort assignment keeps it
        low). The history is read from the store once per job and process, so it survives a restart,
        and is then kept up to date as rounds close: no round re-reads every earlier round's record."""
        history = self._released.get(job_id)
        if history is None:
            history = self._released[job_id] = {r["round"]: r["record"]["cohorts"] for r in self.store.rounds_of(job_id)}
        return co_membership(history.values())

    def released(self, job_id: str, rnd: int, cohorts: list[list[str]]) -> None:
        """Record a closed round's cohorts (a redone round replaces its earlier attempt, as in the store)."""
        if job_id in self._released:
            self._released[job_id][rnd] = cohorts

    async def _run_round(self, job_id: str, spec: driver_pb2.JobSpec, rnd: int, version: int, attempt: int) -> dict | None:
        nodes = await self._wait_for_nodes(job_id, spec, timeout=min(spec.deadline_seconds, 30.0))
        if len(nodes) < max(spec.min_nodes, spec.cohort_size):
            log.info("job %s round %d: %d eligible nodes, need %d", job_id, rnd, len(nodes), spec.min_nodes)
            return None
        rng = random.Random(spec.seed * 1_000_003 + rnd * 1009 + attempt)
        chosen = rng.sample(nodes, min(len(nodes), spec.nodes_per_round))
        together = self.together(job_id)
        cohorts = assign_cohorts(chosen, spec.cohort_size, random.SystemRandom(), together)
        enc = spec.encryption
        adder = crypto.adder(enc.scheme, enc.params)
        layout = crypto.ChunkLayout(int(spec.num_params), int(enc.values_per_chunk))
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
            acc_dir=self.spool / f"{job_id}-r{rnd}-{attempt_id}",
        )
        for ci, members in enumerate(cohorts):
            for node_id in members:
                task = node_pb2.Task(
                    task_id=uuid.uuid4().hex,
                    job_id=job_id,
                    round=rnd,
                    model_version=version,
                    model=spec.model,
                    dataset=spec.dataset,
                    training=spec.training,
                    privacy=spec.privacy,
                    encryption=enc,
                    deadline_ms=int(rs.deadline * 1000),
                    num_params=spec.num_params,
                    num_chunks=layout.num_chunks,
                )
                # Each node gets its own seed so honest nodes do not train in lockstep; from its name (not
                # its fresh random key) so that a rerun with the same seed and node names trains the same.
                name = self.node_caps.get(node_id, {}).get("name", node_id)
                node_salt = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
                task.training.seed = (spec.seed * 7919 + rnd * 104729 + node_salt) % (2**63)
                ts = TaskState(task=task, node_id=node_id, cohort=ci, bytes_down=len(task.SerializeToString()))
                rs.tasks[task.task_id] = ts
                self.tasks[task.task_id] = (rs, ts)
                self.pending[node_id] = task
                self.job_nodes.setdefault(job_id, set()).add(node_id)
                self.wakeups.setdefault(node_id, asyncio.Event()).set()
        rs.acc_dir.mkdir(parents=True)
        self.rounds[job_id] = rs
        self._emit(job_id, driver_pb2.JobEvent(kind=EventKind.JOB_EVENT_KIND_ROUND_OPENED, round=rnd, participants=chosen))
        log.info("job %s round %d (attempt %d): %d nodes in %d cohorts", job_id, rnd, attempt, len(chosen), len(cohorts))
        try:
            await asyncio.wait_for(rs.done.wait(), timeout=spec.deadline_seconds)
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:
            self._drop_round(rs)
            raise
        return self._close_round(rs, spec)

    def _drop_round(self, rs: RoundState) -> None:
        """Forget an open round (its job was cancelled): its tasks are refused from now on."""
        for tid, ts in rs.tasks.items():
            self.tasks.pop(tid, None)
            if self.pending.get(ts.node_id) is ts.task:
                self.pending.pop(ts.node_id, None)
            (self.spool / f"{tid}.part").unlink(missing_ok=True)
        self.rounds.pop(rs.job_id, None)
        shutil.rmtree(rs.acc_dir, ignore_errors=True)

    def _close_round(self, rs: RoundState, spec: driver_pb2.JobSpec) -> dict | None:
        for tid, ts in rs.tasks.items():
            self.tasks.pop(tid, None)
            if self.pending.get(ts.node_id) is ts.task:
                self.pending.pop(ts.node_id, None)
            if ts.status in ("assigned", "uploading"):
                ts.status, ts.message = "failed", "missed the deadline" if ts.status == "assigned" else "upload incomplete at the deadline"
                (self.spool / f"{tid}.part").unlink(missing_ok=True)
        self.rounds.pop(rs.job_id, None)
        by_cohort: list[list[str]] = [[] for _ in rs.cohorts]
        for ts in rs.tasks.values():
            if ts.status == "complete":
                by_cohort[ts.cohort].append(ts.node_id)
        complete = sum(len(c) for c in by_cohort)
        groups = merge_small([len(c) for c in by_cohort], spec.cohort_size)
        status = {ts.node_id: ts.status if ts.status == "complete" else f"{ts.status}: {ts.message}" for ts in rs.tasks.values()}
        if groups is None or complete < max(spec.min_nodes, 1):
            shutil.rmtree(rs.acc_dir, ignore_errors=True)
            log.info("job %s round %d: %d of %d nodes reported, need %d", rs.job_id, rs.round, complete, len(rs.tasks), spec.min_nodes)
            return None
        merged_members = [sorted(m for ci in g for m in by_cohort[ci]) for g in groups]

        def merged() -> Iterator[tuple[int, int, bytes]]:
            """Each released sum, one chunk at a time: the members' cohorts added together."""
            for gi, g in enumerate(groups):
                for chunk in range(rs.num_chunks):
                    acc = None
                    for ci in g:
                        p = rs.acc_path(ci, chunk)
                        if by_cohort[ci] and p.exists():
                            part = np.load(p, allow_pickle=False)
                            acc = part if acc is None else rs.adder.combine(acc, part)
                    if acc is None:
                        raise StateError("internal: a reporting cohort has an empty chunk")
                    yield gi, chunk, rs.adder.to_bytes(acc)

        participants = sorted(m for c in merged_members for m in c)
        record = {
            "participants": participants,
            "cohorts": merged_members,
            "node_status": status,
            "bytes_up": sum(ts.bytes_up for ts in rs.tasks.values()),
            "bytes_down": sum(ts.bytes_down for ts in rs.tasks.values()),
            "bytes_up_by_node": {ts.node_id: ts.bytes_up for ts in rs.tasks.values()},
            "bytes_down_by_node": {ts.node_id: ts.bytes_down for ts in rs.tasks.values()},
            "train_seconds": {ts.node_id: ts.train_seconds for ts in rs.tasks.values() if ts.status == "complete"},
            "epsilon": {ts.node_id: ts.epsilon for ts in rs.tasks.values() if ts.epsilon is not None},
            "seconds": time.time() - rs.opened_at,
            "attempt": rs.attempt,
            "attempt_id": rs.attempt_id,
        }
        try:
            self.store.save_round(rs.job_id, rs.round, rs.attempt, record, merged())
        finally:
            shutil.rmtree(rs.acc_dir, ignore_errors=True)
        crash_point("round_saved")
        self.released(rs.job_id, rs.round, merged_members)
        log.info("job %s round %d closed: %d nodes in %d cohorts", rs.job_id, rs.round, complete, len(groups))
        return record
