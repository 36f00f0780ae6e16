"""Domain objects <-> protobuf, in one place (``x_to_proto`` / ``x_from_proto`` pairs).

The domain objects are the dataclasses of :mod:`fedgpu.wire.records` and the job file's
:class:`~fedgpu.config.JobConfig`. Every ``x_from_proto(x_to_proto(obj)) == obj`` (tests/wire/test_serde.py).
"""

from __future__ import annotations

from fedgpu.capacity import CapacityRecord, SignedRecord
from fedgpu.config import STATISTICS_SHARE, JobConfig, job_from_dict
from fedgpu.datasets import SCHEMAS, Schema, schema_to_dict
from fedgpu.proto.fedgpu.v1 import common_pb2, driver_pb2, node_pb2
from fedgpu.rewards.chain import Receipt
from fedgpu.wire.records import (
    AggregationPlan,
    EncryptionContext,
    JobEvent,
    JobEventKind,
    JobSpec,
    JobStatus,
    LedgerReceipt,
    PrivacyPlan,
    PublicDataPlan,
    PublicDataShard,
    ReplicaDispute,
    ReplicaSet,
    RoundResult,
    SelectionPlan,
    Task,
    TrainingPlan,
    UploadProgress,
)


def job_spec_of(job: JobConfig, encryption: EncryptionContext, num_params: int) -> JobSpec:
    """The spec a driver submits for its job file: what every role reads of the job from then on."""
    p, a, sel = job.privacy, job.aggregation, job.selection
    return JobSpec(
        name=job.name,
        model=job.model,
        dataset=job.dataset,
        rounds=job.rounds,
        nodes_per_round=job.nodes_per_round,
        min_nodes=job.min_nodes,
        deadline_seconds=job.deadline_seconds,
        training=TrainingPlan(epochs=job.training.epochs, batch_size=job.training.batch_size, lr=job.training.lr, momentum=job.training.momentum, seed=job.seed),
        cohort_size=job.cohort_size,
        seed=job.seed,
        privacy=PrivacyPlan(
            enabled=p.enabled, epsilon=p.epsilon, delta=p.delta, max_grad_norm=p.max_grad_norm, rounds=job.rounds, accountant=p.accountant,
            mode=p.mode, client_noise_multiplier=p.client_noise_multiplier, client_clip=p.client_clip, cohort_size=job.cohort_size,
            statistics_epsilon=job.statistics_epsilon,
        ),
        encryption=encryption,
        num_params=num_params,
        reward_pool=job.rewards.pool_per_round,
        driver_lease_seconds=job.driver_lease_seconds,
        max_weight=job.max_weight,
        update_norm_bound=job.update_norm_bound,
        aggregation=AggregationPlan(rule=a.rule, trim_fraction=a.trim_fraction, norm_bound=a.norm_bound),
        schema=job.dataset_schema,
        standardize=job.data.standardize,
        public_data=public_data_plan_of(job),
        selection=SelectionPlan(rule=sel.rule, exploration=sel.exploration, over_select=sel.over_select, dp_over_selection=sel.dp_over_selection),
    )


def public_data_plan_of(job: JobConfig) -> PublicDataPlan | None:
    """The job's [public_data] table with its defaults filled in (None: a private-data job)."""
    d = job.public_data
    if not d.enabled:
        return None
    return PublicDataPlan(samples=d.samples, data_seed=d.data_seed, shards=d.shards or job.nodes_per_round, replication=d.replication, tolerance=d.tolerance)


def job_to_proto(job: JobConfig, encryption: common_pb2.EncryptionContext, num_params: int) -> driver_pb2.JobSpec:
    return job_spec_to_proto(job_spec_of(job, encryption_from_proto(encryption), num_params))


def job_from_proto(spec: driver_pb2.JobSpec, check_registry: bool = True) -> JobConfig:
    """Validate a submitted spec with the same rules as a job file (ConfigError names the field)."""
    return job_config(job_spec_from_proto(spec), check_registry)


