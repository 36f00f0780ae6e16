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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from fedgpu import crypto
from fedgpu.aggregation import get_rule
from fedgpu.claims import SumTolerance, check_cohort_sum
from fedgpu.config import JobConfig, job_from_dict, job_to_dict
from fedgpu.datasets import ArrayDataset, get_schema, load_file, public_split
from fedgpu.driver.state import DriverState, load_state, save_state
from fedgpu.driver.valuation import RoundValuation, RoundValuer
from fedgpu.errors import ProtocolError, RoundFailed, StorageError
from fedgpu.faults import crash_point
from fedgpu.files import write_atomic
from fedgpu.models import ModelSpec, build_model, count_params, save_trained
from fedgpu.node.training import evaluate
from fedgpu.proto.fedgpu.v1 import common_pb2, driver_pb2, driver_pb2_grpc
from fedgpu.report import write_report
from fedgpu.wire import PROTOCOL_VERSION, chunks, tensors
from fedgpu.wire.records import JobEvent, JobEventKind
from fedgpu.wire.serde import job_event_from_proto, job_status_from_proto, job_to_proto
from fedgpu.wire.transport import TLSConfig, handshake_failed, open_channel

log = logging.getLogger("fedgpu.driver")
Progress = Callable[[dict[str, Any]], None]
JOB_FILE = "job.json"


@dataclass(frozen=True)
class CohortSum:
    members: list[str]
    weighted: np.ndarray   # per parameter: sum over members of w_i * delta_i
    weights: np.ndarray    # per parameter: sum over members of w_i (the weight slot of its chunk)
    cohort: int = 0        # its index among the round's cohorts (JobEvent.cohorts)

    @property
    def weight(self) -> float:
        """The cohort's weight as the aggregation rules and valuation take it: its chunks' weight slots
        averaged (fetch_sums checks they agree)."""
        return float(self.weights.mean())


@dataclass(frozen=True)
class DroppedCohort:
    """A cohort whose decrypted sum broke the job's bounded claims (fedgpu.claims): left out of the round."""

    cohort: int
    members: list[str]
    weight: float | None   # what its weight slots say (None: not a finite number)
    rule: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"cohort": self.cohort, "members": list(self.members), "rule": self.rule, "reason": self.reason}


