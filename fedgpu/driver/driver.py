"""The job driver of an ML team: submit a job, turn cohort sums into models, evaluate, report.

It holds the job's secret key and a held-out set. It sees only sums over cohorts of at least k
nodes; it decrypts them, combines them with weighted FedAvg, evaluates, values each cohort's
contribution and publishes the next global model.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import numpy as np
import torch
from safetensors.torch import save_file

from fedgpu import crypto
from fedgpu.config import JobConfig
from fedgpu.datasets import ArrayDataset, get_schema, public_split
from fedgpu.driver.valuation import RoundValuer
from fedgpu.errors import CryptoError, ProtocolError, RoundFailed
from fedgpu.models import ModelSpec, build_model, count_params
from fedgpu.node.training import evaluate
from fedgpu.proto.fedgpu.v1 import common_pb2, driver_pb2, driver_pb2_grpc
from fedgpu.wire import chunks, tensors
from fedgpu.wire.serde import job_to_proto
from fedgpu.wire.transport import TLSConfig, open_channel

log = logging.getLogger("fedgpu.driver")
Kind = driver_pb2.JobEventKind
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class CohortSum:
    members: list[str]
    weighted: np.ndarray   # per parameter: sum over members of w_i * delta_i
    weights: np.ndarray    # per parameter: sum over members of w_i (the weight slot of its chunk)

    @property
    def weight(self) -> float:
        return float(self.weights.mean())


def fedavg(sums: list[CohortSum]) -> np.ndarray:
    """Weighted FedAvg over cohort sums: sum of S_c / sum of W_c."""
    total = np.sum([s.weighted for s in sums], axis=0)
    weights = np.sum([s.weights for s in sums], axis=0)
    if np.any(weights <= 0):
        raise ProtocolError("the round's sum has a non-positive total weight")
    return total / weights


class JobDriver:
    def __init__(
        self,
        target: str,
        job: JobConfig,
        out_dir: Path,
        validation: ArrayDataset | None = None,
        progress: Progress | None = None,
        keys: crypto.KeyPair | None = None,
        tls: TLSConfig | None = None,
    ) -> None:
        self.job = job
        self.out = out_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress = progress or (lambda ev: None)
        self.channel = open_channel(target, tls)
        self.stub = driver_pb2_grpc.DriverServiceStub(self.channel)
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
        self.rounds: list[dict[str, Any]] = []
        self.valuer: RoundValuer | None = None
        self._server_buf: np.ndarray | None = None
        if job.rewards.pool_per_round > 0:
            self.valuer = RoundValuer(
                lambda: build_model(job.model, self.spec), self.validation, job.rewards.budget, job.rewards.pool_per_round, seed=job.seed,
                step_sizes=tuple(job.rewards.step_sizes), momenta=tuple(job.rewards.momentum_steps), confidence=job.rewards.confidence,
            )
        self.node_info: dict[str, dict[str, Any]] = {}

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
        reply = self.stub.SubmitJob(driver_pb2.SubmitJobRequest(spec=spec), timeout=60)
        self.job_id, self.token = reply.job_id, reply.token
        self._save_keys()
        fd = os.open(self.out / "job.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"job_id": self.job_id, "token": self.token}, f)
        self._publish(0, None)
        return self.job_id

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
    def fetch_sums(self, rnd: int) -> list[CohortSum]:
        by_cohort: dict[int, tuple[list[str], list[bytes]]] = {}
        for msg in self.stub.FetchCohortSums(driver_pb2.FetchCohortSumsRequest(job_id=self.job_id, token=self.token, round=rnd), timeout=300):
            members, parts = by_cohort.setdefault(msg.cohort, (list(msg.members), []))
            parts.append(chunks.verify(msg.chunk, expected_index=len(parts)))
        out = []
        for ci in sorted(by_cohort):
            members, parts = by_cohort[ci]
            if len(members) < self.job.cohort_size:
                raise ProtocolError(f"aggregator sent a sum of {len(members)} nodes, fewer than k = {self.job.cohort_size}")
            if len(parts) != self.layout.num_chunks:
                raise ProtocolError(f"cohort {ci} sum has {len(parts)} chunks, expected {self.layout.num_chunks}")
            values = [self.decryptor.decrypt(p, self.layout.chunk_values(i)) for i, p in enumerate(parts)]
            weighted, chunk_weights = self.layout.join(values)
            weights = np.repeat(chunk_weights, [self.layout.chunk_values(i) - 1 for i in range(self.layout.num_chunks)])
            if not (np.isfinite(weighted).all() and np.isfinite(weights).all()):
                raise CryptoError(f"cohort {ci} decrypts to non-finite values: wrong key or corrupted sum")
            if np.ptp(chunk_weights) > 1e-3 * max(1.0, abs(chunk_weights).max()):
                raise CryptoError(f"cohort {ci}: chunk weights disagree ({chunk_weights.min():.4g}..{chunk_weights.max():.4g}): a member sent inconsistent chunks")
            out.append(CohortSum(members, weighted, weights))
        return out

    def _client_epsilon(self, rounds: int) -> float | None:
        """Client-level DP: every node's epsilon after ``rounds`` rounds, accounted here by the driver.

        Sampling rate 1: the aggregator (not a secret coin) picks the nodes, so no amplification is claimed.
        """
        p = self.job.privacy
        if not (p.enabled and p.mode == "client"):
            return None
        from fedgpu.privacy.client_dp import client_level_epsilon

        return client_level_epsilon(p.client_noise_multiplier, 1.0, rounds, p.delta, "rdp")

    def on_round(self, ev: driver_pb2.JobEvent) -> dict[str, Any]:
        t0 = time.perf_counter()
        sums = self.fetch_sums(ev.round)
        start = tensors.flatten(self.state)
        valuation = None
        if self.valuer is not None:
            # The valuer picks the cohorts kept, the server step and the momentum on validation data.
            valuation = self.valuer.value(ev.round, start, [s.members for s in sums], [s.weighted for s in sums], [s.weight for s in sums])
            delta = valuation.update
        else:
            delta = fedavg(sums)
            beta = self.job.training.server_momentum
            if beta > 0:  # FedAvgM: helps non-IID and DP runs, whose averaged updates are noisy
                self._server_buf = delta if self._server_buf is None else beta * self._server_buf + delta
                delta = self._server_buf
        new = tensors.unflatten(start + delta, self.state)
        self.model.load_state_dict(new)
        acc, loss = evaluate(self.model, self.validation)
        self.state = new
        driver_seconds = time.perf_counter() - t0
        result = driver_pb2.RoundResult(accuracy=acc, loss=loss)
        if valuation is not None:
            result.cohort_values.update({str(i): v for i, v in enumerate(valuation.cohort_values)})
            result.node_values.update(valuation.node_values)
            result.rewards.update(valuation.rewards)
            result.evidence = valuation.evidence
        published = self._publish(ev.round, result)
        for node_id in ev.participants:
            info = self.node_info.setdefault(node_id, {"rounds": 0, "epsilon": None, "reward": None})
            info["rounds"] += 1
        for node_id, eps in ev.epsilon.items():
            self.node_info.setdefault(node_id, {"rounds": 0, "epsilon": None, "reward": None})["epsilon"] = eps
        rec = {
            "round": ev.round,
            "accuracy": acc,
            "loss": loss,
            "participants": list(ev.participants),
            "cohorts": [list(c.members) for c in ev.cohorts],
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
            "model_bytes": published,
            "excluded_cohorts": [i for i in range(len(sums)) if valuation is not None and i not in valuation.kept],
            "server_step": valuation.step if valuation is not None else 1.0,
            "server_momentum": valuation.momentum if valuation is not None else self.job.training.server_momentum,
        }
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
        return rec

    def run(self) -> dict[str, Any]:
        """Submit, drive every round to the end, write model.safetensors and report.json."""
        started = time.perf_counter()
        self.submit()
        self.progress({"event": "submitted", "job": self.job_id, "params": self.num_params})
        req = driver_pb2.WatchJobRequest(job_id=self.job_id, token=self.token)
        done = False
        while not done:
            try:
                for ev in self.stub.WatchJob(req):
                    if ev.kind == Kind.JOB_EVENT_KIND_ROUND_OPENED:
                        self.progress({"event": "round_opened", "round": ev.round, "nodes": len(ev.participants)})
                    elif ev.kind == Kind.JOB_EVENT_KIND_ROUND_RETRY:
                        self.progress({"event": "retry", "round": ev.round, "message": ev.message})
                    elif ev.kind == Kind.JOB_EVENT_KIND_SUMS_READY:
                        if self.rounds and self.rounds[-1]["round"] >= ev.round:
                            continue
                        rec = self.on_round(ev)
                        self.progress({"event": "round", **rec, "elapsed": time.perf_counter() - started})
                    elif ev.kind == Kind.JOB_EVENT_KIND_JOB_DONE:
                        done = True
                        break
                    elif ev.kind == Kind.JOB_EVENT_KIND_JOB_FAILED:
                        raise RoundFailed(f"job {self.job_id} failed: {ev.message}")
            except (grpc.RpcError, ValueError) as exc:
                if self._abort is not None:
                    raise RoundFailed(self._abort) from exc
                if not isinstance(exc, grpc.RpcError) or exc.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    raise
                self.progress({"event": "reconnect", "message": "aggregator unavailable; reconnecting"})
                time.sleep(1.0)
        return self.finish(time.perf_counter() - started)

    def finish(self, seconds: float) -> dict[str, Any]:
        save_file({k: v.contiguous() for k, v in self.state.items()}, str(self.out / "model.safetensors"))
        report = {
            "job": self.job_id,
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
        (self.out / "report.json").write_text(json.dumps(report, indent=2))
        return report


def load_model(path: Path, job: JobConfig) -> torch.nn.Module:
    """Load a trained model from ``model.safetensors`` (weights only, no pickle)."""
    from safetensors.torch import load_file

    schema = get_schema(job.dataset)
    model = build_model(job.model, ModelSpec(schema.input_shape, schema.num_classes))
    model.load_state_dict(load_file(str(path)))
    return model
