from fedgpu.proto.fedgpu.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_EVENT_KIND_UNSPECIFIED: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_ROUND_OPENED: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_SUMS_READY: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_ROUND_RETRY: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_JOB_DONE: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_JOB_FAILED: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_JOB_CANCELLED: _ClassVar[JobEventKind]
JOB_EVENT_KIND_UNSPECIFIED: JobEventKind
JOB_EVENT_KIND_ROUND_OPENED: JobEventKind
JOB_EVENT_KIND_SUMS_READY: JobEventKind
JOB_EVENT_KIND_ROUND_RETRY: JobEventKind
JOB_EVENT_KIND_JOB_DONE: JobEventKind
JOB_EVENT_KIND_JOB_FAILED: JobEventKind
JOB_EVENT_KIND_JOB_CANCELLED: JobEventKind

class JobSpec(_message.Message):
    __slots__ = ("name", "model", "dataset", "rounds", "nodes_per_round", "min_nodes", "deadline_seconds", "training", "cohort_size", "seed", "privacy", "encryption", "num_params", "reward_pool", "driver_lease_seconds", "max_weight", "update_norm_bound", "aggregation", "schema", "standardize", "public_data", "selection")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    NODES_PER_ROUND_FIELD_NUMBER: _ClassVar[int]
    MIN_NODES_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    COHORT_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMS_FIELD_NUMBER: _ClassVar[int]
    REWARD_POOL_FIELD_NUMBER: _ClassVar[int]
    DRIVER_LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_NORM_BOUND_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_DATA_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    dataset: str
    rounds: int
    nodes_per_round: int
    min_nodes: int
    deadline_seconds: float
    training: _common_pb2.TrainingPlan
    cohort_size: int
    seed: int
    privacy: _common_pb2.PrivacyPlan
    encryption: _common_pb2.EncryptionContext
    num_params: int
    reward_pool: float
    driver_lease_seconds: float
    max_weight: float
    update_norm_bound: float
    aggregation: AggregationPlan
    schema: _common_pb2.DatasetSchema
    standardize: bool
    public_data: PublicDataPlan
    selection: SelectionPlan
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., dataset: _Optional[str] = ..., rounds: _Optional[int] = ..., nodes_per_round: _Optional[int] = ..., min_nodes: _Optional[int] = ..., deadline_seconds: _Optional[float] = ..., training: _Optional[_Union[_common_pb2.TrainingPlan, _Mapping]] = ..., cohort_size: _Optional[int] = ..., seed: _Optional[int] = ..., privacy: _Optional[_Union[_common_pb2.PrivacyPlan, _Mapping]] = ..., encryption: _Optional[_Union[_common_pb2.EncryptionContext, _Mapping]] = ..., num_params: _Optional[int] = ..., reward_pool: _Optional[float] = ..., driver_lease_seconds: _Optional[float] = ..., max_weight: _Optional[float] = ..., update_norm_bound: _Optional[float] = ..., aggregation: _Optional[_Union[AggregationPlan, _Mapping]] = ..., schema: _Optional[_Union[_common_pb2.DatasetSchema, _Mapping]] = ..., standardize: _Optional[bool] = ..., public_data: _Optional[_Union[PublicDataPlan, _Mapping]] = ..., selection: _Optional[_Union[SelectionPlan, _Mapping]] = ...) -> None: ...

class PublicDataPlan(_message.Message):
    __slots__ = ("samples", "data_seed", "shards", "replication", "tolerance")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DATA_SEED_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    samples: int
    data_seed: int
    shards: int
    replication: float
    tolerance: float
    def __init__(self, samples: _Optional[int] = ..., data_seed: _Optional[int] = ..., shards: _Optional[int] = ..., replication: _Optional[float] = ..., tolerance: _Optional[float] = ...) -> None: ...

class SelectionPlan(_message.Message):
    __slots__ = ("rule", "exploration", "over_select", "dp_over_selection")
    RULE_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    OVER_SELECT_FIELD_NUMBER: _ClassVar[int]
    DP_OVER_SELECTION_FIELD_NUMBER: _ClassVar[int]
    rule: str
    exploration: float
    over_select: float
    dp_over_selection: bool
    def __init__(self, rule: _Optional[str] = ..., exploration: _Optional[float] = ..., over_select: _Optional[float] = ..., dp_over_selection: _Optional[bool] = ...) -> None: ...