class JobDriver:
    def __init__(
        self,
        target: str,
        job: JobConfig,
        out_dir: Path,
        validation: ArrayDataset | None = None,
        progress: Progress | None = None,
        keys: crypto.KeyPair | None = None,
        validation_path: Path | None = None,
        tls: TLSConfig | None = None,
    ) -> None:
        self.job = job
        self.out = out_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.validation_path = validation_path
        if validation is None and validation_path is not None:
            validation = load_file(validation_path, get_schema(job.dataset))
        self.progress = progress or (lambda ev: None)
        self.channel = open_channel(target, tls)
        self.stub = driver_pb2_grpc.DriverServiceStub(self.channel)  # type: ignore[no-untyped-call]
        schema = get_schema(job.dataset)
        self.spec = ModelSpec(schema.input_shape, schema.num_classes)
        self.model = build_model(job.model, self.spec, seed=job.seed)
        self.state = {k: v.clone() for k, v in self.model.state_dict().items()}
        if validation is None:
            _, validation = public_split(job.dataset, seed=job.seed)
            if job.validation_samples:
                validation = validation.subset(np.arange(min(job.validation_samples, len(validation))))
        self.validation = validation
        self.keys = keys or crypto.generate_keys(job.encryption.scheme)
        self.decryptor = self.keys.decryptor()
        self.num_params = tensors.num_values(self.state)
        self.layout = crypto.ChunkLayout(self.num_params, self.keys.values_per_chunk)
        self.job_id = ""
        self.token = ""
        self._abort: str | None = None
        self._ended = "stopped"      # how a run that raises ended: failed or cancelled (the aggregator said), or stopped
        self.rounds: list[dict[str, Any]] = []
        self.valuer: RoundValuer | None = None
        self._server_buf: np.ndarray | None = None
        self.rule = get_rule(job.aggregation.rule, job.aggregation.params)  # the round's update, and the game valued
        if job.rewards.pool_per_round > 0:
            self.valuer = RoundValuer(
                lambda: build_model(job.model, self.spec), self.validation, job.rewards.budget, job.rewards.pool_per_round, seed=job.seed,
                step_sizes=tuple(job.rewards.step_sizes), momenta=tuple(job.rewards.momentum_steps), confidence=job.rewards.confidence,
                rule=self.rule,
            )
        self.node_info: dict[str, dict[str, Any]] = {}
        self.version = -1            # the model version self.state is
        self.published = False       # whether the aggregator is known to hold it
        self.pending: driver_pb2.RoundResult | None = None  # the result published with self.version
        self.elapsed_before = 0.0    # seconds this job ran in earlier driver processes
        self._started = time.perf_counter()

    @classmethod
    def resume(
        cls, target: str, out_dir: Path, validation: ArrayDataset | None = None, progress: Progress | None = None, tls: TLSConfig | None = None
    ) -> JobDriver:
        """Re-attach to the job whose driver wrote ``out_dir`` (it was killed, or lost its aggregator)."""
        try:
            info = json.loads((out_dir / JOB_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise StorageError(f"{out_dir / JOB_FILE} is missing or unreadable: {out_dir} is not the --out folder of a submitted job") from exc
        job = job_from_dict(info["job"])
        path = Path(info["validation"]) if info.get("validation") and validation is None else None
        driver = cls(target, job, out_dir, validation, progress, crypto.load_keys(job.encryption.scheme, out_dir / "keys"), path, tls)
        driver.job_id, driver.token = info["job_id"], info["token"]
        driver._load()
        return driver

    def abort(self, reason: str) -> None:
        """Stop ``run`` from another thread (e.g. the demo saw every node die)."""
        self._abort = reason
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
        meta = {
            "rounds": self.rounds,
            "nodes": self.node_info,
            "valuer": valuer,
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
    def fetch_sums(self, rnd: int) -> tuple[list[CohortSum], list[DroppedCohort]]:
        """The round's decrypted cohort sums that keep the job's bounded claims, and those that do not.

        A node's garbage (any well-formed ciphertext decrypts to something) or a claim beyond the
        job's cap or norm bound spoils its cohort's sum; that cohort is dropped from the round, and the
        job goes on (docs/protocol.md, "Bounded claims"). What the aggregator itself got wrong (a sum
        of fewer than k, missing chunks) still fails the job.
        """
        by_cohort: dict[int, tuple[list[str], list[bytes]]] = {}
        for msg in self.stub.FetchCohortSums(driver_pb2.FetchCohortSumsRequest(job_id=self.job_id, token=self.token, round=rnd), timeout=300):
            members, parts = by_cohort.setdefault(msg.cohort, (list(msg.members), []))
            parts.append(chunks.verify(msg.chunk, expected_index=len(parts)))
        bounds = self.job.claim_bounds
        dp = self.job.privacy
        noise_std = dp.client_noise_multiplier * dp.client_clip / math.sqrt(self.job.cohort_size) if dp.enabled and dp.mode == "client" else 0.0
        out, dropped = [], []
        for ci in sorted(by_cohort):
            members, parts = by_cohort[ci]
            if len(members) < self.job.cohort_size:
                raise ProtocolError(f"aggregator sent a sum of {len(members)} nodes, fewer than k = {self.job.cohort_size}")
            if len(parts) != self.layout.num_chunks:
                raise ProtocolError(f"cohort {ci} sum has {len(parts)} chunks, expected {self.layout.num_chunks}")
            values = [self.decryptor.decrypt(p, self.layout.chunk_values(i)) for i, p in enumerate(parts)]
            weighted, chunk_weights = self.layout.join(values)
            value_error, weight_error = crypto.sum_error(self.keys.scheme, self.keys.params, len(members))
            rejected = check_cohort_sum(weighted, chunk_weights, len(members), bounds, SumTolerance(value_error, weight_error, noise_std))
            if rejected is not None:
                weight = float(chunk_weights.mean())
                dropped.append(DroppedCohort(ci, members, weight if math.isfinite(weight) else None, rejected.rule.value, rejected.reason))
                log.warning("job %s round %d: cohort %d (%s) dropped: %s", self.job_id, rnd, ci, ", ".join(members), rejected.reason)
                continue
            weights = np.repeat(chunk_weights, [self.layout.chunk_values(i) - 1 for i in range(self.layout.num_chunks)])
            out.append(CohortSum(members, weighted, weights, ci))
        return out, dropped

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

    def on_round(self, ev: JobEvent) -> tuple[dict[str, Any], driver_pb2.RoundResult]:
        """Fetch and decrypt the round's sums, aggregate, value, evaluate; the new model is in ``self.state``."""
        t0 = time.perf_counter()
        sums, dropped = self.fetch_sums(ev.round)
        start = tensors.flatten(self.state)
        valuation = None
        if not sums:  # every cohort was dropped (bounded claims): the round publishes the model unchanged
            delta = np.zeros_like(start)
            log.warning("job %s round %d: every cohort was dropped; the model stays as it was", self.job_id, ev.round)
            if self.valuer is not None:
                valuation = self._with_dropped(ev.round, None, sums, dropped, start)
        elif self.valuer is not None:
            # The valuer picks the cohorts kept, the server step and the momentum on validation data.
            valuation = self.valuer.value(ev.round, start, [s.members for s in sums], [s.weighted for s in sums], [s.weight for s in sums])
            valuation = self._with_dropped(ev.round, valuation, sums, dropped, start)
            delta = valuation.update
        else:
            delta = self.rule(sums)
            beta = self.job.training.server_momentum
            if beta > 0:  # FedAvgM: helps non-IID and DP runs, whose averaged updates are noisy
                self._server_buf = delta if self._server_buf is None else beta * self._server_buf + delta
                delta = self._server_buf
        new = tensors.unflatten(start + delta, self.state)
        self.model.load_state_dict(new)
        acc, loss = evaluate(self.model, self.validation)
        self.state = new
        driver_seconds = time.perf_counter() - t0
        dropped_at = {d.cohort for d in dropped}
        result = driver_pb2.RoundResult(accuracy=acc, loss=loss)
        if valuation is not None:
            result.cohort_values.update({str(i): v for i, v in enumerate(valuation.cohort_values)})
            result.node_values.update(valuation.node_values)
            result.rewards.update(valuation.rewards)
            result.evidence = valuation.evidence
        for node_id in ev.participants:
            info = self.node_info.setdefault(node_id, {"rounds": 0, "epsilon": None, "reward": None})
            info["rounds"] += 1
        for node_id, eps in ev.epsilon.items():
            self.node_info.setdefault(node_id, {"rounds": 0, "epsilon": None, "reward": None})["epsilon"] = eps
        for node_id, name in ev.node_names.items():
            if node_id in self.node_info:
                self.node_info[node_id]["name"] = name
        rec = {
            "round": ev.round,
            "accuracy": acc,
            "loss": loss,
            "participants": list(ev.participants),
            "cohorts": [list(c) for c in ev.cohorts],
            "seconds": ev.seconds,
            "driver_seconds": driver_seconds,
            "bytes_up": int(ev.bytes_up),
            "bytes_down": int(ev.bytes_down),
            "bytes_up_by_node": dict(ev.bytes_up_by_node),
            "bytes_down_by_node": dict(ev.bytes_down_by_node),
            "train_seconds": dict(ev.train_seconds),
            "node_status": dict(ev.node_status),
            "epsilon": dict(ev.epsilon),
            "client_epsilon": self._client_epsilon(ev.round),
            "model_bytes": len(tensors.state_to_bytes(self.state)),
            "cohort_weights": [w for _, w in sorted([(s.cohort, s.weight) for s in sums] + [(d.cohort, d.weight) for d in dropped])],
            "excluded_cohorts": [  # not in the round's model: left out by the valuer, or dropped
                i for i in range(len(sums) + len(dropped)) if i in dropped_at or (valuation is not None and i not in valuation.kept)
            ],
            "dropped_cohorts": [d.to_dict() for d in dropped],
            "server_step": valuation.step if valuation is not None else 1.0,
            "server_momentum": valuation.momentum if valuation is not None else self.job.training.server_momentum,
        }
        rec.update(node_names=dict(ev.node_names), upload_seconds=dict(ev.upload_seconds), aggregation_seconds=ev.aggregation_seconds)
        if valuation is not None:
            rec["valuation"] = {
                "cohort_values": valuation.cohort_values,
                "node_values": valuation.node_values,
                "rewards": valuation.rewards,
                "evaluations": valuation.evaluations,
                "noise_floor": valuation.floor,
                "seconds": valuation.seconds,
            }
            for node_id, r in valuation.rewards.items():
                info = self.node_info.setdefault(node_id, {"rounds": 0, "epsilon": None, "reward": None})
                info["reward"] = (info["reward"] or 0.0) + r
        self.rounds.append(rec)
        return rec, result

    def _with_dropped(
        self, rnd: int, valuation: RoundValuation | None, sums: list[CohortSum], dropped: list[DroppedCohort], start: np.ndarray
    ) -> RoundValuation:
        """The valuation of the surviving cohorts (None: none survived) told over all the round's cohorts.

        Indices are mapped back to the round's cohorts, a dropped cohort is worth 0 and its members are
        valued and paid 0 (so that the ledger still records them), and the evidence names the mapping and
        the dropped cohorts. A round nobody's cohort survived values nothing, and its pool carries over.
        """
        if valuation is None:
            if self.valuer is not None:
                self.valuer.carried += self.valuer.pool
            empty = {"round": rnd, "cohorts": [], "kept": [], "step": 0.0, "momentum": 0.0}
            valuation = RoundValuation([], [], 0.0, 0.0, np.zeros_like(start), {}, {}, 0.0, 0.0, 0.0, json.dumps(empty).encode())
        if not dropped:
            return valuation
        index = [s.cohort for s in sums]
        values = [0.0] * (len(sums) + len(dropped))
        for i, v in zip(index, valuation.cohort_values, strict=True):
            values[i] = v
        zeros = {m: 0.0 for d in dropped for m in d.members}
        evidence = {**json.loads(valuation.evidence), "cohort_index": index, "dropped": [d.to_dict() for d in dropped]}
        return dataclasses.replace(
            valuation,
            cohort_values=values,
            kept=[index[k] for k in valuation.kept],
            node_values={**zeros, **valuation.node_values},
            rewards={**zeros, **valuation.rewards},
            evidence=json.dumps(evidence, sort_keys=True, separators=(",", ":")).encode(),
        )

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
        return self.finish(self.elapsed_before + time.perf_counter() - started)

    def _watch(self, started: float) -> None:
        if not self.job_id:
            self.submit()
            self.progress({"event": "submitted", "job": self.job_id, "params": self.num_params})
        else:
            self.progress({"event": "resumed", "job": self.job_id, "version": self.version})
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
            "privacy": {"enabled": True, "mode": self.job.privacy.mode, "epsilon": self.job.privacy.epsilon, "delta": self.job.privacy.delta, "client_epsilon": self._client_epsilon(len(self.rounds)) if self.rounds else None} if self.job.privacy.enabled else None,
            "final_accuracy": self.rounds[-1]["accuracy"] if self.rounds else 0.0,
            "seconds": seconds,
            "rounds": self.rounds,
            "nodes": self.node_info,
            "valuation": self.valuer.summary() if self.valuer else None,
        }
        write_report(self.out, report)
        return report



__all__ = [
    "CohortSum",
    "DroppedCohort",
    "JOB_FILE",
    "JobDriver",
    "Progress",
]
