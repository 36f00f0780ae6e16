"""The domain objects that cross the wire, as typed frozen dataclasses: no protobuf in here.

It lives in ``wire/`` because both sides already depend on the wire (the aggregator on one end, the
node and the driver on the other), and it is a leaf: it imports no protobuf, no role and no store, so
the aggregator's logic can use these types without touching a generated message. The conversion
to and from protobuf is :mod:`fedgpu.wire.serde`, and only there.

``RoundRecord`` is also what the store keeps of a closed round, as JSON (``to_json`` / ``from_json``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedgpu.claims import ClaimBounds
from fedgpu.datasets import Schema
from fedgpu.rewards.chain import Receipt


@dataclass(frozen=True)
class TrainingPlan:
    """Local training a task asks for (mirrors ``fedgpu.v1.TrainingPlan``)."""

    epochs: int = 0
    batch_size: int = 0
    lr: float = 0.0
    momentum: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class PrivacyPlan:
    """Differential privacy a job asks for (mirrors ``fedgpu.v1.PrivacyPlan``; see docs/privacy.md)."""

    enabled: bool = False
    epsilon: float = 0.0
    delta: float = 0.0
    max_grad_norm: float = 0.0
    rounds: int = 0
    accountant: str = ""
    mode: str = ""
    client_noise_multiplier: float = 0.0
    client_clip: float = 0.0
    cohort_size: int = 0
    statistics_epsilon: float = 0.0  # > 0: round 1 is a DP statistics round planned for this epsilon alone


@dataclass(frozen=True)
class EncryptionContext:
    """What a node needs to encrypt and the aggregator to add; never a secret key."""

    scheme: str = ""
    params: bytes = b""
    public_material: bytes = b""
    fingerprint: str = ""
    values_per_chunk: int = 0


@dataclass(frozen=True)
class AggregationPlan:
    """The job's aggregation rule and its parameters (mirrors ``fedgpu.v1.AggregationPlan``; an empty
    ``rule`` is a spec from a driver that sent none: fedavg)."""

    rule: str = ""
    trim_fraction: float = 0.0
    norm_bound: float = 0.0


@dataclass(frozen=True)
class PublicDataPlan:
    """A public-data job's dataset, shards and spot checks (mirrors ``fedgpu.v1.PublicDataPlan``; docs/verification.md)."""

    samples: int = 0          # size of the generated dataset; 0: the dataset's default
    data_seed: int = 0
    shards: int = 1
    replication: float = 0.0  # share of tasks also given to a second node
    tolerance: float = 0.0    # largest relative L2 distance of two honest replicas' updates


@dataclass(frozen=True)
class PublicDataShard:
    """The shard a public-data task trains on, which every node builds alike (``fedgpu.v1.PublicDataShard``)."""

    samples: int
    data_seed: int
    shard: int
    shards: int


@dataclass(frozen=True)
class ReplicaSet:
    """Nodes (cohorts of one) that ran the same task of a public-data round; ``settles`` > 0: the member
    re-ran the task disputed in that round (``fedgpu.v1.ReplicaSet``)."""

    members: tuple[str, ...]
    shard: int
    seed: int
    settles: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"members": list(self.members), "shard": self.shard, "seed": self.seed, "settles": self.settles}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReplicaSet:
        return cls(tuple(d["members"]), int(d["shard"]), int(d["seed"]), int(d.get("settles", 0)))


@dataclass(frozen=True)
class ReplicaDispute:
    """Two replicas that disagreed: a third node re-runs the task (``fedgpu.v1.ReplicaDispute``)."""

    round: int
    shard: int
    seed: int
    model_version: int
    members: tuple[str, ...]
    prefer: tuple[str, ...] = ()  # verified nodes the driver trusts: the third is one of them when one is in the round


@dataclass(frozen=True)
class SelectionPlan:
    """How the aggregator picks a round's nodes (mirrors ``fedgpu.v1.SelectionPlan``; docs/selection.md).
    An empty ``rule`` is a spec from a driver that sent none: the job file's defaults (uniform)."""

    rule: str = ""
    exploration: float = 0.0
    over_select: float = 0.0
    dp_over_selection: bool = False