class AggregationPlan(_message.Message):
    __slots__ = ("rule", "trim_fraction", "norm_bound")
    RULE_FIELD_NUMBER: _ClassVar[int]
    TRIM_FRACTION_FIELD_NUMBER: _ClassVar[int]
    NORM_BOUND_FIELD_NUMBER: _ClassVar[int]
    rule: str
    trim_fraction: float
    norm_bound: float
    def __init__(self, rule: _Optional[str] = ..., trim_fraction: _Optional[float] = ..., norm_bound: _Optional[float] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec", "protocol_version", "submit_token")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    protocol_version: int
    submit_token: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., protocol_version: _Optional[int] = ..., submit_token: _Optional[str] = ...) -> None: ...

class SubmitJobReply(_message.Message):
    __slots__ = ("job_id", "token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class PublishChunk(_message.Message):
    __slots__ = ("job_id", "token", "version", "chunk", "result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    version: int
    chunk: _common_pb2.Chunk
    result: RoundResult
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ..., version: _Optional[int] = ..., chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ..., result: _Optional[_Union[RoundResult, _Mapping]] = ...) -> None: ...

class RoundResult(_message.Message):
    __slots__ = ("accuracy", "loss", "cohort_values", "evidence", "node_values", "rewards", "disputes", "flagged", "released")
    class CohortValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class NodeValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RewardsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    COHORT_VALUES_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    NODE_VALUES_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    DISPUTES_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    accuracy: float
    loss: float
    cohort_values: _containers.ScalarMap[str, float]
    evidence: bytes
    node_values: _containers.ScalarMap[str, float]
    rewards: _containers.ScalarMap[str, float]
    disputes: _containers.RepeatedCompositeFieldContainer[ReplicaDispute]
    flagged: _containers.RepeatedScalarFieldContainer[str]
    released: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accuracy: _Optional[float] = ..., loss: _Optional[float] = ..., cohort_values: _Optional[_Mapping[str, float]] = ..., evidence: _Optional[bytes] = ..., node_values: _Optional[_Mapping[str, float]] = ..., rewards: _Optional[_Mapping[str, float]] = ..., disputes: _Optional[_Iterable[_Union[ReplicaDispute, _Mapping]]] = ..., flagged: _Optional[_Iterable[str]] = ..., released: _Optional[_Iterable[str]] = ...) -> None: ...

class ReplicaDispute(_message.Message):
    __slots__ = ("round", "shard", "seed", "model_version", "members", "prefer")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PREFER_FIELD_NUMBER: _ClassVar[int]
    round: int
    shard: int
    seed: int
    model_version: int
    members: _containers.RepeatedScalarFieldContainer[str]
    prefer: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round: _Optional[int] = ..., shard: _Optional[int] = ..., seed: _Optional[int] = ..., model_version: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ..., prefer: _Optional[_Iterable[str]] = ...) -> None: ...

