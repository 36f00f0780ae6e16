"""Tasks in flight and their uploads: offered, pulled, declined, checked chunk by chunk, spooled, folded.

It owns the task table of the open round attempts (task id -> its attempt and state), the task
each node is offered, the long-poll wake-ups, which nodes ever had a task in a job (they may
download its model), the spool of partial uploads, and a one-copy cache of the newest model.
An upload is spooled chunk by chunk and added into its cohort's sum only when complete and
verified, so a node that vanishes mid-upload leaves no trace in any sum. The spool is wiped at
start but for its ``released/`` folder (closed rounds' sums, fedgpu.aggregator.released): whatever
else an earlier process spooled belongs to attempts it never closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fedgpu import crypto
from fedgpu.aggregator.attempt import RoundState, TaskState, TaskStatus
from fedgpu.aggregator.registry import NodeRegistry
from fedgpu.aggregator.released import RELEASED, flush_ahead, keep_digest
from fedgpu.aggregator.store import Store
from fedgpu.errors import (
    AuthError,
    FedgpuError,
    NotFoundError,
    ProtocolError,
    StateError,
)
from fedgpu.faults import crash_point
from fedgpu.proto.fedgpu.v1 import node_pb2
from fedgpu.wire import chunks
from fedgpu.wire.records import Task, UploadProgress

log = logging.getLogger("fedgpu.aggregator")

NOT_NEEDED_KEPT = 10_000  # tasks closed without their update that are still answered "not needed"


class Uploads:
    def __init__(self, store: Store, registry: NodeRegistry, spool_dir: Path) -> None:
        self.store = store
        self.registry = registry
        self.spool = spool_dir
        self.released_dir = spool_dir / RELEASED  # closed rounds' sums: the store's rows name them (Rounds.sweep keeps those)
        # Whatever else an earlier process spooled belongs to attempts it never closed: discard it all.
        self.spool.mkdir(parents=True, exist_ok=True)
        for p in self.spool.iterdir():
            if p != self.released_dir:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        self.pending: dict[str, Task] = {}                 # node -> task to deliver
        self.wakeups: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, tuple[RoundState, TaskState]] = {}
        self.job_nodes: dict[str, set[str]] = {}           # job -> nodes ever given a task
        # Tasks an over-selected round closed without (task -> node), newest last: their updates are answered
        # "not needed" instead of "unknown task". Bounded: an older straggler just meets NOT_FOUND.
        self.not_needed: dict[str, str] = {}
        self._model_cache: dict[str, tuple[int, bytes]] = {}

    # ---- offering and pulling ------------------------------------------------------------------
    def offer(self, rs: RoundState, ts: TaskState) -> None:
        """Put a new task of an opening round in front of its node and wake the node's long-poll."""
        task = ts.task
        rs.tasks[task.task_id] = ts
        self.tasks[task.task_id] = (rs, ts)
        self.pending[ts.node_id] = task
        self.job_nodes.setdefault(rs.job_id, set()).add(ts.node_id)
        self.wakeups.setdefault(ts.node_id, asyncio.Event()).set()

    def busy(self) -> set[str]:
        """Nodes working on a task of an open round."""
        return {t.node_id for _, t in self.tasks.values() if t.status.open}

    async def pull_task(self, node_id: str, wait_seconds: float) -> Task | None:
        """The node's task as soon as it has one, or None after ``wait_seconds`` (at most 60). The node
        is live while this runs (``registry.pulling``: at most ``max_calls_per_node`` at once)."""
        deadline = time.monotonic() + min(max(wait_seconds, 0.0), 60.0)
        ev = self.wakeups.setdefault(node_id, asyncio.Event())
        with self.registry.pulling(node_id):
            while True:
                task = self.pending.get(node_id)
                if task is not None:
                    return task
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                ev.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), timeout=min(remaining, 5.0))

    def decline(self, node_id: str, req: node_pb2.DeclineTaskRequest) -> None:
        rs, ts = self._task(node_id, req.task_id)
        reason = node_pb2.DeclineReason.Name(req.reason).removeprefix("DECLINE_REASON_").lower()
        ts.status, ts.message = TaskStatus.DECLINED, f"{reason}: {req.message[:500]}"
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

    # ---- models --------------------------------------------------------------------------------
    def model_for_node(self, node_id: str, job_id: str, version: int) -> bytes:
        if node_id not in self.job_nodes.get(job_id, set()):
            raise AuthError(f"node {node_id} has no task in job {job_id}")
        data = self.model_bytes(job_id, version)
        for rs, ts in self.tasks.values():  # the tasks of the job's open round, if any
            if rs.job_id == job_id and ts.node_id == node_id:
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
    def upload_status(self, node_id: str, task_id: str) -> UploadProgress:
        if self.not_needed.get(task_id) == node_id:
            return UploadProgress(received=0, complete=False, not_needed=True)
        _, ts = self._task(node_id, task_id)
        return UploadProgress(received=ts.received, complete=ts.status is TaskStatus.COMPLETE)

    async def upload(self, stream: AsyncIterator[tuple[node_pb2.UpdateChunk, int]], received: Callable[[int], None] | None = None) -> UploadProgress:
        """Take an upload stream of (message, its size on the wire); ``received`` hears each size (metrics), refused ones too."""
        ts: TaskState | None = None
        with contextlib.ExitStack() as slot:
            async for msg, size in stream:
                if received is not None:
                    received(size)
                node_id = self.registry.authenticate("UploadUpdate", msg)
                if ts is None:  # the first message says whose upload this is: one of its max_calls_per_node
                    if self.not_needed.get(msg.task_id) == node_id:  # a straggler of an over-selected round: a typed reply, no error
                        return UploadProgress(received=0, complete=False, not_needed=True)
                    slot.enter_context(self.registry.call_slot(node_id, "UploadUpdate"))
                rs, ts = self._task(node_id, msg.task_id)
                self._take_chunk(rs, ts, msg, size)
        if ts is None:
            raise ProtocolError("empty upload stream")
        return UploadProgress(received=ts.received, complete=ts.status is TaskStatus.COMPLETE)

    def _take_chunk(self, rs: RoundState, ts: TaskState, msg: node_pb2.UpdateChunk, size: int) -> None:
        try:
            self._accept_chunk(rs, ts, msg, size)
        except (AuthError, StateError):
            raise
        except ProtocolError as exc:
            # The task's own authenticated node sent a malformed update: its task fails, the round goes on.
            self._fail_task(rs, ts, str(exc))
            raise

    def _accept_chunk(self, rs: RoundState, ts: TaskState, msg: node_pb2.UpdateChunk, size: int) -> None:
        if ts.status is TaskStatus.COMPLETE:
            raise StateError(f"task {ts.task.task_id} is already complete: replayed or duplicate chunk")
        if not ts.status.open:
            raise StateError(f"task {ts.task.task_id} is {ts.status.value}; its update is no longer accepted")
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
        folder = self.part_path(ts.task.task_id)
        if ts.received == 0:
            ts.upload_started = time.monotonic()
            folder.mkdir(exist_ok=True)
        spooled = folder / str(msg.chunk.index)
        spooled.write_bytes(data)  # a file per chunk: a cohort's first update moves in, uncopied
        keep_digest(spooled, msg.chunk.sha256)  # checked above: served with it, not hashed again (released.py)
        ts.received += 1
        ts.bytes_up += size
        ts.status = TaskStatus.UPLOADING
        ts.train_seconds = max(ts.train_seconds, msg.train_seconds)
        ts.encrypt_seconds = max(ts.encrypt_seconds, msg.encrypt_seconds)
        if msg.epsilon > 0:
            ts.epsilon = msg.epsilon
        if ts.received == ts.task.num_chunks:
            self._fold(rs, ts, folder)
            crash_point("upload_folded")
        else:
            crash_point("upload_chunk")

    def part_path(self, task_id: str) -> Path:
        """The folder of a task's spooled chunks."""
        return self.spool / f"{task_id}.part"

    def _discard(self, task_id: str) -> None:
        shutil.rmtree(self.part_path(task_id), ignore_errors=True)

    def _fail_task(self, rs: RoundState, ts: TaskState, message: str) -> None:
        if ts.status.open:
            ts.status, ts.message = TaskStatus.FAILED, message
            self._discard(ts.task.task_id)
            self.pending.pop(ts.node_id, None)
            log.info("node %s: update rejected: %s", ts.node_id, message)
            rs.check_done()

    def _fold(self, rs: RoundState, ts: TaskState, path: Path) -> None:
        """Add a complete upload into its cohort's sum, one chunk in memory at a time, then forget it."""
        t0 = time.monotonic()
        moved = [m for i in range(ts.received) if (m := rs.accumulate(ts.cohort, i, path / str(i))) is not None]
        self._discard(ts.task.task_id)
        if moved:  # likely released as they are: flushed to disk now, not at the close
            asyncio.get_running_loop().run_in_executor(None, flush_ahead, moved)
        ts.fold_seconds = time.monotonic() - t0
        ts.upload_seconds = time.monotonic() - ts.upload_started
        ts.status = TaskStatus.COMPLETE
        self.pending.pop(ts.node_id, None)
        rs.check_done()

    # ---- a round's end -------------------------------------------------------------------------
    def retire(self, rs: RoundState, at_deadline: bool) -> None:
        """Forget a round's tasks: refused from now on. At its deadline an unfinished task fails;
        when its job is cancelled (``at_deadline=False``) every spooled part goes, and no status changes.
        Before the deadline (the attempt had ``enough`` updates) an unfinished task fails without counting as a miss."""
        early = time.time() < rs.deadline
        for tid, ts in rs.tasks.items():
            self.tasks.pop(tid, None)
            if self.pending.get(ts.node_id) is ts.task:
                self.pending.pop(ts.node_id, None)
            if not at_deadline:
                self._discard(tid)
            elif ts.status.open and early:
                ts.status, ts.message = TaskStatus.FAILED, "not needed: the round had enough updates before its deadline"
                self._discard(tid)
                self.not_needed[tid] = ts.node_id
                while len(self.not_needed) > NOT_NEEDED_KEPT:
                    del self.not_needed[next(iter(self.not_needed))]
            elif ts.status.open:
                ts.status, ts.message = TaskStatus.FAILED, "missed the deadline" if ts.status is TaskStatus.ASSIGNED else "upload incomplete at the deadline"
                ts.missed_deadline = True
                self._discard(tid)
                self.registry.missed_deadline(ts.node_id)  # no task again until it pulls after this


__all__ = [
    "NOT_NEEDED_KEPT",
    "Uploads",
]