@dataclass(frozen=True)
class JobSpec:
    """A job as its driver submitted it, field for field (the store keeps its protobuf bytes).

    Parsed once per job: the aggregator reads a job's rules from here, never from stored bytes again.
    """

    name: str = ""
    model: str = ""
    dataset: str = ""
    rounds: int = 0
    nodes_per_round: int = 0
    min_nodes: int = 0
    deadline_seconds: float = 0.0
    training: TrainingPlan = field(default_factory=TrainingPlan)
    cohort_size: int = 0
    seed: int = 0
    privacy: PrivacyPlan = field(default_factory=PrivacyPlan)
    encryption: EncryptionContext = field(default_factory=EncryptionContext)
    num_params: int = 0
    reward_pool: float = 0.0
    driver_lease_seconds: float = 0.0
    max_weight: float = 0.0         # as declared; 0: the default (see claim_bounds)
    update_norm_bound: float = 0.0
    aggregation: AggregationPlan = field(default_factory=AggregationPlan)
    schema: Schema | None = None    # the dataset schema the nodes check their files against; None: the named default
    standardize: bool = False       # round 1 is the statistics round
    public_data: PublicDataPlan | None = None  # set: a public-data job

    @property
    def dataset_capability(self) -> str:
        """What a node must have registered to take the job's tasks: the dataset's schema mapped to its own
        files, or (a public-data job) the ability to build the public dataset (fedgpu.datasets.public_capability)."""
        from fedgpu.datasets import public_capability

        return public_capability(self.dataset) if self.public_data is not None else self.dataset
    selection: SelectionPlan = field(default_factory=SelectionPlan)

    @property
    def claim_bounds(self) -> ClaimBounds:
        """The cap and B the job enforces, its defaults filled in (what its tasks carry)."""
        p = self.privacy
        return ClaimBounds.declared(self.max_weight, self.update_norm_bound, p.client_clip if p.enabled and p.mode == "client" else None)


@dataclass(frozen=True)
class Task:
    """What the aggregator offers a node for one round of one job."""

    task_id: str
    job_id: str
    round: int
    model_version: int
    model: str
    dataset: str
    training: TrainingPlan
    privacy: PrivacyPlan
    encryption: EncryptionContext
    deadline_ms: int  # unix ms; an update after it is refused
    num_params: int
    num_chunks: int  # number of chunks the update must have
    max_weight: float = 0.0  # the largest weight the node may claim; 0: none given
    update_norm_bound: float = 0.0  # the largest norm of its change; 0: none given
    schema: Schema | None = None  # the job's dataset schema; None: the named default of ``dataset``
    statistics: bool = False  # upload the feature statistics (federated standardisation), not a model change
    nodes_per_round: int = 0  # the most updates one cohort sum adds; 0: not given
    public_data: PublicDataShard | None = None  # set: train on this shard of the public dataset, built locally


@dataclass(frozen=True)
class UploadProgress:
    """How far an upload got: chunks accepted so far, and whether the update is complete."""

    received: int
    complete: bool
    not_needed: bool = False  # the round closed with enough updates before this one arrived (over-selection)