class PublishReply(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class Cohort(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, members: _Optional[_Iterable[str]] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("kind", "round", "participants", "cohorts", "message", "bytes_up", "bytes_down", "seconds", "node_status", "epsilon", "train_seconds", "bytes_up_by_node", "bytes_down_by_node", "node_names", "upload_seconds", "aggregation_seconds", "encrypt_seconds", "replicas")
    class NodeStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EpsilonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TrainSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class BytesUpByNodeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class BytesDownByNodeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class NodeNamesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class UploadSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class EncryptSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    COHORTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BYTES_UP_FIELD_NUMBER: _ClassVar[int]
    BYTES_DOWN_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    NODE_STATUS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_UP_BY_NODE_FIELD_NUMBER: _ClassVar[int]
    BYTES_DOWN_BY_NODE_FIELD_NUMBER: _ClassVar[int]
    NODE_NAMES_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENCRYPT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    kind: JobEventKind
    round: int
    participants: _containers.RepeatedScalarFieldContainer[str]
    cohorts: _containers.RepeatedCompositeFieldContainer[Cohort]
    message: str
    bytes_up: int
    bytes_down: int
    seconds: float
    node_status: _containers.ScalarMap[str, str]
    epsilon: _containers.ScalarMap[str, float]
    train_seconds: _containers.ScalarMap[str, float]
    bytes_up_by_node: _containers.ScalarMap[str, int]
    bytes_down_by_node: _containers.ScalarMap[str, int]
    node_names: _containers.ScalarMap[str, str]
    upload_seconds: _containers.ScalarMap[str, float]
    aggregation_seconds: float
    encrypt_seconds: _containers.ScalarMap[str, float]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaSet]
    def __init__(self, kind: _Optional[_Union[JobEventKind, str]] = ..., round: _Optional[int] = ..., participants: _Optional[_Iterable[str]] = ..., cohorts: _Optional[_Iterable[_Union[Cohort, _Mapping]]] = ..., message: _Optional[str] = ..., bytes_up: _Optional[int] = ..., bytes_down: _Optional[int] = ..., seconds: _Optional[float] = ..., node_status: _Optional[_Mapping[str, str]] = ..., epsilon: _Optional[_Mapping[str, float]] = ..., train_seconds: _Optional[_Mapping[str, float]] = ..., bytes_up_by_node: _Optional[_Mapping[str, int]] = ..., bytes_down_by_node: _Optional[_Mapping[str, int]] = ..., node_names: _Optional[_Mapping[str, str]] = ..., upload_seconds: _Optional[_Mapping[str, float]] = ..., aggregation_seconds: _Optional[float] = ..., encrypt_seconds: _Optional[_Mapping[str, float]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaSet, _Mapping]]] = ...) -> None: ...

class ReplicaSet(_message.Message):
    __slots__ = ("members", "shard", "seed", "settles")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SETTLES_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[str]
    shard: int
    seed: int
    settles: int
    def __init__(self, members: _Optional[_Iterable[str]] = ..., shard: _Optional[int] = ..., seed: _Optional[int] = ..., settles: _Optional[int] = ...) -> None: ...

class FetchCohortSumsRequest(_message.Message):
    __slots__ = ("job_id", "token", "round")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    round: int
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class CohortSumChunk(_message.Message):
    __slots__ = ("cohort", "members", "chunk")
    COHORT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    cohort: int
    members: _containers.RepeatedScalarFieldContainer[str]
    chunk: _common_pb2.Chunk
    def __init__(self, cohort: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ..., chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ...) -> None: ...

class DownloadJobModelRequest(_message.Message):
    __slots__ = ("job_id", "token", "version")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    version: int
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("job_id", "state", "round", "model_version", "message", "model_sha256")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: str
    round: int
    model_version: int
    message: str
    model_sha256: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[str] = ..., round: _Optional[int] = ..., model_version: _Optional[int] = ..., message: _Optional[str] = ..., model_sha256: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "token", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("node_ids",)
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeRecord(_message.Message):
    __slots__ = ("node_id", "name", "device", "tasks", "misses", "samples", "compute_seconds", "turnaround_seconds", "bytes_up", "upload_seconds", "updated_at", "signature", "aggregator_key")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TURNAROUND_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_UP_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_KEY_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    device: str
    tasks: int
    misses: int
    samples: int
    compute_seconds: float
    turnaround_seconds: float
    bytes_up: int
    upload_seconds: float
    updated_at: float
    signature: str
    aggregator_key: str
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., device: _Optional[str] = ..., tasks: _Optional[int] = ..., misses: _Optional[int] = ..., samples: _Optional[int] = ..., compute_seconds: _Optional[float] = ..., turnaround_seconds: _Optional[float] = ..., bytes_up: _Optional[int] = ..., upload_seconds: _Optional[float] = ..., updated_at: _Optional[float] = ..., signature: _Optional[str] = ..., aggregator_key: _Optional[str] = ...) -> None: ...

class ListNodesReply(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeRecord]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeRecord, _Mapping]]] = ...) -> None: ...
