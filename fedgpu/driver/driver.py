"""The job driver of an ML team: submit a job, turn cohort sums into models, evaluate, report.

It holds the job's secret key and a held-out set. It sees only sums over cohorts of at least k
nodes; it decrypts them, combines them with the job's aggregation rule (weighted FedAvg unless the
job's ``[aggregation]`` picks a robust one; fedgpu.aggregation), evaluates, values each cohort's
contribution in the game of that rule and publishes the next global model.

Each round is valued and applied exactly once, whatever fails in between: the driver writes its
state (fedgpu.driver.state) before it publishes a round, and before each watch it reconciles that
state with the aggregator (:meth:`JobDriver._sync`): a publish the aggregator already holds is
recognised by its version and model hash, one it lacks is sent again, and a driver killed outright
is re-attached with :meth:`JobDriver.resume` (``fedgpu train --resume DIR``).

On a public-data job the driver also compares the round's replicated tasks before it values the round
(fedgpu.driver.verification): matched replicas enter the model once, disputed ones go to a third node.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from fedgpu import crypto
from fedgpu.aggregation import get_rule
from fedgpu.config import JobConfig, job_from_dict, job_to_dict
from fedgpu.crypto.decrypt_pool import Chunk, DecryptPool, workers_for
from fedgpu.datasets import SCHEMAS, ArrayDataset, load_file, public_split
from fedgpu.driver.records import round_record, tally_nodes
from fedgpu.driver.state import DriverState, load_state, save_state
from fedgpu.driver.sums import CohortSum, DroppedCohort, check_sums, feature_statistics, with_dropped
from fedgpu.driver.valuation import RoundValuer
from fedgpu.driver.verification import ReplicaChecks, Screen, reexecute
from fedgpu.errors import ConfigError, ProtocolError, RoundFailed, StateError, StorageError
from fedgpu.evaluation import evaluate
from fedgpu.faults import crash_point
from fedgpu.files import write_atomic
from fedgpu.models import ModelSpec, build_model, count_params, save_trained
from fedgpu.node.training import deterministic
from fedgpu.proto.fedgpu.v1 import common_pb2, driver_pb2, driver_pb2_grpc
from fedgpu.report import write_report
from fedgpu.wire import PROTOCOL_VERSION, chunks, tensors
from fedgpu.wire.records import JobEvent, JobEventKind
from fedgpu.wire.serde import job_event_from_proto, job_status_from_proto, job_to_proto, replica_dispute_to_proto
from fedgpu.wire.transport import TLSConfig, handshake_failed, open_channel

log = logging.getLogger("fedgpu.driver")
Progress = Callable[[dict[str, Any]], None]
JOB_FILE = "job.json"
# The driver's evaluations run deterministic at this many torch threads, as nodes train (fedgpu.node.training):
# its values are then reproducible, and on a shared or busy CPU a second thread spun on barriers for 6-8x the
# CPU seconds of one, and numpy's BLAS likewise (docs/protocol.md, "Valuation cost"). `fedgpu train --threads N` raises it.
DRIVER_THREADS = 1
SCALER = ("feature_mean", "feature_std")  # a model's standardisation buffers: set by the statistics round, then fixed


class JobDriver:
    def __init__(
        self,
        target: str | None,
        job: JobConfig,
        out_dir: Path,
        validation: ArrayDataset | None = None,
        progress: Progress | None = None,
        keys: crypto.KeyPair | None = None,
        validation_path: Path | None = None,
        tls: TLSConfig | None = None,
        threads: int = DRIVER_THREADS,
        decrypt_workers: int | None = None,
    ) -> None:
        if threads < 1:
            raise ConfigError(f"driver threads {threads}: must be at least 1")
        self.threads = threads  # torch's CPU threads for the driver's evaluations (valuation, the round's accuracy)
        self.job = job
        self.out = out_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.validation_path = validation_path
        self.schema = schema = job.dataset_schema
        if validation is None and validation_path is not None:
            validation = load_file(validation_path, schema)
        if validation is None and (job.schema is not None or job.dataset not in SCHEMAS):
            raise ConfigError(f"dataset {job.dataset!r} has no public held-out set: pass --validation PATH (a file of its schema, as the nodes hold)")
        self.spec = ModelSpec(schema.input_shape, schema.num_classes)
        self.model = build_model(job.model, self.spec, seed=job.seed)
        self.state = {k: v.clone() for k, v in self.model.state_dict().items()}
        if job.data.standardize:
            f = schema.num_features
            have = {k: tuple(v.shape) for k, v in self.state.items() if k in SCALER}
            if have != dict.fromkeys(SCALER, (f,)):
                raise ConfigError(
                    f"data.standardize: model {job.model!r} has no feature scaler (buffers feature_mean and feature_std of {f} values); use model tab_mlp"
                )
        self._fixed = self._fixed_positions()
        self.progress = progress or (lambda ev: None)
        # None: no aggregator (fedgpu.simulation hands the driver its sums in process; it never submits or publishes)
        self.channel = open_channel(target, tls) if target is not None else None
        self._stub = driver_pb2_grpc.DriverServiceStub(self.channel) if self.channel is not None else None  # type: ignore[no-untyped-call]
        pd = job.public_data
        if validation is None and pd.enabled:  # the held-out part of the very dataset the nodes shard
            _, validation = public_split(job.dataset, num_samples=pd.samples or None, seed=pd.data_seed)
        if validation is None:
            _, validation = public_split(job.dataset, seed=job.seed)
            if job.validation_samples:
                validation = validation.subset(np.arange(min(job.validation_samples, len(validation))))
        self.validation = validation
        self.keys = keys or crypto.generate_keys(job.encryption.scheme)
        self.decryptor = self.keys.decryptor()
        self.num_params = tensors.num_values(self.state)
        self.layout = crypto.ChunkLayout(self.num_params, self.keys.values_per_chunk)
        # Worker processes that decrypt a round's sums while they are fetched, started by run() once the key
        # files are written and closed when it returns; None: as many as fedgpu.crypto.decrypt_pool.workers_for says.
        self.decrypt_workers = decrypt_workers
        self._pool: DecryptPool | None = None
        self.job_id = ""
        self.token = ""
        self._abort: str | None = None
        self._ended = "stopped"      # how a run that raises ended: failed or cancelled (the aggregator said), or stopped
        self.rounds: list[dict[str, Any]] = []
        self.valuer: RoundValuer | None = None
        self._server_buf: np.ndarray | None = None
        self._phases: dict[str, float] = {}
        self.rule = get_rule(job.aggregation.rule, job.aggregation.params)  # the round's update, and the game valued
        if job.rewards.pool_per_round > 0:
            self.valuer = RoundValuer(
                lambda: build_model(job.model, self.spec), self.validation, job.rewards.budget, job.rewards.pool_per_round, seed=job.seed,
                step_sizes=tuple(job.rewards.step_sizes), momenta=tuple(job.rewards.momentum_steps), confidence=job.rewards.confidence,
                rule=self.rule, samples=job.rewards.valuation_samples or None,
            )
        self.checks = None
        if pd.enabled:  # with no replication no check can ever match: nothing is held for one
            self.checks = ReplicaChecks(pd.tolerance, pd.pay_after_check and pd.replication > 0, lambda start, shard, seed: reexecute(job, start, shard, seed))
        self.node_info: dict[str, dict[str, Any]] = {}
        self.version = -1            # the model version self.state is
        self.published = False       # whether the aggregator is known to hold it
        self.pending: driver_pb2.RoundResult | None = None  # the result published with self.version
        self.elapsed_before = 0.0    # seconds this job ran in earlier driver processes
        self._started = time.perf_counter()

    def _fixed_positions(self) -> np.ndarray:
        """Where the model's ``fixed_buffers`` (tab_mlp's scaler) lie in the flat vector."""
        fixed = set(getattr(self.model, "fixed_buffers", ()))
        out, pos = [], 0
        for k in tensors.float_keys(self.state):
            n = self.state[k].numel()
            if k in fixed:
                out.append(np.arange(pos, pos + n))
            pos += n
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    @classmethod
    def resume(
        cls, target: str, out_dir: Path, validation: ArrayDataset | None = None, progress: Progress | None = None, tls: TLSConfig | None = None,
        threads: int = DRIVER_THREADS,
    ) -> JobDriver:
        """Re-attach to the job whose driver wrote ``out_dir`` (it was killed, or lost its aggregator)."""
        try:
            info = json.loads((out_dir / JOB_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise StorageError(f"{out_dir / JOB_FILE} is missing or unreadable: {out_dir} is not the --out folder of a submitted job") from exc
        job = job_from_dict(info["job"])
        path = Path(info["validation"]) if info.get("validation") and validation is None else None
        driver = cls(target, job, out_dir, validation, progress, crypto.load_keys(job.encryption.scheme, out_dir / "keys"), path, tls, threads)
        driver.job_id, driver.token = info["job_id"], info["token"]
        driver._load()
        return driver

    @property
    def stub(self) -> driver_pb2_grpc.DriverServiceStub:
        if self._stub is None:
            raise StateError("this driver has no aggregator (a simulation's): it cannot submit, watch or publish")
        return self._stub

    def abort(self, reason: str) -> None:
        """Stop ``run`` from another thread (e.g. the demo saw every node die)."""
        self._abort = reason
        if self.channel is not None:
            self.channel.close()

    # ---- setup ---------------------------------------------------------------------------------
    def _context(self) -> common_pb2.EncryptionContext:
        k = self.keys
        return common_pb2.EncryptionContext(
            scheme=k.scheme,
            params=k.params,
            public_material=k.public_material,
            fingerprint=crypto.context_fingerprint(k.scheme, k.params, k.public_material),
            values_per_chunk=k.values_per_chunk,
        )

    def _save_keys(self) -> None:
        save = getattr(self.keys, "save", None)
        if save is not None:
            save(self.out / "keys")  # the secret key stays here, owner-only

    def submit(self) -> str:
        spec = job_to_proto(self.job, self._context(), self.num_params)
        token = os.environ.get("FEDGPU_SUBMIT_TOKEN", "")  # an aggregator with --drivers FILE takes jobs only with one of its tokens
        reply = self.stub.SubmitJob(driver_pb2.SubmitJobRequest(spec=spec, protocol_version=PROTOCOL_VERSION, submit_token=token), timeout=60)
        self.job_id, self.token = reply.job_id, reply.token
        self._save_keys()
        info = {"job_id": self.job_id, "token": self.token, "job": job_to_dict(self.job), "validation": str(self.validation_path or "")}
        write_atomic(self.out / JOB_FILE, json.dumps(info).encode(), 0o600)  # the token is a secret
        self.version, self.published = 0, False
        self._save()
        self._publish(0, None)
        self.published = True
        return self.job_id

    # ---- state ---------------------------------------------------------------------------------
    def _save(self) -> None:
        arrays: dict[str, np.ndarray] = {}
        valuer: dict[str, Any] | None = None
        if self.valuer is not None:
            valuer, arrays = self.valuer.state()
        if self._server_buf is not None:
            arrays = {**arrays, "server_buf": self._server_buf}
        checks: dict[str, Any] | None = None
        if self.checks is not None:
            checks, more = self.checks.state()
            arrays = {**arrays, **more}
        meta = {
            "rounds": self.rounds,
            "nodes": self.node_info,
            "valuer": valuer,
            "checks": checks,
            "pending": self.pending.SerializeToString().hex() if self.pending is not None else None,
            "elapsed": self.elapsed_before + time.perf_counter() - self._started,
        }
        save_state(self.out, DriverState(self.version, self.state, arrays, meta))

    def _load(self) -> None:
        st = load_state(self.out)
        self.version, self.published = st.version, False
        self.model.load_state_dict(st.model)
        # The model's own key order, not the file's: flat vectors (what nodes send) follow it.
        self.state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.rounds = st.meta["rounds"]
        self.node_info = st.meta["nodes"]
        self.elapsed_before = float(st.meta.get("elapsed", 0.0))
        self._server_buf = st.arrays.get("server_buf")
        if self.valuer is not None and st.meta["valuer"] is not None:
            self.valuer.load_state(st.meta["valuer"], st.arrays)
        if self.checks is not None and st.meta.get("checks") is not None:
            self.checks.load_state(st.meta["checks"], st.arrays)
        self.pending = None
        if st.meta["pending"] is not None:
            self.pending = driver_pb2.RoundResult()
            self.pending.ParseFromString(bytes.fromhex(st.meta["pending"]))

    def _sync(self) -> None:
        """Make sure the aggregator holds the version this driver's state is at, publishing it if not.

        The state is written before a publish, so the aggregator is at that version (the publish
        landed: recognised by the model's hash) or one behind (it did not: send it again).
        """
        if self.published:
            return
        st = job_status_from_proto(self.stub.GetJob(driver_pb2.GetJobRequest(job_id=self.job_id, token=self.token), timeout=30))
        theirs = -1 if st.state == "waiting_model" else int(st.model_version)
        if theirs == self.version and st.model_sha256 == hashlib.sha256(tensors.state_to_bytes(self.state)).hexdigest():
            log.info("job %s: the aggregator already holds model version %d", self.job_id, self.version)
        elif theirs == self.version - 1 and st.state in ("waiting_model", "running"):
            self._publish(self.version, self.pending)
        elif st.state in ("failed", "cancelled"):
            return  # the watch reports why
        else:
            raise StorageError(
                f"job {self.job_id}: the aggregator holds model version {theirs}, this driver's state {self.out} is at "
                f"version {self.version}: the state belongs to another run of the job"
            )
        self.published = True

    def _publish(self, version: int, result: driver_pb2.RoundResult | None) -> int:
        data = tensors.state_to_bytes(self.state)
        parts = chunks.split(data)

        def msgs() -> Iterator[driver_pb2.PublishChunk]:
            for i, c in enumerate(parts):
                m = driver_pb2.PublishChunk(job_id=self.job_id, token=self.token, version=version, chunk=c)
                if i == 0 and result is not None:
                    m.result.CopyFrom(result)
                yield m

        self.stub.PublishModel(msgs(), timeout=120)
        return len(data)

    # ---- rounds --------------------------------------------------------------------------------
    def fetch_sums(self, rnd: int, statistics: bool = False) -> tuple[list[CohortSum], list[DroppedCohort]]:
        """The round's decrypted cohort sums that keep the job's bounded claims, and those dropped (fedgpu.driver.sums).
        A statistics round's sums are feature moments: only the weight cap applies to them.
        A driver with a decryption pool hands each chunk to it as it arrives, so that fetching overlaps decrypting:
        ``decrypt_seconds`` is then what decrypting took beyond the fetch."""
        by_cohort: dict[int, tuple[list[str], list[Chunk]]] = {}
        pool, layout = self._pool, self.layout
        t0 = time.perf_counter()
        try:
            for msg in self.stub.FetchCohortSums(driver_pb2.FetchCohortSumsRequest(job_id=self.job_id, token=self.token, round=rnd), timeout=300):
                _, parts = by_cohort.setdefault(msg.cohort, (list(msg.members), []))
                payload, i = chunks.verify(msg.chunk, expected_index=len(parts)), len(parts)
                if pool is not None and i < layout.num_chunks:  # a surplus chunk fails its cohort's count check unread
                    parts.append(pool.submit(payload, layout.chunk_values(i)))
                else:
                    parts.append(functools.partial(self.decryptor.decrypt, payload, layout.chunk_values(i)))
            t1 = time.perf_counter()
            out = check_sums(by_cohort, layout, self.keys, self.job, f"job {self.job_id} round {rnd}", statistics=statistics)
        except BaseException:
            if pool is not None:
                pool.cancel()  # what this round queued must not hold up the next
            raise
        self._phases = {"fetch_seconds": t1 - t0, "decrypt_seconds": time.perf_counter() - t1}
        return out

    def _open_pool(self) -> None:
        workers = workers_for(self.keys.scheme, self.layout.num_chunks) if self.decrypt_workers is None else self.decrypt_workers
        if workers and self._pool is None:
            self._pool = DecryptPool(self.keys.scheme, self.out / "keys", self.decryptor, workers)

    def close_pool(self) -> None:
        """Stop the decryption workers, if any (run does on its way out)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _client_epsilon(self, rounds: int) -> float | None:
        """Client-level DP: every node's epsilon after ``rounds`` rounds, accounted here by the driver.

        Sampling rate 1: the aggregator (not a secret coin) picks the nodes, so no amplification is claimed.
        """
        p = self.job.privacy
        if not (p.enabled and p.mode == "client"):
            return None
        from fedgpu.privacy.client_dp import client_level_epsilon

        return client_level_epsilon(p.client_noise_multiplier, 1.0, rounds, p.delta, "rdp")

    def _apply(self, ev: JobEvent, started: float) -> None:
        """Value and apply round ``ev.round`` exactly once: state written, then published."""
        if ev.round != self.version + 1:
            raise ProtocolError(f"the aggregator offers round {ev.round}, this driver is at model version {self.version}")
        try:
            rec, result = self.on_round(ev)
        except BaseException:
            self._load()  # nothing of the round is kept: the state file still holds the round before
            raise
        crash_point("driver_valued")
        self.version, self.published, self.pending = ev.round, False, result
        self._save()
        crash_point("driver_pending")
        t0 = time.perf_counter()
        self._publish(ev.round, result)
        rec["publish_seconds"] = time.perf_counter() - t0
        self.published = True
        crash_point("driver_published")
        elapsed = self.elapsed_before + time.perf_counter() - started
        eta = elapsed / ev.round * (self.job.rounds - ev.round)  # the rounds so far, on average, for each one left
        self.progress({"event": "round", **rec, "elapsed": elapsed, "eta": eta, "rounds_total": self.job.rounds})

    def on_statistics(self, ev: JobEvent) -> tuple[dict[str, Any], driver_pb2.RoundResult]:
        """Round 1 of a job with standardize: the cohort sums of feature moments give the global mean and
        std, set into the model's scaler (published as the model round 2 trains). Nothing is valued or paid.
        On a DP job the sums are the nodes' noisy ones (Gaussian mechanism, docs/tabular.md): what noise made
        impossible is clamped, and said."""
        t0 = time.perf_counter()
        sums, dropped = self.fetch_sums(ev.round, statistics=True)
        if not sums:
            raise RoundFailed(f"job {self.job_id}: every cohort of the statistics round was dropped ({dropped[0].reason if dropped else 'none reported'})")
        stats = feature_statistics(sums, self.job, self.keys, self.schema, f"job {self.job_id}")
        dp = self.job.statistics_epsilon > 0
        new = dict(self.state)
        new["feature_mean"] = torch.from_numpy(stats.mean).to(self.state["feature_mean"].dtype)
        new["feature_std"] = torch.from_numpy(stats.std).to(self.state["feature_std"].dtype)
        self.model.load_state_dict(new)
        with self._compute():
            acc, loss = evaluate(self.model, self.validation)
        self.state = new
        rec = round_record(
            ev, acc, loss, time.perf_counter() - t0, sums, dropped, None,
            client_epsilon=None, model_bytes=len(tensors.state_to_bytes(self.state)), server_momentum=0.0,
        )
        rec["statistics"] = {"samples": stats.samples, "imprecise_features": list(stats.imprecise)}
        if dp:
            rec["statistics"].update({"epsilon": self.job.statistics_epsilon, "noise_std": stats.noise_std, "count_clamped": stats.count_clamped})
        tally_nodes(self.node_info, ev, None)
        self.rounds.append(rec)
        log.info("job %s: federated standardisation over %.0f samples", self.job_id, stats.samples)
        return rec, driver_pb2.RoundResult(accuracy=acc, loss=loss)

    def on_round(self, ev: JobEvent) -> tuple[dict[str, Any], driver_pb2.RoundResult]:
        """Fetch and decrypt the round's sums, aggregate, value, evaluate; the new model is in ``self.state``."""
        if self.job.data.standardize and ev.round == 1:
            return self.on_statistics(ev)
        t0 = time.perf_counter()
        sums, dropped = self.fetch_sums(ev.round)
        return self.apply_sums(ev, sums, dropped, t0)

    def apply_sums(
        self, ev: JobEvent, sums: list[CohortSum], dropped: list[DroppedCohort], started: float | None = None
    ) -> tuple[dict[str, Any], driver_pb2.RoundResult]:
        """Aggregate, value and evaluate the round's decrypted sums; the new model is in ``self.state``.
        ``started``: when the round's driver work began (its driver_seconds count from there)."""
        with self._compute():
            return self._apply_sums(ev, sums, dropped, time.perf_counter() if started is None else started)

    @contextlib.contextmanager
    def _compute(self) -> Iterator[None]:
        """The driver's evaluations: deterministic torch at ``threads`` threads, and numpy's BLAS at as many
        (its dot products over a model's parameters spin a second thread as torch's kernels do)."""
        with deterministic(self.threads), threadpool_limits(self.threads):
            yield

    def _apply_sums(self, ev: JobEvent, sums: list[CohortSum], dropped: list[DroppedCohort], t0: float) -> tuple[dict[str, Any], driver_pb2.RoundResult]:
        for s in sums:  # the scaler is the statistics round's: no update (nor a client-DP noise share) moves it
            s.weighted[self._fixed] = 0.0
        start = tensors.flatten(self.state)
        screen: Screen | None = None
        if self.checks is not None:  # replicated tasks compared; duplicates, disputed and flagged updates left out
            screen = self.checks.screen(ev, sums, start)
            sums, dropped = screen.kept, sorted([*dropped, *screen.dropped], key=lambda d: d.cohort)
        valuation = None
        if not sums:  # every cohort was dropped (bounded claims): the round publishes the model unchanged
            delta = np.zeros_like(start)
            log.warning("job %s round %d: every cohort was dropped; the model stays as it was", self.job_id, ev.round)
            if self.valuer is not None:
                valuation = with_dropped(self.valuer, ev.round, None, sums, dropped, start)
        elif self.valuer is not None:
            # The valuer picks the cohorts kept, the server step and the momentum on validation data.
            valuation = self.valuer.value(ev.round, start, [s.members for s in sums], [s.weighted for s in sums], [s.weight for s in sums])
            valuation = with_dropped(self.valuer, ev.round, valuation, sums, dropped, start)
            delta = valuation.update
        else:
            delta = self.rule(sums)
            beta = self.job.training.server_momentum
            if beta > 0:  # FedAvgM: helps non-IID and DP runs, whose averaged updates are noisy
                self._server_buf = delta if self._server_buf is None else beta * self._server_buf + delta
                delta = self._server_buf
        final = ev.round >= self.job.rounds  # the job's last round: every dispute settled, held pay released
        if final and valuation is not None and self.valuer is not None:
            valuation = self.valuer.settle(valuation)
        if screen is not None and valuation is not None and self.valuer is not None:
            valuation = self.checks.pay(ev, screen, valuation, self.valuer, final)  # type: ignore[union-attr]
        elif screen is not None:  # nothing is paid, but disputes still end in verdicts
            self.checks.settle_leftovers(ev, screen, final)  # type: ignore[union-attr]
        new = tensors.unflatten(start + delta, self.state)
        self.model.load_state_dict(new)
        t_eval = time.perf_counter()
        acc, loss = evaluate(self.model, self.validation)
        self._phases["evaluate_seconds"] = time.perf_counter() - t_eval
        self.state = new
        driver_seconds = time.perf_counter() - t0
        result = driver_pb2.RoundResult(accuracy=acc, loss=loss)
        if valuation is not None:
            result.cohort_values.update({str(i): v for i, v in enumerate(valuation.cohort_values)})
            result.node_values.update(valuation.node_values)
            result.rewards.update(valuation.rewards)
            result.evidence = valuation.evidence
            if final:  # paid now for earlier rounds (the settlement, held pay): in no cohort of this one
                result.released.extend(sorted(set(valuation.rewards) - set(ev.participants)))
        if screen is not None:
            result.disputes.extend(replica_dispute_to_proto(d) for d in screen.disputes)
            result.flagged.extend(sorted(self.checks.flagged))  # type: ignore[union-attr]
        rec = round_record(
            ev, acc, loss, driver_seconds, sums, dropped, valuation,
            client_epsilon=self._client_epsilon(ev.round), model_bytes=len(tensors.state_to_bytes(self.state)),
            server_momentum=self.job.training.server_momentum,
        )
        rec.update(self._phases)  # where the driver's time went: fetch, decrypt, evaluate (valuation: rec["valuation"])
        if screen is not None:
            rec["replica_sets"] = [r.to_dict() for r in ev.replicas]  # what the aggregator replicated
            rec["replicas"] = screen.checks
            rec["flagged"] = screen.flagged_now
        tally_nodes(self.node_info, ev, valuation)
        if self.checks is not None:
            for node_id, why in self.checks.flagged.items():
                self.node_info.setdefault(node_id, {"rounds": 0, "epsilon": None, "reward": None})["flagged"] = why
        self.rounds.append(rec)
        return rec, result

    def run(self) -> dict[str, Any]:
        """Submit (or, resumed, re-attach), drive every round to the end, write model.safetensors and report.json.

        A job that ends otherwise still leaves a report.json saying why (``status``: failed, cancelled
        or stopped, and ``error``), and the model of the last round applied, if any.
        """
        started = self._started = time.perf_counter()
        self._ended = "stopped"  # until the aggregator says the job failed or was cancelled
        try:
            self._watch(started)
        except BaseException as exc:
            try:
                self.finish(self.elapsed_before + time.perf_counter() - started, status=self._ended, error=str(exc) or type(exc).__name__)
            except Exception:  # the report is a courtesy: never hide the error that ended the job
                log.exception("could not write the report of job %s", self.job_id)
            raise
        finally:
            self.close_pool()
        return self.finish(self.elapsed_before + time.perf_counter() - started)

    def _watch(self, started: float) -> None:
        if not self.job_id:
            self.submit()
            self.progress({"event": "submitted", "job": self.job_id, "params": self.num_params})
        else:
            self.progress({"event": "resumed", "job": self.job_id, "version": self.version})
        self._open_pool()  # the key files it reads are written by now; the workers start while round 1 trains
        req = driver_pb2.WatchJobRequest(job_id=self.job_id, token=self.token)
        done = False
        while not done:
            try:
                self._sync()
                for raw in self.stub.WatchJob(req):
                    ev = job_event_from_proto(raw)
                    if ev.kind is JobEventKind.ROUND_OPENED:
                        self.progress({"event": "round_opened", "round": ev.round, "nodes": len(ev.participants)})
                    elif ev.kind is JobEventKind.ROUND_RETRY:
                        self.progress({"event": "retry", "round": ev.round, "message": ev.message})
                    elif ev.kind is JobEventKind.SUMS_READY:
                        if ev.round > self.version:  # a round already applied is offered again after a reconnect
                            self._apply(ev, started)
                    elif ev.kind is JobEventKind.JOB_DONE:
                        done = True
                        break
                    elif ev.kind is JobEventKind.JOB_FAILED:
                        self._ended = "failed"
                        raise RoundFailed(f"job {self.job_id} failed: {ev.message}")
                    elif ev.kind is JobEventKind.JOB_CANCELLED:
                        self._ended = "cancelled"
                        raise RoundFailed(f"job {self.job_id} was cancelled: {ev.message}")
            except (grpc.RpcError, ValueError) as exc:
                if self._abort is not None:
                    raise RoundFailed(self._abort) from exc
                if not isinstance(exc, grpc.RpcError) or exc.code() != grpc.StatusCode.UNAVAILABLE or handshake_failed(exc):
                    raise
                self.progress({"event": "reconnect", "message": "aggregator unavailable; reconnecting"})
                time.sleep(1.0)

    def finish(self, seconds: float, status: str = "done", error: str | None = None) -> dict[str, Any]:
        """Write report.json, report.html and metrics.csv, and the model when the job is done or a round was applied."""
        if status == "done" or self.rounds:
            save_trained(self.out / "model.safetensors", self.state, self.job.model, self.job.dataset, self.spec, job=self.job_id, rounds=len(self.rounds))
        report = {
            "job": self.job_id,
            "status": status,  # done | failed | cancelled (the aggregator ended the job) | stopped (this driver did)
            "error": error,
            "name": self.job.name,
            "dataset": self.job.dataset,
            "model": self.job.model,
            "params": count_params(self.model),
            "encryption": self.job.encryption.scheme,
            "cohort_size": self.job.cohort_size,
            "privacy": {"enabled": True, "mode": self.job.privacy.mode, "epsilon": self.job.privacy.epsilon, "delta": self.job.privacy.delta, "statistics_epsilon": self.job.statistics_epsilon, "client_epsilon": self._client_epsilon(len(self.rounds)) if self.rounds else None} if self.job.privacy.enabled else None,
            "final_accuracy": self.rounds[-1]["accuracy"] if self.rounds else 0.0,
            "seconds": seconds,
            "rounds": self.rounds,
            "nodes": self.node_info,
            "valuation": self.valuer.summary() if self.valuer else None,
            "verification": self.checks.summary() if self.checks is not None else None,
        }
        write_report(self.out, report)
        return report



__all__ = [
    "DRIVER_THREADS",
    "JOB_FILE",
    "JobDriver",
    "Progress",
    "SCALER",
]
