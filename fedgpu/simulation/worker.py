"""What one Ray actor does with a cohort: each member trains, clamps, encrypts, and the cohort is summed.

The member's work is the node's own (fedgpu.node.training, the job's bounded claims, client-level DP's
clip and noise share, the job's real encryptor); the cohort's sum is the aggregator's key-free adder
(the same ``check`` and ``add`` as an upload). Only the cohort's accumulator leaves the actor, one
ciphertext per chunk, as the aggregator's spool would hold it.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from fedgpu import crypto
from fedgpu.adversaries import flip_labels, update_hook
from fedgpu.claims import ClaimBounds, clamp_claim
from fedgpu.config import JobConfig
from fedgpu.datasets import ArrayDataset, get_schema
from fedgpu.errors import ConfigError
from fedgpu.models import ModelSpec, build_model
from fedgpu.node.training import LocalTrainConfig, train_local
from fedgpu.simulation.population import SimNode
from fedgpu.wire import tensors

# An honest node's FedAvg weight per sample (fedgpu.node.agent.NodeConfig.weight_scale).
WEIGHT_PER_SAMPLE = 1e-3


@dataclass(frozen=True)
class Context:
    """What the aggregator relays to a node with its task: the job and the public encryption context."""

    job: JobConfig
    params: bytes
    public_material: bytes
    values_per_chunk: int
    num_params: int


@dataclass
class CohortResult:
    cohort: int
    reported: list[str]                                        # members whose update is in the sum
    accumulators: list[np.ndarray]                             # the adder's running sum, per chunk (empty: nobody reported)
    status: dict[str, str] = field(default_factory=dict)       # per member: complete, late: ..., failed: ...
    train_seconds: dict[str, float] = field(default_factory=dict)  # simulated: measured / the node's speed
    bytes_up: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)    # this actor's wall time by phase: train, encrypt, add
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # and its CPU time (below the wall time on a busy machine)
    peak_rss_mb: float = 0.0                                   # the actor process's, so far


class CohortWorker:
    """One per CPU, reused across rounds and nodes: the model, encryptor and adder are built once."""

    def __init__(self, x: np.ndarray, y: np.ndarray, ctx: Context, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.x, self.y = x, y
        self.ctx = ctx
        job = ctx.job
        schema = get_schema(job.dataset)
        self.classes = schema.num_classes
        self.model = build_model(job.model, ModelSpec(schema.input_shape, schema.num_classes), seed=job.seed)
        self.like = {k: v.clone() for k, v in self.model.state_dict().items()}
        scheme = job.encryption.scheme
        self.encryptor = crypto.encryptor(scheme, ctx.params, ctx.public_material)
        self.adder = crypto.adder(scheme, ctx.params)
        self.layout = crypto.ChunkLayout(ctx.num_params, ctx.values_per_chunk)
        self.bounds = job.claim_bounds
        p = job.privacy
        if p.enabled and p.mode == "sample":
            raise ConfigError("simulate does not run DP-SGD (privacy.mode = \"sample\") yet; use privacy.mode = \"client\" or no [privacy]")
        self.client_dp = p.enabled and p.mode == "client"

    def run(self, cohort: int, nodes: list[SimNode], start: np.ndarray, previous: np.ndarray | None) -> CohortResult:
        """Train, clamp, encrypt and add every member of ``cohort`` from the global model ``start``
        (``previous``: the model before it, what a replaying node replays the change from)."""
        job = self.ctx.job
        out = CohortResult(cohort, [], [], seconds={"train": 0.0, "encrypt": 0.0, "add": 0.0}, cpu_seconds={"train": 0.0, "encrypt": 0.0, "add": 0.0})
        acc = [self.adder.zero() for _ in range(self.layout.num_chunks)]
        for node in nodes:
            t0, c0 = time.perf_counter(), time.process_time()
            delta, weight = self._train(node, start, previous)
            t1, c1 = time.perf_counter(), time.process_time()
            out.seconds["train"] += t1 - t0
            out.cpu_seconds["train"] += c1 - c0
            simulated = (t1 - t0) / node.speed
            out.train_seconds[node.name] = simulated
            if delta is None:
                out.status[node.name] = "failed: training diverged (NaN or infinite weights)"
                continue
            if simulated > job.deadline_seconds:  # its upload would come after the round's deadline
                out.status[node.name] = f"late: {simulated:.1f} s of training at speed {node.speed:g}, deadline {job.deadline_seconds:g} s"
                continue
            payloads = [self.encryptor.encrypt(v) for v in self.layout.split(delta, weight)]
            t2, c2 = time.perf_counter(), time.process_time()
            for i, payload in enumerate(payloads):
                self.adder.check(payload)  # as an upload is checked before it is folded in
                acc[i] = self.adder.add(acc[i], payload)
            t3, c3 = time.perf_counter(), time.process_time()
            out.seconds["encrypt"] += t2 - t1
            out.seconds["add"] += t3 - t2
            out.cpu_seconds["encrypt"] += c2 - c1
            out.cpu_seconds["add"] += c3 - c2
            out.bytes_up[node.name] = sum(len(p) for p in payloads)
            out.status[node.name] = "complete"
            out.reported.append(node.name)
        out.accumulators = acc if out.reported else []
        out.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return out

    def _train(self, node: SimNode, start: np.ndarray, previous: np.ndarray | None) -> tuple[np.ndarray | None, float]:
        """The member's change and weight as a node sends them: trained, behaviour applied, clamped to the job's claims."""
        job, t = self.ctx.job, self.ctx.job.training
        y = self.y[node.indices]
        data = ArrayDataset(self.x[node.indices], flip_labels(y, self.classes) if node.behaviour == "labelflip" else y)
        self.model.load_state_dict(tensors.unflatten(start, self.like))
        train_local(self.model, data, LocalTrainConfig(t.epochs, t.batch_size, t.lr, t.momentum, node.seed), torch.device("cpu"))
        delta = tensors.flatten(self.model.state_dict()) - start
        if self.client_dp:
            from fedgpu.privacy.client_dp import add_share_of_noise, clip_update

            p = job.privacy
            delta, _ = clip_update(delta, min(p.client_clip, self.bounds.update_norm_bound))
            delta = add_share_of_noise(delta, p.client_clip, p.client_noise_multiplier, max(job.cohort_size, 1), np.random.default_rng())
        hook = update_hook(node.behaviour)
        if hook is not None:
            delta = hook(None, start, delta)  # type: ignore[arg-type]  # the simulated hooks never read the task
        elif node.behaviour == "replay":
            delta = np.zeros_like(delta) if previous is None else start - previous
        if not np.isfinite(delta).all():
            return None, 0.0
        bounds = self.bounds if not self.client_dp else ClaimBounds(self.bounds.max_weight, math.inf)
        bounded, weight, _ = clamp_claim(delta, len(data) * WEIGHT_PER_SAMPLE, bounds)
        return bounded, weight


__all__ = ["CohortResult", "CohortWorker", "Context", "WEIGHT_PER_SAMPLE"]