def job_config(spec: JobSpec, check_registry: bool = True) -> JobConfig:
    """The job file a submitted spec stands for, validated with the same rules (ConfigError names the field)."""
    t, p = spec.training, spec.privacy
    data = {
        "name": spec.name or "job",
        "model": spec.model,
        "dataset": spec.dataset,
        "rounds": spec.rounds,
        "nodes_per_round": spec.nodes_per_round,
        "min_nodes": spec.min_nodes,
        "deadline_seconds": spec.deadline_seconds,
        "cohort_size": spec.cohort_size,
        "seed": spec.seed,
        "driver_lease_seconds": spec.driver_lease_seconds or JobConfig.driver_lease_seconds,
        "max_weight": spec.max_weight or JobConfig.max_weight,
        "update_norm_bound": spec.update_norm_bound,
        "training": {"epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr, "momentum": t.momentum},
        "encryption": {"scheme": spec.encryption.scheme},
        "rewards": {"pool_per_round": spec.reward_pool},
    }
    a = spec.aggregation
    if a.rule:  # a spec without a plan keeps the defaults (fedavg)
        data["aggregation"] = {"rule": a.rule, "trim_fraction": a.trim_fraction, "norm_bound": a.norm_bound}
    if spec.schema is not None and spec.schema != SCHEMAS.get(spec.dataset):  # a named default travels too; it reads back as the name
        data["schema"] = schema_to_dict(spec.schema)
    if spec.standardize:
        data["data"] = {"standardize": True}
    if spec.public_data is not None:
        d = spec.public_data
        data["public_data"] = {"samples": d.samples, "data_seed": d.data_seed, "shards": d.shards, "replication": d.replication, "tolerance": d.tolerance}
    sel = spec.selection
    if sel.rule:  # a spec without a plan keeps the job file's defaults (uniform)
        data["selection"] = {"rule": sel.rule, "exploration": sel.exploration, "over_select": sel.over_select, "dp_over_selection": sel.dp_over_selection}
    if p.enabled:
        data["privacy"] = {
            "enabled": True,
            "epsilon": p.epsilon,
            "delta": p.delta,
            "max_grad_norm": p.max_grad_norm,
            "accountant": p.accountant,
            "mode": p.mode,
            "client_clip": p.client_clip,
            "client_noise_multiplier": p.client_noise_multiplier,
            # the spec carries the resolved figure; the default share reads back as the default (0), so the job is the same
            "statistics_epsilon": 0.0 if p.statistics_epsilon == STATISTICS_SHARE * p.epsilon else p.statistics_epsilon,
        }
    return job_from_dict(data, check_registry)


# ---- plans and contexts --------------------------------------------------------------------------
def schema_to_proto(s: Schema | None) -> common_pb2.DatasetSchema | None:
    if s is None:
        return None
    return common_pb2.DatasetSchema(
        name=s.name, input_shape=list(s.input_shape), num_classes=s.num_classes, columns=list(s.columns), label=s.label, dtype=s.dtype,
        range_low=[r[0] for r in s.ranges], range_high=[r[1] for r in s.ranges],
    )


def schema_from_proto(m: common_pb2.DatasetSchema) -> Schema | None:
    """None for an unset message (a spec or task from before schemas travelled)."""
    if not m.name:
        return None
    ranges = tuple(zip(m.range_low, m.range_high, strict=False))
    return Schema(m.name, tuple(int(d) for d in m.input_shape), m.num_classes, tuple(m.columns), m.label or "label", m.dtype or "float32", ranges)


def training_plan_to_proto(t: TrainingPlan) -> common_pb2.TrainingPlan:
    return common_pb2.TrainingPlan(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum, seed=t.seed)


def training_plan_from_proto(m: common_pb2.TrainingPlan) -> TrainingPlan:
    return TrainingPlan(epochs=m.epochs, batch_size=m.batch_size, lr=m.lr, momentum=m.momentum, seed=m.seed)


def privacy_plan_to_proto(p: PrivacyPlan) -> common_pb2.PrivacyPlan:
    return common_pb2.PrivacyPlan(
        enabled=p.enabled,
        epsilon=p.epsilon,
        delta=p.delta,
        max_grad_norm=p.max_grad_norm,
        rounds=p.rounds,
        accountant=p.accountant,
        mode=p.mode,
        client_noise_multiplier=p.client_noise_multiplier,
        client_clip=p.client_clip,
        cohort_size=p.cohort_size,
        statistics_epsilon=p.statistics_epsilon,
    )


def privacy_plan_from_proto(m: common_pb2.PrivacyPlan) -> PrivacyPlan:
    return PrivacyPlan(
        enabled=m.enabled,
        epsilon=m.epsilon,
        delta=m.delta,
        max_grad_norm=m.max_grad_norm,
        rounds=m.rounds,
        accountant=m.accountant,
        mode=m.mode,
        client_noise_multiplier=m.client_noise_multiplier,
        client_clip=m.client_clip,
        cohort_size=m.cohort_size,
        statistics_epsilon=m.statistics_epsilon,
    )


def aggregation_plan_to_proto(p: AggregationPlan) -> driver_pb2.AggregationPlan:
    return driver_pb2.AggregationPlan(rule=p.rule, trim_fraction=p.trim_fraction, norm_bound=p.norm_bound)


def aggregation_plan_from_proto(m: driver_pb2.AggregationPlan) -> AggregationPlan:
    return AggregationPlan(rule=m.rule, trim_fraction=m.trim_fraction, norm_bound=m.norm_bound)


def public_data_plan_to_proto(p: PublicDataPlan) -> driver_pb2.PublicDataPlan:
    return driver_pb2.PublicDataPlan(samples=p.samples, data_seed=p.data_seed, shards=p.shards, replication=p.replication, tolerance=p.tolerance)


def public_data_plan_from_proto(m: driver_pb2.PublicDataPlan) -> PublicDataPlan:
    return PublicDataPlan(samples=m.samples, data_seed=m.data_seed, shards=m.shards, replication=m.replication, tolerance=m.tolerance)


def public_data_shard_to_proto(p: PublicDataShard) -> node_pb2.PublicDataShard:
    return node_pb2.PublicDataShard(samples=p.samples, data_seed=p.data_seed, shard=p.shard, shards=p.shards)


def public_data_shard_from_proto(m: node_pb2.PublicDataShard) -> PublicDataShard:
    return PublicDataShard(samples=m.samples, data_seed=m.data_seed, shard=m.shard, shards=m.shards)


def replica_set_to_proto(r: ReplicaSet) -> driver_pb2.ReplicaSet:
    return driver_pb2.ReplicaSet(members=r.members, shard=r.shard, seed=r.seed, settles=r.settles)


def replica_set_from_proto(m: driver_pb2.ReplicaSet) -> ReplicaSet:
    return ReplicaSet(members=tuple(m.members), shard=m.shard, seed=m.seed, settles=m.settles)


def replica_dispute_to_proto(d: ReplicaDispute) -> driver_pb2.ReplicaDispute:
    return driver_pb2.ReplicaDispute(round=d.round, shard=d.shard, seed=d.seed, model_version=d.model_version, members=d.members, prefer=d.prefer)


def replica_dispute_from_proto(m: driver_pb2.ReplicaDispute) -> ReplicaDispute:
    return ReplicaDispute(round=m.round, shard=m.shard, seed=m.seed, model_version=m.model_version, members=tuple(m.members), prefer=tuple(m.prefer))


def selection_plan_to_proto(p: SelectionPlan) -> driver_pb2.SelectionPlan:
    return driver_pb2.SelectionPlan(rule=p.rule, exploration=p.exploration, over_select=p.over_select, dp_over_selection=p.dp_over_selection)


def selection_plan_from_proto(m: driver_pb2.SelectionPlan) -> SelectionPlan:
    return SelectionPlan(rule=m.rule, exploration=m.exploration, over_select=m.over_select, dp_over_selection=m.dp_over_selection)


def encryption_to_proto(e: EncryptionContext) -> common_pb2.EncryptionContext:
    return common_pb2.EncryptionContext(
        scheme=e.scheme, params=e.params, public_material=e.public_material, fingerprint=e.fingerprint, values_per_chunk=e.values_per_chunk
    )


def encryption_from_proto(m: common_pb2.EncryptionContext) -> EncryptionContext:
    return EncryptionContext(
        scheme=m.scheme, params=m.params, public_material=m.public_material, fingerprint=m.fingerprint, values_per_chunk=m.values_per_chunk
    )


# ---- jobs ----------------------------------------------------------------------------------------
def job_spec_to_proto(s: JobSpec) -> driver_pb2.JobSpec:
    return driver_pb2.JobSpec(
        name=s.name,
        model=s.model,
        dataset=s.dataset,
        rounds=s.rounds,
        nodes_per_round=s.nodes_per_round,
        min_nodes=s.min_nodes,
        deadline_seconds=s.deadline_seconds,
        training=training_plan_to_proto(s.training),
        cohort_size=s.cohort_size,
        seed=s.seed,
        privacy=privacy_plan_to_proto(s.privacy),
        encryption=encryption_to_proto(s.encryption),
        num_params=s.num_params,
        reward_pool=s.reward_pool,
        driver_lease_seconds=s.driver_lease_seconds,
        max_weight=s.max_weight,
        update_norm_bound=s.update_norm_bound,
        aggregation=aggregation_plan_to_proto(s.aggregation),
        schema=schema_to_proto(s.schema),
        standardize=s.standardize,
        public_data=public_data_plan_to_proto(s.public_data) if s.public_data is not None else None,
        selection=selection_plan_to_proto(s.selection),
    )


def job_spec_from_proto(m: driver_pb2.JobSpec) -> JobSpec:
    return JobSpec(
        name=m.name,
        model=m.model,
        dataset=m.dataset,
        rounds=m.rounds,
        nodes_per_round=m.nodes_per_round,
        min_nodes=m.min_nodes,
        deadline_seconds=m.deadline_seconds,
        training=training_plan_from_proto(m.training),
        cohort_size=m.cohort_size,
        seed=m.seed,
        privacy=privacy_plan_from_proto(m.privacy),
        encryption=encryption_from_proto(m.encryption),
        num_params=m.num_params,
        reward_pool=m.reward_pool,
        driver_lease_seconds=m.driver_lease_seconds,
        max_weight=m.max_weight,
        update_norm_bound=m.update_norm_bound,
        aggregation=aggregation_plan_from_proto(m.aggregation),
        schema=schema_from_proto(m.schema),
        standardize=m.standardize,
        public_data=public_data_plan_from_proto(m.public_data) if m.HasField("public_data") else None,
        selection=selection_plan_from_proto(m.selection),
    )


def job_spec_to_bytes(s: JobSpec) -> bytes:
    """The form the store keeps (protobuf, never pickle)."""
    return bytes(job_spec_to_proto(s).SerializeToString())


def job_spec_from_bytes(data: bytes) -> JobSpec:
    m = driver_pb2.JobSpec()
    m.ParseFromString(data)
    return job_spec_from_proto(m)


def job_status_to_proto(s: JobStatus) -> driver_pb2.JobStatus:
    return driver_pb2.JobStatus(job_id=s.job_id, state=s.state, round=s.round, model_version=s.model_version, message=s.message, model_sha256=s.model_sha256)


def job_status_from_proto(m: driver_pb2.JobStatus) -> JobStatus:
    return JobStatus(job_id=m.job_id, state=m.state, round=m.round, model_version=m.model_version, message=m.message, model_sha256=m.model_sha256)


def job_event_kind_to_proto(k: JobEventKind) -> int:
    return int(driver_pb2.JobEventKind.Value("JOB_EVENT_KIND_" + k.name))


def job_event_kind_from_proto(v: int) -> JobEventKind:
    """An event kind; one this version does not know reads as UNSPECIFIED (a driver ignores it)."""
    name = driver_pb2.JobEventKind.Name(v) if v in driver_pb2.JobEventKind.values() else "JOB_EVENT_KIND_UNSPECIFIED"
    return JobEventKind[name.removeprefix("JOB_EVENT_KIND_")]


def job_event_to_proto(e: JobEvent) -> driver_pb2.JobEvent:
    return driver_pb2.JobEvent(
        kind=job_event_kind_to_proto(e.kind),  # type: ignore[arg-type]
        round=e.round,
        participants=e.participants,
        cohorts=[driver_pb2.Cohort(members=c) for c in e.cohorts],
        message=e.message,
        bytes_up=e.bytes_up,
        bytes_down=e.bytes_down,
        seconds=e.seconds,
        node_status=e.node_status,
        epsilon=e.epsilon,
        train_seconds=e.train_seconds,
        bytes_up_by_node=e.bytes_up_by_node,
        bytes_down_by_node=e.bytes_down_by_node,
        node_names=e.node_names,
        upload_seconds=e.upload_seconds,
        aggregation_seconds=e.aggregation_seconds,
        encrypt_seconds=e.encrypt_seconds,
        replicas=[replica_set_to_proto(r) for r in e.replicas],
    )


def job_event_from_proto(m: driver_pb2.JobEvent) -> JobEvent:
    return JobEvent(
        kind=job_event_kind_from_proto(m.kind),
        round=m.round,
        participants=tuple(m.participants),
        cohorts=tuple(tuple(c.members) for c in m.cohorts),
        message=m.message,
        bytes_up=m.bytes_up,
        bytes_down=m.bytes_down,
        seconds=m.seconds,
        node_status=dict(m.node_status),
        epsilon=dict(m.epsilon),
        train_seconds=dict(m.train_seconds),
        bytes_up_by_node=dict(m.bytes_up_by_node),
        bytes_down_by_node=dict(m.bytes_down_by_node),
        node_names=dict(m.node_names),
        upload_seconds=dict(m.upload_seconds),
        aggregation_seconds=m.aggregation_seconds,
        encrypt_seconds=dict(m.encrypt_seconds),
        replicas=tuple(replica_set_from_proto(r) for r in m.replicas),
    )


def round_result_to_proto(r: RoundResult) -> driver_pb2.RoundResult:
    return driver_pb2.RoundResult(
        accuracy=r.accuracy, loss=r.loss, cohort_values=r.cohort_values, evidence=r.evidence, node_values=r.node_values, rewards=r.rewards,
        disputes=[replica_dispute_to_proto(d) for d in r.disputes], flagged=r.flagged,
    )


def round_result_from_proto(m: driver_pb2.RoundResult) -> RoundResult:
    return RoundResult(
        accuracy=m.accuracy,
        loss=m.loss,
        cohort_values=dict(m.cohort_values),
        evidence=m.evidence,
        node_values=dict(m.node_values),
        rewards=dict(m.rewards),
        disputes=tuple(replica_dispute_from_proto(d) for d in m.disputes),
        flagged=tuple(m.flagged),
        released=tuple(m.released),
    )


# ---- nodes ---------------------------------------------------------------------------------------
def task_to_proto(t: Task) -> node_pb2.Task:
    return node_pb2.Task(
        task_id=t.task_id,
        job_id=t.job_id,
        round=t.round,
        model_version=t.model_version,
        model=t.model,
        dataset=t.dataset,
        training=training_plan_to_proto(t.training),
        privacy=privacy_plan_to_proto(t.privacy),
        encryption=encryption_to_proto(t.encryption),
        deadline_ms=t.deadline_ms,
        num_params=t.num_params,
        num_chunks=t.num_chunks,
        max_weight=t.max_weight,
        update_norm_bound=t.update_norm_bound,
        schema=schema_to_proto(t.schema),
        statistics=t.statistics,
        nodes_per_round=t.nodes_per_round,
        public_data=public_data_shard_to_proto(t.public_data) if t.public_data is not None else None,
    )


def task_from_proto(m: node_pb2.Task) -> Task:
    return Task(
        task_id=m.task_id,
        job_id=m.job_id,
        round=m.round,
        model_version=m.model_version,
        model=m.model,
        dataset=m.dataset,
        training=training_plan_from_proto(m.training),
        privacy=privacy_plan_from_proto(m.privacy),
        encryption=encryption_from_proto(m.encryption),
        deadline_ms=m.deadline_ms,
        num_params=m.num_params,
        num_chunks=m.num_chunks,
        max_weight=m.max_weight,
        update_norm_bound=m.update_norm_bound,
        schema=schema_from_proto(m.schema),
        statistics=m.statistics,
        nodes_per_round=m.nodes_per_round,
        public_data=public_data_shard_from_proto(m.public_data) if m.HasField("public_data") else None,
    )


def task_wire_size(t: Task) -> int:
    """Bytes the task costs on the wire (counted into the node's download)."""
    return int(task_to_proto(t).ByteSize())


def node_record_to_proto(r: SignedRecord) -> driver_pb2.NodeRecord:
    c = r.record
    return driver_pb2.NodeRecord(
        node_id=c.node_id, name=c.name, device=c.device, tasks=c.tasks, misses=c.misses, samples=c.samples,
        compute_seconds=c.compute_seconds, turnaround_seconds=c.turnaround_seconds, bytes_up=c.bytes_up,
        upload_seconds=c.upload_seconds, updated_at=c.updated_at, signature=r.signature, aggregator_key=r.aggregator_key,
    )


def node_record_from_proto(m: driver_pb2.NodeRecord) -> SignedRecord:
    record = CapacityRecord(
        node_id=m.node_id, name=m.name, device=m.device, tasks=m.tasks, misses=m.misses, samples=m.samples,
        compute_seconds=m.compute_seconds, turnaround_seconds=m.turnaround_seconds, bytes_up=m.bytes_up,
        upload_seconds=m.upload_seconds, updated_at=m.updated_at,
    )
    return SignedRecord(record, m.signature, m.aggregator_key)


def receipt_to_proto(r: LedgerReceipt) -> node_pb2.Receipt:
    c = r.receipt
    return node_pb2.Receipt(
        id=r.id,
        job_id=c.job_id,
        round=c.round,
        node_id=c.node_id,
        reward=c.reward,
        entry_hash=c.entry_hash,
        head_hash=c.head_hash,
        signature=c.signature,
        aggregator_key=c.aggregator_key,
    )


def receipt_from_proto(m: node_pb2.Receipt) -> LedgerReceipt:
    return LedgerReceipt(id=m.id, receipt=Receipt(m.job_id, m.round, m.node_id, m.reward, m.entry_hash, m.head_hash, m.signature, m.aggregator_key))


def upload_progress_to_proto(p: UploadProgress) -> node_pb2.UploadReply:
    return node_pb2.UploadReply(received=p.received, complete=p.complete, not_needed=p.not_needed)


def upload_progress_from_proto(m: node_pb2.UploadReply) -> UploadProgress:
    return UploadProgress(received=m.received, complete=m.complete, not_needed=m.not_needed)


__all__ = [
    "aggregation_plan_from_proto",
    "aggregation_plan_to_proto",
    "encryption_from_proto",
    "encryption_to_proto",
    "job_config",
    "job_event_from_proto",
    "job_event_kind_from_proto",
    "job_event_kind_to_proto",
    "job_event_to_proto",
    "job_from_proto",
    "job_spec_from_bytes",
    "job_spec_from_proto",
    "job_spec_of",
    "job_spec_to_bytes",
    "job_spec_to_proto",
    "job_status_from_proto",
    "job_status_to_proto",
    "job_to_proto",
    "node_record_from_proto",
    "node_record_to_proto",
    "privacy_plan_from_proto",
    "privacy_plan_to_proto",
    "public_data_plan_from_proto",
    "public_data_plan_of",
    "public_data_plan_to_proto",
    "public_data_shard_from_proto",
    "public_data_shard_to_proto",
    "receipt_from_proto",
    "receipt_to_proto",
    "replica_dispute_from_proto",
    "replica_dispute_to_proto",
    "replica_set_from_proto",
    "replica_set_to_proto",
    "round_result_from_proto",
    "round_result_to_proto",
    "schema_from_proto",
    "schema_to_proto",
    "selection_plan_from_proto",
    "selection_plan_to_proto",
    "task_from_proto",
    "task_to_proto",
    "task_wire_size",
    "training_plan_from_proto",
    "training_plan_to_proto",
    "upload_progress_from_proto",
    "upload_progress_to_proto",
]
