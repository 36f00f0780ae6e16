"""The volunteer node: register, long-poll for tasks, train on local data, encrypt, sign, upload.

Model code never arrives over the network: a task names a model from the local registry, and the
weights it downloads are safetensors checked against that architecture. A task the node cannot do
(unknown model, unmapped dataset, privacy budget exhausted) is declined with a typed reason. A
public-data task needs no files: the node builds the shard it names (fedgpu.datasets.public_shard)
and trains on it deterministically, since another node may be running the same task (docs/verification.md).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np
import torch

from fedgpu import crypto
from fedgpu.claims import ClaimBounds, clamp_claim
from fedgpu.datasets import (
    SCHEMAS,
    ArrayDataset,
    Schema,
    available_schemas,
    get_schema,
    load_file,
    public_capability,
    public_shard,
    validate,
)
from fedgpu.errors import (
    CapabilityError,
    ConfigError,
    FedgpuError,
    HeadroomExceeded,
    PrivacyBudgetExceeded,
    SchemaMismatch,
    StateError,
    UnsupportedTask,
)
from fedgpu.evaluation import parse_device
from fedgpu.files import write_atomic
from fedgpu.models import ModelSpec, available_models, build_model
from fedgpu.node.training import LocalTrainConfig, LocalTrainer, Trainer, deterministic
from fedgpu.proto.fedgpu.v1 import node_pb2, node_pb2_grpc
from fedgpu.wire import PROTOCOL_VERSION, chunks, tensors, transport
from fedgpu.wire.auth import Identity
from fedgpu.wire.records import LedgerReceipt, Task
from fedgpu.wire.serde import receipt_from_proto, task_from_proto, upload_progress_from_proto
from fedgpu.wire.transport import TLSConfig

if TYPE_CHECKING:
    from fedgpu.node.privacy_gate import PrivacyGate

log = logging.getLogger("fedgpu.node")

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}
# DP releases a node keeps to re-send on a retried attempt (NodeAgent._train): a job or two in flight, each
# one model-sized float64 vector.
DP_RELEASES_KEPT = 4
ZERO_POOLS_KEPT = 2  # jobs whose encryptions of zero a node makes ahead (ckks: 16 MB per 1 M parameters each)

# The aggregator's admission policy refused (rate limit, allow-list): retried with a back-off up to a minute.
ADMISSION = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED}

# A hook that may replace the honest update (used by the demo's simulated adversaries, see
# fedgpu/adversaries.py). Arguments: task, global flat weights, honest delta; returns a delta.
UpdateHook = Callable[[Task, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class NodeConfig:
    aggregator: str
    data: dict[str, Path]
    identity_path: Path
    name: str = ""
    poll_seconds: int = 20
    epsilon_cap: float | None = None
    ledger_path: Path | None = None
    update_hook: UpdateHook | None = None
    weight_scale: float = 1e-3   # FedAvg weight = samples * weight_scale: keeps encrypted sums small
    extra_datasets: dict[str, ArrayDataset] = field(default_factory=dict)
    tls: TLSConfig = field(default_factory=TLSConfig)  # --tls-ca: the CA that signed the aggregator's certificate
    identity_wait: float = 45.0  # refused because another live process has this identity: wait this long for it to go quiet
    device: str | None = None    # --device: auto (None), cpu, cuda, cuda:N
    threads: int | None = None   # --threads: torch's intra-op CPU threads for this process (None: leave torch's default)
    encrypt_ahead: bool = True   # make the next round's encryptions of zero while idle (--no-encrypt-ahead: fedgpu.crypto.zero_pool)
    public_data: bool = True     # take public-data tasks (the node builds the public datasets itself; --no-public-data)
    slowdown: float = 1.0        # simulated slow node (fedgpu.adversaries "slow"): each task's training takes this many times as long
    trainer: Trainer = field(default_factory=LocalTrainer)  # --flower-client: a Flower client's fit (fedgpu.node.flower)


class NodeAgent:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.identity = Identity.load_or_create(cfg.identity_path)
        self.session = os.urandom(16)  # tells this process from another one with the same identity (same --home)
        self.device = parse_device(cfg.device)
        if cfg.threads is not None:
            if cfg.threads < 1:
                raise ConfigError(f"--threads {cfg.threads}: must be at least 1")
            torch.set_num_threads(cfg.threads)  # process-wide: a node shares its machine with its owner's other work
        self._data: dict[str, ArrayDataset] = dict(cfg.extra_datasets)
        self._checked: dict[tuple[str, Schema], ArrayDataset] = {}  # (name, the job's schema) -> the file, checked against it
        named = available_schemas()
        for name, path in cfg.data.items():
            if not Path(path).exists():
                raise ConfigError(f"--data {name}={path}: the file does not exist")
            if name in named:
                try:  # a named schema: a bad file is told at start, while the operator is looking
                    self._data[name] = load_file(path, named[name])
                except SchemaMismatch as exc:  # a job may declare its own schema under this name: keep the file for that
                    log.warning("--data %s: %s; it will be checked against each job's declared schema when a task arrives", name, exc)
            # otherwise the file is checked against the job's schema when a task arrives
        self._models: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
        self._stop = threading.Event()
        self.channel = transport.open_channel(cfg.aggregator, cfg.tls)
        self.stub = node_pb2_grpc.NodeServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.tasks_done = 0
        self.privacy: PrivacyGate | None = None  # the owner's privacy gate, opened with the first DP task
        # (job, dataset, round, model version, model, size, statistics?) -> what a DP task released (update, weight,
        # seconds, epsilon): a retried attempt of the round gets it again, never a new draw (DP_RELEASES_KEPT)
        self._dp_released: dict[tuple[str, str, int, int, str, int, bool], tuple[np.ndarray, float, float, float]] = {}
        # encryption-context fingerprint -> encryptions of zero made while idle (fedgpu.crypto.zero_pool), ZERO_POOLS_KEPT
        self._zero_pools: dict[str, crypto.ZeroPool] = {}
        self.receipts_path = cfg.identity_path.with_name("receipts.jsonl")
        self.chain_path = cfg.identity_path.with_name("identity.chain")  # the ids of the keys this node rotated away from
        self.former_ids = set(self.chain_path.read_text().split()[::2]) if self.chain_path.exists() else set()
        self.receipts_after, self._held = self._load_receipts()

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def stop(self) -> None:
        self._stop.set()
        for pool in list(self._zero_pools.values()):
            pool.pause()

    # ---- RPC helpers ---------------------------------------------------------------------------
    def _signed(self, method: str, req):  # type: ignore[no-untyped-def]
        self.identity.sign(method, req)
        return req

    def register(self) -> None:
        public = [public_capability(name) for name in SCHEMAS] if self.cfg.public_data else []
        caps = node_pb2.Capabilities(models=available_models(), datasets=sorted({*self._data, *self.cfg.data}) + public, device=self._device_name())
        req = node_pb2.RegisterRequest(public_key=self.identity.public_key, name=self.cfg.name or self.node_id, capabilities=caps, protocol_version=PROTOCOL_VERSION, session=self.session)
        self.stub.Register(self._signed("Register", req), timeout=30)
        held = [f"{k}({len(v)})" for k, v in self._data.items()] + [f"{k}(checked per job)" for k in self.cfg.data if k not in self._data]
        log.info("registered as %s (public key %s) with %s", self.node_id, self.identity.public_key.hex(), ", ".join(held))

    def rotate_key(self) -> tuple[str, str]:
        """Replace the identity key by a new one, keeping the node's earnings with its operator; returns
        (the new node id, the operator id). The old key stays in HOME as ``identity.<old id>.pem`` and its id
        in ``identity.chain``. A rotation interrupted at any point is finished by running it again: the
        new key waits in ``identity.pem.new`` until the aggregator has taken it."""
        import os

        path = self.cfg.identity_path
        new = Identity.load_or_create(path.with_name(path.name + ".new"))
        req = node_pb2.RotateKeyRequest(new_public_key=new.public_key, new_key_signature=new.accept_rotation(self.identity.public_key))
        reply = self.stub.RotateKey(self._signed("RotateKey", req), timeout=30)
        old = self.identity
        backup = path.with_name(f"identity.{old.node_id}.pem")
        if not backup.exists():
            old.save(backup)
        with self.chain_path.open("a") as f:
            f.write(f"{old.node_id} {old.public_key.hex()}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(path.with_name(path.name + ".new"), path)  # identity.pem is the old key or the new one, never missing
        self.identity = new
        self.former_ids.add(old.node_id)
        log.info("identity key rotated: node %s is now node %s (operator %s)", old.node_id, reply.node_id, reply.operator_id)
        return str(reply.node_id), str(reply.operator_id)

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self.device)}"
        return "cpu"

    # ---- main loop -----------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        """Tell the aggregator the node is alive while it trains (a long-poll does so while idle)."""
        while not self._stop.wait(10.0):
            with contextlib.suppress(grpc.RpcError, ValueError):  # the main loop handles reconnection
                self.stub.Heartbeat(self._signed("Heartbeat", node_pb2.HeartbeatRequest()), timeout=10)

    def run(self, max_tasks: int | None = None) -> None:
        """Serve tasks until stopped; reconnect with exponential back-off when the aggregator is away."""
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        backoff, admission_backoff = 0.5, 2.0
        registered = False
        last_failure = ""
        duplicate_since: float | None = None
        while not self._stop.is_set() and (max_tasks is None or self.tasks_done < max_tasks):
            try:
                if not registered:
                    self.register()
                    registered = True
                pull = node_pb2.PullTaskRequest(wait_seconds=self.cfg.poll_seconds, receipts_after=self.receipts_after)
                reply = self.stub.PullTask(self._signed("PullTask", pull), timeout=self.cfg.poll_seconds + 10)
                backoff, admission_backoff = 0.5, 2.0
                last_failure = ""
                self._keep_receipts([receipt_from_proto(r) for r in reply.receipts])
                if reply.HasField("task"):
                    self.handle(task_from_proto(reply.task))
            except grpc.RpcError as exc:
                if transport.handshake_failed(exc):  # a CA or certificate problem: retrying cannot fix it
                    raise transport.error_from_rpc(exc, self.cfg.aggregator) from exc
                code = exc.code()
                if not registered and code == grpc.StatusCode.FAILED_PRECONDITION:
                    # Another live process has this identity. One that has just stopped is forgotten after the
                    # aggregator's liveness timeout: wait that long, then give up naming the --home to change.
                    now = time.monotonic()
                    if duplicate_since is None:
                        duplicate_since = now
                        log.warning("registration refused: %s; waiting up to %.0f s for it to go quiet", exc.details(), self.cfg.identity_wait)
                    if now - duplicate_since >= self.cfg.identity_wait:
                        home = self.cfg.identity_path.parent
                        raise StateError(
                            f"{exc.details()}. This process uses --home {home} (identity {self.cfg.identity_path}): stop the other "
                            f"`fedgpu node --home {home}`, or start this one with another --home"
                        ) from exc
                    self._stop.wait(2.0)
                    continue
                failure = f"{code.name}: {exc.details()}"
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    registered = False  # the aggregator may have lost its database: register again
                if code in RETRYABLE or code == grpc.StatusCode.UNAUTHENTICATED:
                    if code in RETRYABLE and failure != last_failure:  # say why once, where the operator sees it
                        log.warning("aggregator %s unreachable (%s); retrying with back-off", self.cfg.aggregator, failure)
                    last_failure = failure
                    log.info("aggregator unreachable (%s); retrying in %.1f s", code.name, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if code not in ADMISSION or failure != last_failure:
                    log.warning("aggregator refused: %s %s", code.name, exc.details())
                last_failure = failure
                if code in ADMISSION:  # rate-limited or not (yet) on an allow-list: ask again later, not every second
                    self._stop.wait(admission_backoff)
                    admission_backoff = min(admission_backoff * 2, 60.0)
                else:
                    self._stop.wait(1.0)

    def _load_receipts(self) -> tuple[int, set[tuple[str, int]]]:
        """The id of the last receipt held (sent with each pull, so the aggregator sends only later ones)
        and the (job, round) pairs held, so that a receipt delivered twice is written once."""
        from fedgpu.rewards.chain import Receipt

        cursor = self.receipts_path.with_name("receipts.last")
        after = int(cursor.read_text() or 0) if cursor.exists() else 0
        held: set[tuple[str, int]] = set()
        if self.receipts_path.exists():
            for line in self.receipts_path.read_text().splitlines():
                if line.strip():
                    r = Receipt.from_json(line)
                    held.add((r.job_id, r.round))
        return after, held

    def _keep_receipts(self, receipts: list[LedgerReceipt]) -> None:
        """Append verified reward receipts to HOME/receipts.jsonl (the node's proof of what it was paid),
        durably, then move the acknowledged id on: a crash in between only means a second delivery."""
        if not receipts:
            return
        import os

        with self.receipts_path.open("a") as f:
            for delivered in receipts:
                r = receipt = delivered.receipt
                if receipt.node_id not in {self.node_id, *self.former_ids} or not receipt.verify():
                    log.warning("ignoring a receipt that does not verify: %s round %d", r.job_id, r.round)
                    continue
                if (r.job_id, r.round) not in self._held:
                    f.write(receipt.to_json() + "\n")
                    self._held.add((r.job_id, r.round))
            f.flush()
            os.fsync(f.fileno())
        self.receipts_after = max(self.receipts_after, max(r.id for r in receipts))
        write_atomic(self.receipts_path.with_name("receipts.last"), str(self.receipts_after).encode())

    def handle(self, task: Task) -> None:
        for pool in self._zero_pools.values():  # the task's training gets the CPU the pools' filling had
            pool.pause()
        try:
            self._check_capable(task)
            self.cfg.trainer.check(task)
            self._admit(task)
            delta, weight, seconds, epsilon = self._train(task)
            self._upload(task, delta, weight, seconds, epsilon)
            self.tasks_done += 1
            made_ahead = self._zero_pools.get(task.encryption.fingerprint)
            if made_ahead is not None:  # the next round's encryptions of zero, on CPU left idle while this round closes
                made_ahead.refill()
        except UnsupportedTask as exc:
            self._decline(task, node_pb2.DECLINE_REASON_FAILED, f"unsupported: {exc}")
        except CapabilityError as exc:
            reason = node_pb2.DECLINE_REASON_MISSING_MODEL if "model" in str(exc) else node_pb2.DECLINE_REASON_MISSING_DATASET
            self._decline(task, reason, str(exc))
        except SchemaMismatch as exc:
            self._decline(task, node_pb2.DECLINE_REASON_SCHEMA_MISMATCH, str(exc))
        except HeadroomExceeded as exc:
            self._decline(task, node_pb2.DECLINE_REASON_VALUE_RANGE, str(exc))
        except PrivacyBudgetExceeded as exc:
            self._decline(task, node_pb2.DECLINE_REASON_PRIVACY_BUDGET, str(exc))
        except grpc.RpcError:
            raise
        except FedgpuError as exc:
            log.warning("task %s failed: %s", task.task_id, exc)
            self._decline(task, node_pb2.DECLINE_REASON_FAILED, str(exc))

    def _decline(self, task: Task, reason: node_pb2.DeclineReason, message: str) -> None:
        log.info("declining task of job %s: %s", task.job_id, message)
        req = node_pb2.DeclineTaskRequest(task_id=task.task_id, reason=reason, message=message[:500])
        self.stub.DeclineTask(self._signed("DeclineTask", req), timeout=30)

    def _check_capable(self, task: Task) -> None:
        if task.model not in available_models():
            raise CapabilityError(f"model {task.model!r} is not installed on this node")
        if task.public_data is not None:
            if task.dataset not in SCHEMAS or not self.cfg.public_data:
                raise CapabilityError(f"dataset {task.dataset!r}: this node does not build it for public-data tasks")
        elif task.dataset not in self._data and task.dataset not in self.cfg.data:
            raise CapabilityError(f"dataset {task.dataset!r} is not mapped on this node (use --data {task.dataset}=PATH)")
        self._dataset(task)  # SchemaMismatch: declined before any work

    def _dataset(self, task: Task) -> ArrayDataset:
        """The owner's data for the task, checked against the schema the job carries (the named default if none);
        on a public-data task, the shard it names, built here."""
        pd = task.public_data
        if pd is not None:
            return public_shard(task.dataset, pd.samples, pd.data_seed, pd.shard, pd.shards)
        schema = task.schema or get_schema(task.dataset)
        key = (task.dataset, schema)
        if key not in self._checked:
            if task.dataset in self.cfg.data:
                path = self.cfg.data[task.dataset]
                try:
                    ds = load_file(path, schema)
                except SchemaMismatch as exc:  # the operator's path stays on the node: the driver sees the schema's words
                    raise SchemaMismatch(str(exc).replace(str(path), f"--data {task.dataset}")) from exc
            else:
                ds = validate(self._data[task.dataset], schema, f"dataset {task.dataset!r}")
            self._checked = {k: v for k, v in self._checked.items() if k[0] != task.dataset}
            self._checked[key] = ds
        return self._checked[key]

    def _privacy_gate(self) -> PrivacyGate:
        """The owner's privacy gate, opened with the first DP task (it loads Opacus)."""
        if self.privacy is None:
            from fedgpu.node.privacy_gate import PrivacyGate

            self.privacy = PrivacyGate(self.cfg.ledger_path or self.cfg.identity_path.with_name("privacy.db"), self.cfg.epsilon_cap, self.node_id)
        return self.privacy

    def _admit(self, task: Task) -> None:
        """A DP job is served only if all its planned rounds fit under the owner's cap (else declined up front)."""
        if task.privacy.enabled and task.privacy.mode == "sample":
            self._privacy_gate().admit(task, self._dataset(task))

    # ---- work ----------------------------------------------------------------------------------
    def _global_state(self, task: Task, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        key = (task.job_id, task.model_version)
        if key not in self._models:
            parts = []
            req = node_pb2.DownloadModelRequest(job_id=task.job_id, version=task.model_version)
            for msg in self.stub.DownloadModel(self._signed("DownloadModel", req), timeout=120):
                parts.append(msg.chunk)
            state = tensors.state_from_bytes(chunks.join(parts), model.state_dict())
            self._models = {k: v for k, v in self._models.items() if k[0] != task.job_id}
            self._models[key] = state
        return self._models[key]

    def _statistics(self, task: Task) -> tuple[np.ndarray, float, float, float]:
        """A statistics task (federated standardisation): the local feature moments as the upload, weighted by the sample count.
        On a DP job: the noisy sums of the Gaussian mechanism, charged to the owner's ledger first (fedgpu.datasets.statistics)."""
        from fedgpu.datasets.statistics import dp_statistics_update, statistics_update

        t0 = time.perf_counter()
        data = self._dataset(task)
        enc = task.encryption
        headroom = crypto.headroom(enc.scheme, enc.params)
        schema = task.schema or get_schema(task.dataset)
        epsilon = 0.0
        if task.privacy.enabled:
            if task.privacy.mode != "sample":
                raise UnsupportedTask("a statistics round under client-level DP is not offered (fedgpu refuses such a job file): standardise the features before the job, or use privacy.mode = sample")
            noise, epsilon = self._privacy_gate().statistics(task, data)  # charged (durably) before anything is computed
            vec, weight = dp_statistics_update(data, schema, int(task.num_params), noise, headroom, task.nodes_per_round, np.random.default_rng())
            log.info("job %s round %d: DP feature statistics of %d samples (noise multiplier %.3f, epsilon now %.4f)", task.job_id, task.round, len(data), noise, epsilon)
        else:
            vec, weight = statistics_update(data, schema, int(task.num_params), task.max_weight, headroom, task.nodes_per_round)
            log.info("job %s round %d: feature statistics of %d samples", task.job_id, task.round, len(data))
        return vec, weight, time.perf_counter() - t0, epsilon

    def _train(self, task: Task) -> tuple[np.ndarray, float, float, float]:
        """The task's upload before encryption: (change or statistics, weight, seconds, the owner's epsilon).

        A DP task's output is a release of the owner's data: a retried attempt of the same round, from the
        same global model (the aggregator restarted, or the attempt gathered too few updates), gets the same
        release again. Sending it twice is post-processing and costs no epsilon; training again would charge
        the owner's ledger for a second, unplanned round of the job. A restarted node has forgotten it, and
        draws (and is charged) anew.
        """
        # the model and its size too: a task that asks for anything else is another release (trained and charged)
        key = (task.job_id, task.dataset, int(task.round), int(task.model_version), task.model, int(task.num_params), task.statistics) if task.privacy.enabled else None
        if key is not None and key in self._dp_released:
            log.info("job %s round %d: the DP release of an earlier attempt of this round, sent again (nothing charged)", task.job_id, task.round)
            return self._dp_released[key]
        out = self._statistics(task) if task.statistics else self._train_model(task)
        if key is not None:
            self._dp_released = {**dict(list(self._dp_released.items())[1 - DP_RELEASES_KEPT:]), key: out}
        return out

    def _train_model(self, task: Task) -> tuple[np.ndarray, float, float, float]:
        schema = task.schema or get_schema(task.dataset)
        data = self._dataset(task)
        model = build_model(task.model, ModelSpec(schema.input_shape, schema.num_classes))
        state = self._global_state(task, model)
        model.load_state_dict(state)
        start = tensors.flatten(state)
        if start.size != task.num_params:
            raise ConfigError(f"model {task.model} has {start.size} values here, the job says {task.num_params}: versions differ")
        p = task.training
        cfg = LocalTrainConfig(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, momentum=p.momentum, seed=p.seed)
        t0 = time.perf_counter()
        epsilon, examples = 0.0, len(data)
        if task.privacy.enabled and task.privacy.mode == "sample":
            epsilon = self._privacy_gate().train(task, model, data, cfg, self.device)  # charges the ledger first
        elif task.public_data is not None:
            with deterministic():  # bit-identical to any replica of this task on this device class
                examples = self.cfg.trainer.train(model, data, cfg, task.round, self.device)
        else:
            examples = self.cfg.trainer.train(model, data, cfg, task.round, self.device)
        if self.cfg.slowdown > 1:  # a real delay: the aggregator's clocks must see it, whatever the node reports
            self._stop.wait((self.cfg.slowdown - 1) * (time.perf_counter() - t0))
        seconds = time.perf_counter() - t0
        delta = tensors.flatten(model.state_dict()) - start
        bounds = ClaimBounds.from_wire(task.max_weight, task.update_norm_bound)
        client_dp = task.privacy.enabled and task.privacy.mode == "client"
        if client_dp:
            from fedgpu.privacy.client_dp import add_share_of_noise, clip_update

            # the job's bound on the change is applied with the clip, before the noise share (which the driver allows for)
            delta, _ = clip_update(delta, min(task.privacy.client_clip, bounds.update_norm_bound))
            delta = add_share_of_noise(delta, task.privacy.client_clip, task.privacy.client_noise_multiplier, max(task.privacy.cohort_size, 1), np.random.default_rng())
        if self.cfg.update_hook is not None:
            delta = self.cfg.update_hook(task, start, delta)
        if not np.isfinite(delta).all():
            raise FedgpuError("training diverged (NaN or infinite weights); lower the learning rate")
        delta, weight = self._bound(delta, examples * self.cfg.weight_scale, bounds if not client_dp else ClaimBounds(bounds.max_weight, math.inf))
        return delta, weight, seconds, epsilon

    def _bound(self, delta: np.ndarray, weight: float, bounds: ClaimBounds) -> tuple[np.ndarray, float]:
        """Clamp the claim to the job's bounds (fedgpu.claims): a cohort whose sum exceeds them is dropped."""
        bounded, capped, clamped = clamp_claim(delta, weight, bounds)
        if clamped:
            log.info(
                "claim clamped to the job's bounds: weight %.4g -> %.4g, norm of the change %.4g -> %.4g",
                weight, capped, float(np.linalg.norm(delta)), float(np.linalg.norm(bounded)),
            )
        return bounded, capped

    def _zero_pool(self, scheme: str, params: bytes, public_material: bytes, fingerprint: str) -> crypto.ZeroPool | None:
        """The pool of encryptions of zero under this job's public key; the oldest job's is dropped past ZERO_POOLS_KEPT."""
        if not self.cfg.encrypt_ahead:
            return None
        pool = self._zero_pools.get(fingerprint)
        if pool is None:
            pool = crypto.zero_pool(scheme, params, public_material)
            if pool is None:
                return None
            while len(self._zero_pools) >= ZERO_POOLS_KEPT:
                self._zero_pools.pop(next(iter(self._zero_pools))).pause()
            self._zero_pools[fingerprint] = pool
        return pool

    def _upload(self, task: Task, delta: np.ndarray, weight: float, seconds: float, epsilon: float = 0.0) -> None:
        enc = task.encryption
        if crypto.context_fingerprint(enc.scheme, enc.params, enc.public_material) != enc.fingerprint:
            raise FedgpuError("the task's encryption context does not match its fingerprint; refusing to encrypt")
        zeros = self._zero_pool(enc.scheme, enc.params, enc.public_material, enc.fingerprint)
        encryptor = crypto.encryptor(enc.scheme, enc.params, enc.public_material, seed=task.training.seed, zeros=zeros)
        layout = crypto.ChunkLayout(int(task.num_params), int(enc.values_per_chunk))
        t0 = time.perf_counter()
        payloads = [encryptor.encrypt(v) for v in layout.split(delta, weight)]
        encrypt_seconds = time.perf_counter() - t0
        count = len(payloads)

        def messages(start: int) -> Iterator[node_pb2.UpdateChunk]:
            for i in range(start, count):
                msg = node_pb2.UpdateChunk(task_id=task.task_id, fingerprint=enc.fingerprint, chunk=chunks.make_chunk(i, count, payloads[i]), train_seconds=seconds, epsilon=epsilon, encrypt_seconds=encrypt_seconds)
                yield self._signed("UploadUpdate", msg)

        start = 0
        for attempt in range(5):
            try:
                if attempt:  # where the last try got to (an interrupted stream, or one the aggregator cut short)
                    status = upload_progress_from_proto(self.stub.UploadStatus(self._signed("UploadStatus", node_pb2.UploadStatusRequest(task_id=task.task_id)), timeout=30))
                    if status.complete or status.not_needed:
                        return
                    start = status.received
                reply = upload_progress_from_proto(self.stub.UploadUpdate(messages(start), timeout=max(30.0, task.deadline_ms / 1000 - time.time())))
                if reply.complete:
                    ahead = f"; {zeros.hits} of {zeros.drawn} encryptions of zero made ahead" if zeros is not None else ""
                    log.info("job %s round %d: uploaded %d chunks (%.1f s training, %.1f s encrypting%s)", task.job_id, task.round, count, seconds, encrypt_seconds, ahead)
                    return
                if reply.not_needed:  # over-selection: others were faster; not a fault of this node
                    log.info("job %s round %d: round closed without this update (it had enough before this one)", task.job_id, task.round)
                    return
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:  # its attempt died with an aggregator process: redone without it
                    log.info("job %s round %d: the aggregator no longer knows this task (%s); update dropped", task.job_id, task.round, exc.details())
                    return
                if exc.code() not in RETRYABLE:
                    raise
                log.info("upload interrupted (%s); resuming", exc.code().name)
                if self._stop.wait(0.5 * 2**attempt):
                    return
        log.warning("job %s round %d: upload gave up after 5 tries; the round goes on without this update", task.job_id, task.round)


__all__ = [
    "ADMISSION",
    "DP_RELEASES_KEPT",
    "NodeAgent",
    "NodeConfig",
    "RETRYABLE",
    "UpdateHook",
    "ZERO_POOLS_KEPT",
]
