"""The aggregator apart from gRPC: one façade over the parts, each owning its own state.

    admission  who may register or submit a job, and how fast: rate limits, allow-list, driver tokens
    registry   nodes: keys, capabilities, liveness, concurrent calls per node, the Verifier
    uploads    tasks in flight, long-polls, declines, chunk checks, the spool, folding into sums
    rounds     opening and closing round attempts (its nodes picked by ``selection``), released sums, the cohort history
    capacity   each node's measured record (store), and its history in each job (selection's input)
    jobs       submit and tokens, the state machine with retries, the driver lease, publish, cancel
    events     the watchers of each job

Dependencies run one way: jobs -> rounds -> uploads -> registry -> admission, and events below them all.

It holds no key: updates are added with the job's key-free ``Adder`` as they complete, one
accumulator per (cohort, chunk). An upload is spooled to disk chunk by chunk and added into its
cohort only when it is complete and verified, so a node that vanishes mid-upload leaves no trace in
any sum, and memory stays one encrypted model per cohort whatever the number of nodes.

Crash consistency: every round attempt has its own id and spool folder, and a process starts by
deleting the spool but for the released sums that a ready round names. What an attempt accumulated
exists only inside the process that opened it; a closed round's sums are written whole to their own
folder before the transaction that marks the round ready (fedgpu.aggregator.released). A restart
therefore redoes the open round from nothing and can never add a killed attempt's leftovers into a
released sum.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from pathlib import Path

from fedgpu.aggregator import ledger
from fedgpu.aggregator.admission import Admission, AdmissionPolicy
from fedgpu.aggregator.capacity import CapacityBook
from fedgpu.aggregator.events import Events
from fedgpu.aggregator.jobs import Jobs
from fedgpu.aggregator.metrics import Counters, Snapshot
from fedgpu.aggregator.registry import LIVE_GRACE_S, NodeRegistry
from fedgpu.aggregator.rounds import Rounds
from fedgpu.aggregator.store import Store
from fedgpu.aggregator.uploads import Uploads
from fedgpu.capacity import SignedRecord, sign_record
from fedgpu.errors import FedgpuError
from fedgpu.proto.fedgpu.v1 import node_pb2
from fedgpu.wire.records import (
    JobEvent,
    JobSpec,
    JobStatus,
    LedgerReceipt,
    RoundResult,
    Task,
    UploadProgress,
)


class Aggregator:
    """What the servicers call: each method hands its request to the part that owns the state."""

    def __init__(self, store: Store, spool_dir: Path, admission: AdmissionPolicy | None = None, live_grace: float = LIVE_GRACE_S) -> None:
        self.store = store
        self.spool = spool_dir
        self.booted_ms = int(time.time() * 1000)
        self.admission = Admission(admission)
        self.registry = NodeRegistry(store, self.booted_ms, self.admission, live_grace)
        self.uploads = Uploads(store, self.registry, spool_dir)  # wipes the spool: earlier attempts are void
        self.events = Events()
        self.capacity = CapacityBook(store)
        self.rounds = Rounds(store, self.registry, self.uploads, self.events, self.capacity)
        self.jobs = Jobs(store, self.registry, self.rounds, self.events)
        self.counters = Counters()  # what --metrics serves, with the gauges of snapshot()

    async def start(self) -> None:
        """Load the registered nodes and resume every running job (its open round is redone)."""
        self.registry.load()
        self.rounds.sweep()
        await self.jobs.start()

    async def stop(self) -> None:
        await self.jobs.stop()

    # ---- nodes ---------------------------------------------------------------------------------
    def register(self, req: node_pb2.RegisterRequest, source: str) -> str:
        node_id = self.registry.register(req, source)
        self.counters.registrations += 1
        return node_id

    def authenticate(self, method: str, req: object) -> str:
        return self.registry.authenticate(method, req)

    def call_slot(self, node_id: str, method: str) -> AbstractContextManager[None]:
        return self.registry.call_slot(node_id, method)

    def receipts(self, node_id: str, after: int) -> list[LedgerReceipt]:
        return ledger.receipts(self.store, self.jobs.signing_key, self.registry.chain(node_id), after)

    def rotate_key(self, req: node_pb2.RotateKeyRequest) -> tuple[str, str]:
        return self.registry.rotate_key(req, self.uploads.busy())

    async def pull_task(self, node_id: str, wait_seconds: float) -> Task | None:
        return await self.uploads.pull_task(node_id, wait_seconds)

    def decline(self, node_id: str, req: node_pb2.DeclineTaskRequest) -> None:
        self.uploads.decline(node_id, req)

    def model_for_node(self, node_id: str, job_id: str, version: int) -> bytes:
        return self.uploads.model_for_node(node_id, job_id, version)

    def upload_status(self, node_id: str, task_id: str) -> UploadProgress:
        return self.uploads.upload_status(node_id, task_id)

    async def upload(self, stream: AsyncIterator[tuple[node_pb2.UpdateChunk, int]]) -> UploadProgress:
        def received(size: int) -> None:
            self.counters.bytes_in += size

        try:
            progress = await self.uploads.upload(stream, received)
        except FedgpuError:
            self.counters.uploads_refused += 1
            raise
        if progress.complete:
            self.counters.uploads_accepted += 1
        return progress

    # ---- drivers -------------------------------------------------------------------------------
    def check_submitter(self, submit_token: str) -> None:
        self.admission.check_driver(submit_token)

    def submit_job(self, spec: JobSpec, protocol_version: int) -> tuple[str, str]:
        return self.jobs.submit_job(spec, protocol_version)

    def check_token(self, job_id: str, token: str) -> JobSpec:
        return self.jobs.check_token(job_id, token)

    def publish_model(self, job_id: str, version: int, data: bytes, result: RoundResult | None) -> None:
        self.jobs.publish_model(job_id, version, data, result)

    def job_status(self, job_id: str) -> JobStatus:
        return self.jobs.job_status(job_id)

    async def cancel_job(self, job_id: str, reason: str) -> None:
        await self.jobs.cancel_job(job_id, reason)

    def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        return self.jobs.watch(job_id)

    def model_bytes(self, job_id: str, version: int) -> bytes:
        return self.uploads.model_bytes(job_id, version)

    def cohort_sums(self, job_id: str, rnd: int, k: int) -> tuple[list[list[str]], list[tuple[int, int]]]:
        return self.rounds.cohort_sums(job_id, rnd, k)

    def cohort_sum(self, job_id: str, rnd: int, cohort: int, chunk: int) -> tuple[bytes, bytes]:
        """One chunk of a released sum and its SHA-256."""
        return self.rounds.cohort_sum(job_id, rnd, cohort, chunk)

    # ---- measured capacity ---------------------------------------------------------------------
    def node_records(self, node_ids: list[str]) -> list[SignedRecord]:
        """Each registered node's measured record (``node_ids``: only those), signed by the ledger key."""
        return [sign_record(self.jobs.signing_key, r) for r in self.capacity.records(node_ids)]

    # ---- metrics -------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The numbers --metrics serves; call it on the aggregator's event loop."""
        return Snapshot(len(self.registry.pubkeys), len(self.registry.live_nodes()), self.jobs.rounds_closed, Counters(**vars(self.counters)))

    # ---- cohort history ------------------------------------------------------------------------
    def together(self, job_id: str) -> Counter[frozenset[str]]:
        return self.rounds.together(job_id)

    def released(self, job_id: str, rnd: int, cohorts: list[list[str]]) -> None:
        self.rounds.released(job_id, rnd, cohorts)


__all__ = ["Aggregator"]