@dataclass(frozen=True)
class RoundRecord:
    """What a closed round released: its cohorts (merged to >= k members) and what each node did."""

    participants: tuple[str, ...]
    cohorts: tuple[tuple[str, ...], ...]
    node_status: Mapping[str, str]  # node id -> "complete", "declined: ...", "failed: missed the deadline"
    bytes_up: int
    bytes_down: int
    bytes_up_by_node: Mapping[str, int]
    bytes_down_by_node: Mapping[str, int]
    train_seconds: Mapping[str, float]  # reported by the nodes: informative, never trusted
    epsilon: Mapping[str, float]
    seconds: float
    attempt: int = 0
    attempt_id: str = ""
    node_names: Mapping[str, str] = field(default_factory=dict)  # node id -> its registered name, for people
    upload_seconds: Mapping[str, float] = field(default_factory=dict)  # node id -> first chunk in .. update added
    aggregation_seconds: float = 0.0  # the aggregator adding the round's updates into its cohort sums
    encrypt_seconds: Mapping[str, float] = field(default_factory=dict)  # reported by the nodes: informative, never trusted
    replicas: tuple[ReplicaSet, ...] = ()  # public-data jobs: who ran the same task (members that reported)

    def to_dict(self) -> dict[str, Any]:
        return {
            "participants": list(self.participants),
            "cohorts": [list(c) for c in self.cohorts],
            "node_status": dict(self.node_status),
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "bytes_up_by_node": dict(self.bytes_up_by_node),
            "bytes_down_by_node": dict(self.bytes_down_by_node),
            "train_seconds": dict(self.train_seconds),
            "epsilon": dict(self.epsilon),
            "seconds": self.seconds,
            "attempt": self.attempt,
            "attempt_id": self.attempt_id,
            "node_names": dict(self.node_names),
            "upload_seconds": dict(self.upload_seconds),
            "aggregation_seconds": self.aggregation_seconds,
            "encrypt_seconds": dict(self.encrypt_seconds),
            "replicas": [r.to_dict() for r in self.replicas],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoundRecord:
        """Inverse of :meth:`to_dict`; the per-node maps may be missing in records of older versions."""
        return cls(
            participants=tuple(d["participants"]),
            cohorts=tuple(tuple(c) for c in d["cohorts"]),
            node_status=dict(d["node_status"]),
            bytes_up=int(d["bytes_up"]),
            bytes_down=int(d["bytes_down"]),
            bytes_up_by_node=dict(d.get("bytes_up_by_node", {})),
            bytes_down_by_node=dict(d.get("bytes_down_by_node", {})),
            train_seconds=dict(d.get("train_seconds", {})),
            epsilon=dict(d.get("epsilon", {})),
            seconds=float(d["seconds"]),
            attempt=int(d.get("attempt", 0)),
            attempt_id=str(d.get("attempt_id", "")),
            node_names=dict(d.get("node_names", {})),
            upload_seconds=dict(d.get("upload_seconds", {})),
            aggregation_seconds=float(d.get("aggregation_seconds", 0.0)),
            encrypt_seconds=dict(d.get("encrypt_seconds", {})),
            replicas=tuple(ReplicaSet.from_dict(r) for r in d.get("replicas", [])),
        )

    @classmethod
    def from_json(cls, text: str) -> RoundRecord:
        return cls.from_dict(json.loads(text))


class JobEventKind(enum.Enum):
    """What happened to a job (the values are those of ``fedgpu.v1.JobEventKind``)."""

    UNSPECIFIED = 0
    ROUND_OPENED = 1
    SUMS_READY = 2
    ROUND_RETRY = 3
    JOB_DONE = 4
    JOB_FAILED = 5
    JOB_CANCELLED = 6

    @property
    def ends_job(self) -> bool:
        return self in (JobEventKind.JOB_DONE, JobEventKind.JOB_FAILED, JobEventKind.JOB_CANCELLED)


@dataclass(frozen=True)
class JobEvent:
    """One event of a job, as its driver watches it; a SUMS_READY event carries its round's record."""

    kind: JobEventKind
    round: int = 0
    participants: tuple[str, ...] = ()
    cohorts: tuple[tuple[str, ...], ...] = ()
    message: str = ""
    bytes_up: int = 0
    bytes_down: int = 0
    seconds: float = 0.0
    node_status: Mapping[str, str] = field(default_factory=dict)
    epsilon: Mapping[str, float] = field(default_factory=dict)
    train_seconds: Mapping[str, float] = field(default_factory=dict)
    bytes_up_by_node: Mapping[str, int] = field(default_factory=dict)
    bytes_down_by_node: Mapping[str, int] = field(default_factory=dict)
    node_names: Mapping[str, str] = field(default_factory=dict)
    upload_seconds: Mapping[str, float] = field(default_factory=dict)
    aggregation_seconds: float = 0.0
    encrypt_seconds: Mapping[str, float] = field(default_factory=dict)
    replicas: tuple[ReplicaSet, ...] = ()

    @classmethod
    def sums_ready(cls, rnd: int, record: RoundRecord) -> JobEvent:
        return cls(
            kind=JobEventKind.SUMS_READY,
            round=rnd,
            participants=record.participants,
            cohorts=record.cohorts,
            bytes_up=record.bytes_up,
            bytes_down=record.bytes_down,
            seconds=record.seconds,
            node_status=record.node_status,
            epsilon=record.epsilon,
            train_seconds=record.train_seconds,
            bytes_up_by_node=record.bytes_up_by_node,
            bytes_down_by_node=record.bytes_down_by_node,
            node_names=record.node_names,
            upload_seconds=record.upload_seconds,
            aggregation_seconds=record.aggregation_seconds,
            encrypt_seconds=record.encrypt_seconds,
            replicas=record.replicas,
        )


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: str  # waiting_model | running | done | failed | cancelled
    round: int
    model_version: int
    message: str = ""
    model_sha256: str = ""  # of the stored model of model_version: a driver recognises its own publish


@dataclass(frozen=True)
class RoundResult:
    """What a driver publishes with the model after a round: its evaluation and the rewards it claims."""

    accuracy: float = 0.0
    loss: float = 0.0
    cohort_values: Mapping[str, float] = field(default_factory=dict)  # cohort index as a string
    evidence: bytes = b""  # JSON: per-subset utilities, so anyone can recompute
    node_values: Mapping[str, float] = field(default_factory=dict)
    rewards: Mapping[str, float] = field(default_factory=dict)
    disputes: tuple[ReplicaDispute, ...] = ()  # public-data jobs: tasks a third node must re-run
    flagged: tuple[str, ...] = ()  # public-data jobs: nodes caught so far (no more tasks of the job)
    released: tuple[str, ...] = ()  # the job's last round: earlier participants paid their held rewards here


@dataclass(frozen=True)
class LedgerReceipt:
    """A :class:`~fedgpu.rewards.chain.Receipt` as delivered: with the id of its ledger row.

    The id stays beside the receipt, not inside it: the receipt is the signed thing a node keeps
    (its canonical JSON in receipts.jsonl), while the id only says how far delivery got.
    """

    id: int
    receipt: Receipt


__all__ = [
    "AggregationPlan",
    "EncryptionContext",
    "JobEvent",
    "JobEventKind",
    "JobSpec",
    "JobStatus",
    "LedgerReceipt",
    "PrivacyPlan",
    "PublicDataPlan",
    "PublicDataShard",
    "ReplicaDispute",
    "ReplicaSet",
    "RoundRecord",
    "RoundResult",
    "SelectionPlan",
    "Task",
    "TrainingPlan",
    "UploadProgress",
]
