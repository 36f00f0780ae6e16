"""Jobs: submitted with a token, driven round after round with retries, published, cancelled.

It owns each job's runner (the asyncio task of its state machine), the driver lease (when each
job's driver last called), the "a model was published" signal the state machine waits on, the job
specs parsed once per job, and the key that signs the reward ledger. The job's state itself lives
in the store: a restart resumes every running job from its last published model, and its open
round is redone (``rounds``). Events go out through ``events``; the state machine emits them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fedgpu import crypto
from fedgpu.aggregator.events import Events
from fedgpu.aggregator.ledger import load_signing_key, round_rows
from fedgpu.aggregator.registry import NodeRegistry, check_protocol
from fedgpu.aggregator.rounds import Rounds
from fedgpu.aggregator.store import Store
from fedgpu.errors import AuthError, ProtocolError, StateError
from fedgpu.faults import crash_point
from fedgpu.rewards.chain import LedgerRow
from fedgpu.wire.records import JobEvent, JobEventKind, JobSpec, JobStatus, ReplicaDispute, RoundRecord, RoundResult
from fedgpu.wire.serde import job_config, job_spec_from_bytes, job_spec_to_bytes

log = logging.getLogger("fedgpu.aggregator")

MAX_ATTEMPTS = 20          # failed attempts of one round before the job fails


class Jobs:
    def __init__(self, store: Store, registry: NodeRegistry, rounds: Rounds, events: Events) -> None:
        self.store = store
        self.registry = registry
        self.rounds = rounds
        self.events = events
        self.published: dict[str, asyncio.Event] = {}
        self.runners: dict[str, asyncio.Task[None]] = {}
        self.driver_seen: dict[str, float] = {}            # job -> when its driver last called (monotonic)
        self._specs: dict[str, JobSpec] = {}               # job -> its spec, parsed once
        self.rounds_closed = 0                             # since this process started (--metrics)

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Resume every running job: its last completed round stands, the open one is redone."""
        self.signing_key = load_signing_key(self.store)
        for job in self.store.jobs_in_state("waiting_model", "running"):
            self._start_runner(job.id)

    async def stop(self) -> None:
        # Cancelled until every runner has ended: Python 3.11's wait_for swallows a cancellation that lands
        # just as the event it waits for is set (a publish at shutdown), and the runner would go on.
        runners = list(self.runners.values())
        while not all(t.done() for t in runners):
            for t in runners:
                t.cancel()
            await asyncio.wait(runners, timeout=1.0)
        await asyncio.gather(*runners, return_exceptions=True)

    def _start_runner(self, job_id: str) -> None:
        self.published.setdefault(job_id, asyncio.Event())
        self.runners[job_id] = asyncio.create_task(self._run_job(job_id), name=f"job-{job_id}")

    def spec(self, job_id: str) -> JobSpec:
        spec = self._specs.get(job_id)
        if spec is None:
            spec = self._specs[job_id] = job_spec_from_bytes(self.store.job(job_id).spec)
        return spec

    # ---- the driver's calls --------------------------------------------------------------------
    def submit_job(self, spec: JobSpec, protocol_version: int) -> tuple[str, str]:
        check_protocol(protocol_version, "driver")
        cfg = job_config(spec, check_registry=False)  # ConfigError names the offending field; nodes check the model
        enc = spec.encryption
        crypto.adder(enc.scheme, enc.params)  # the parameters must parse
        if enc.fingerprint != crypto.context_fingerprint(enc.scheme, enc.params, enc.public_material):
            raise ProtocolError("encryption.fingerprint does not match the scheme, params and public key")
        if not 1 <= spec.num_params <= 500_000_000:
            raise ProtocolError(f"num_params {spec.num_params} out of range")
        job_id = "job-" + uuid.uuid4().hex[:12]
        token = secrets.token_hex(32)
        self.store.create_job(job_id, cfg.name, job_spec_to_bytes(spec), hashlib.sha256(token.encode()).hexdigest())
        self._specs[job_id] = spec
        self.driver_seen[job_id] = time.monotonic()
        self._start_runner(job_id)
        log.info("job %s submitted: %s on %s, %d rounds", job_id, cfg.model, cfg.dataset, cfg.rounds)
        return job_id, token

    def check_token(self, job_id: str, token: str) -> JobSpec:
        job = self.store.job(job_id)
        if not secrets.compare_digest(job.token_hash, hashlib.sha256(token.encode()).hexdigest()):
            raise AuthError(f"wrong token for job {job_id}")
        self.driver_seen[job_id] = time.monotonic()
        return self.spec(job_id)

    def publish_model(self, job_id: str, version: int, data: bytes, result: RoundResult | None) -> None:
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
        rec: dict[str, Any] = {}
        if version >= 1:
            rec = self.store.round(job_id, version) or {}
            if rec.get("state") != "ready":
                raise StateError(f"round {version} of job {job_id} is not closed yet")
        res = None
        disputes: list[ReplicaDispute] | None = None  # None: nothing to replace (not a public-data round)
        flagged: list[str] = []
        rows: list[LedgerRow] = []
        head = None
        if result is not None and version >= 1:
            res = {"accuracy": result.accuracy, "loss": result.loss, "cohort_values": dict(result.cohort_values)}
            rows, head = round_rows(self.store, self.signing_key, self.spec(job_id), job_id, version, rec["record"], result)
            disputes = self._disputes(job_id, version, rec["record"], result)
            if self.spec(job_id).public_data is not None:
                flagged = sorted(set(result.flagged[:100_000]))  # the driver sends them all each round
        crash_point("publish_received")
        self.store.put_model(job_id, version, data, hashlib.sha256(data).hexdigest(), res, [r.to_record() for r in rows], head, disputes, flagged)
        crash_point("published")
        self.rounds.published(job_id, version)  # after the commit: a kill before it leaves a folder the next start sweeps
        if disputes is not None:
            self.rounds.verification_published(job_id, disputes, set(flagged))
        self.published.setdefault(job_id, asyncio.Event()).set()  # receipts reach each node with its next pull

    def _disputes(self, job_id: str, version: int, record: RoundRecord, result: RoundResult) -> list[ReplicaDispute] | None:
        """A public-data round's disputed tasks, checked: each is re-run by a third node next round (fedgpu.aggregator.replication).
        None on other jobs: they have no verification state to replace."""
        spec = self.spec(job_id)
        if spec.public_data is None:
            if result.disputes:
                raise ProtocolError("disputes are for public-data jobs only")
            return None
        ran = set(record.participants)
        for d in result.disputes:
            if len(set(d.members)) != 2 or not set(d.members) <= ran or d.round != version or d.model_version != version - 1:
                raise ProtocolError(f"a dispute of round {version} names two of its participants and model version {version - 1}")
        return [dataclasses.replace(d, prefer=d.prefer[:1000]) for d in result.disputes[: max(spec.nodes_per_round // 2, 1)]]

    def job_status(self, job_id: str) -> JobStatus:
        job = self.store.job(job_id)
        version = max(job.model_version, 0)
        sha = self.store.model_sha256(job_id, job.model_version) if job.model_version >= 0 else None
        return JobStatus(job_id=job.id, state=job.state, round=job.round, model_version=version, message=job.message, model_sha256=sha or "")

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
        self.rounds.forget(job_id)
        self.events.emit(job_id, JobEvent(kind=JobEventKind.JOB_CANCELLED, round=job.round, message=message))
        log.info("job %s cancelled: %s", job_id, message)

    def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The job's events: first where it stands (ended, or sums waiting), then each as it happens."""

        def backlog() -> tuple[list[JobEvent], bool]:
            job = self.store.job(job_id)
            rec = self.store.round(job_id, job.model_version + 1)
            if job.state == "done":
                return [JobEvent(kind=JobEventKind.JOB_DONE, round=job.round)], True
            if job.state in ("failed", "cancelled"):
                kind = JobEventKind.JOB_FAILED if job.state == "failed" else JobEventKind.JOB_CANCELLED
                return [JobEvent(kind=kind, round=job.round, message=job.message)], True
            if rec is not None and rec["state"] == "ready":
                return [JobEvent.sums_ready(job.model_version + 1, rec["record"])], False
            return [], False

        def detached() -> None:
            self.driver_seen[job_id] = time.monotonic()

        return self.events.watch(job_id, backlog, detached)

    # ---- the state machine ---------------------------------------------------------------------
    async def _run_job(self, job_id: str) -> None:
        try:
            await self._drive(job_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a job's failure must not take the server down
            log.exception("job %s failed", job_id)
            self.store.set_job(job_id, state="failed", message=str(exc))
            self.events.emit(job_id, JobEvent(kind=JobEventKind.JOB_FAILED, message=str(exc)))

    def _fail(self, job_id: str, rnd: int, message: str) -> None:
        self.store.set_job(job_id, state="failed", message=message)
        self.events.emit(job_id, JobEvent(kind=JobEventKind.JOB_FAILED, round=rnd, message=message))

    async def _drive(self, job_id: str) -> None:
        published = self.published[job_id]
        spec = self.spec(job_id)
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
                self.rounds.forget(job_id)
                self.events.emit(job_id, JobEvent(kind=JobEventKind.JOB_DONE, round=spec.rounds))
                log.info("job %s done", job_id)
                return
            rec = self.store.round(job_id, rnd)
            if rec is None or rec["state"] != "ready":
                for attempt in range(1, MAX_ATTEMPTS + 1):
                    record = await self.rounds.run(job_id, spec, rnd, job.model_version, attempt, lambda: self._unservable(spec))
                    if record is not None:
                        break
                    hopeless = self._declined_out(job_id, spec) or self._unservable(spec)
                    if hopeless:
                        self._fail(job_id, rnd, hopeless)
                        return
                    waiting = f"attempt {attempt} gathered too few nodes: {self._census(job_id, spec)}"
                    log.info("job %s round %d: %s", job_id, rnd, waiting)
                    self.events.emit(job_id, JobEvent(kind=JobEventKind.ROUND_RETRY, round=rnd, message=waiting))
                else:
                    self._fail(job_id, rnd, f"round {rnd} failed {MAX_ATTEMPTS} times: fewer than min_nodes={spec.min_nodes} nodes reported; start more nodes")
                    return
                self.rounds_closed += 1
                self.events.emit(job_id, JobEvent.sums_ready(rnd, record))
            published.clear()
            if self.store.job(job_id).model_version < rnd and not await self._await_driver(job_id, spec, published):
                return

    async def _await_driver(self, job_id: str, spec: JobSpec, published: asyncio.Event) -> bool:
        """Wait for the driver's next publish; False: no driver was attached for the job's lease, so it is cancelled."""
        lease = spec.driver_lease_seconds or 600.0
        while not published.is_set():
            try:
                await asyncio.wait_for(published.wait(), timeout=min(lease, 1.0))
            except TimeoutError:
                idle = time.monotonic() - self.driver_seen.setdefault(job_id, time.monotonic())
                if not self.events.attached(job_id) and idle > lease:
                    self.runners.pop(job_id, None)  # this very task: cancel_job must not wait for itself
                    await self.cancel_job(job_id, f"no driver attached for {idle:.0f} s (lease {lease:g} s): resume it in time with `fedgpu train --resume`")
                    return False
        return True

    def _live_caps(self) -> dict[str, dict[str, Any]]:
        """The capabilities of the nodes seen within the liveness timeout."""
        live = self.registry.live_nodes()
        return {n: c for n, c in self.registry.node_caps.items() if n in live}

    def _census(self, job_id: str, spec: JobSpec) -> str:
        """Who could take the job's tasks, in counts: what the driver sees while the job waits for nodes."""
        live = self._live_caps()
        with_model = {n for n, c in live.items() if spec.model in c.get("models", [])}
        capable = {n for n in with_model if spec.dataset_capability in live[n].get("datasets", [])}
        declined = capable & set(self.store.declined(job_id))
        busy = (capable - declined) & self.rounds.uploads.busy()
        ready = len(capable) - len(declined) - len(busy)
        return (
            f"{ready} ready of the {max(spec.min_nodes, spec.cohort_size)} needed (min_nodes {spec.min_nodes}, k {spec.cohort_size}); "
            f"{len(live)} live nodes, {len(with_model)} with model {spec.model}, {len(capable)} of them with dataset {spec.dataset}, "
            f"{len(declined)} declined, {len(busy)} busy"
        )

    def _unservable(self, spec: JobSpec) -> str | None:
        """A message when live nodes exist but none could ever take the job: retrying would only wait for minutes.

        With no live node at all the job keeps waiting (nodes may still be starting)."""
        live = self._live_caps()
        if not live:
            return None
        with_model = {n: c for n, c in live.items() if spec.model in c.get("models", [])}
        if not with_model:
            models = sorted({m for c in live.values() for m in c.get("models", [])})
            return (
                f"no live node has model `{spec.model}`: the {len(live)} live nodes have {', '.join(models) or 'no models'}. "
                f"Install it on the nodes (built in to fedgpu, or an entry point in the `fedgpu.models` group), or submit the job with one of those"
            )
        if not any(spec.dataset_capability in c.get("datasets", []) for c in with_model.values()):
            served = sorted({d for c in with_model.values() for d in c.get("datasets", [])})
            return (
                f"dataset schema mismatch: the job trains on `{spec.dataset}`, but the {len(with_model)} live nodes with model "
                f"`{spec.model}` serve only {', '.join(served) or 'no dataset'}. Start nodes with --data {spec.dataset}=PATH, "
                "or submit the job for a schema they serve"
            )
        return None

    def _declined_out(self, job_id: str, spec: JobSpec) -> str | None:
        """A message when too few capable nodes are left because the others declined the job for good."""
        declined = self.store.declined(job_id)
        if not declined:
            return None
        capable = self.registry.capable(spec.model, spec.dataset_capability)
        if len(capable - set(declined)) >= max(spec.min_nodes, spec.cohort_size):
            return None
        reasons = sorted({r.split(":")[0] for r in declined.values()})
        example = next(iter(declined.values()))
        for reason, what in (("schema_mismatch", "dataset schema mismatch"), ("value_range", "values beyond the encryption's headroom")):
            hits = sorted(r.split(": ", 1)[1] for r in declined.values() if r.startswith(reason + ":"))
            if hits:  # the cause the ML team can act on, first
                return f"{what} on {len(hits)} node{'s' if len(hits) != 1 else ''}: {hits[0]}"
        return (
            f"too few nodes left: {len(declined)} of {len(capable)} capable nodes declined the job ({', '.join(reasons)}), "
            f"min_nodes is {spec.min_nodes}. First reason: {example}"
        )


__all__ = [
    "Jobs",
    "MAX_ATTEMPTS",
]
