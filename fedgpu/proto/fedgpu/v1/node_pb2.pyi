from fedgpu.proto.fedgpu.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeclineReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECLINE_REASON_UNSPECIFIED: _ClassVar[DeclineReason]
    DECLINE_REASON_MISSING_MODEL: _ClassVar[DeclineReason]
    DECLINE_REASON_MISSING_DATASET: _ClassVar[DeclineReason]
    DECLINE_REASON_PRIVACY_BUDGET: _ClassVar[DeclineReason]
    DECLINE_REASON_FAILED: _ClassVar[DeclineReason]
    DECLINE_REASON_SCHEMA_MISMATCH: _ClassVar[DeclineReason]
    DECLINE_REASON_VALUE_RANGE: _ClassVar[DeclineReason]
DECLINE_REASON_UNSPECIFIED: DeclineReason
DECLINE_REASON_MISSING_MODEL: DeclineReason
DECLINE_REASON_MISSING_DATASET: DeclineReason
DECLINE_REASON_PRIVACY_BUDGET: DeclineReason
DECLINE_REASON_FAILED: DeclineReason
DECLINE_REASON_SCHEMA_MISMATCH: DeclineReason
DECLINE_REASON_VALUE_RANGE: DeclineReason

class Capabilities(_message.Message):
    __slots__ = ("models", "datasets", "device")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    datasets: _containers.RepeatedScalarFieldContainer[str]
    device: str
    def __init__(self, models: _Optional[_Iterable[str]] = ..., datasets: _Optional[_Iterable[str]] = ..., device: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("public_key", "name", "capabilities", "auth", "protocol_version", "session")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    name: str
    capabilities: Capabilities
    auth: _common_pb2.NodeAuth
    protocol_version: int
    session: bytes
    def __init__(self, public_key: _Optional[bytes] = ..., name: _Optional[str] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., auth: _Optional[_Union[_common_pb2.NodeAuth, _Mapping]] = ..., protocol_version: _Optional[int] = ..., session: _Optional[bytes] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("node_id", "protocol_version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    protocol_version: int
    def __init__(self, node_id: _Optional[str] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("auth",)
    AUTH_FIELD_NUMBER: _ClassVar[int]
    auth: _common_pb2.NodeAuth
    def __init__(self, auth: _Optional[_Union[_common_pb2.NodeAuth, _Mapping]] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("server_time_ms",)
    SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    server_time_ms: int
    def __init__(self, server_time_ms: _Optional[int] = ...) -> None: ...

class PullTaskRequest(_message.Message):
    __slots__ = ("auth", "wait_seconds", "receipts_after")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_AFTER_FIELD_NUMBER: _ClassVar[int]
    auth: _common_pb2.NodeAuth
    wait_seconds: int
    receipts_after: int
    def __init__(self, auth: _Optional[_Union[_common_pb2.NodeAuth, _Mapping]] = ..., wait_seconds: _Optional[int] = ..., receipts_after: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "job_id", "round", "model_version", "model", "dataset", "training", "privacy", "encryption", "deadline_ms", "num_params", "num_chunks", "max_weight", "update_norm_bound", "schema", "statistics", "nodes_per_round", "public_data")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMS_FIELD_NUMBER: _ClassVar[int]
    NUM_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_NORM_BOUND_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    NODES_PER_ROUND_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_DATA_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    job_id: str
    round: int
    model_version: int
    model: str
    dataset: str
    training: _common_pb2.TrainingPlan
    privacy: _common_pb2.PrivacyPlan
    encryption: _common_pb2.EncryptionContext
    deadline_ms: int
    num_params: int
    num_chunks: int
    max_weight: float
    update_norm_bound: float
    schema: _common_pb2.DatasetSchema
    statistics: bool
    nodes_per_round: int
    public_data: PublicDataShard
    def __init__(self, task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., round: _Optional[int] = ..., model_version: _Optional[int] = ..., model: _Optional[str] = ..., dataset: _Optional[str] = ..., training: _Optional[_Union[_common_pb2.TrainingPlan, _Mapping]] = ..., privacy: _Optional[_Union[_common_pb2.PrivacyPlan, _Mapping]] = ..., encryption: _Optional[_Union[_common_pb2.EncryptionContext, _Mapping]] = ..., deadline_ms: _Optional[int] = ..., num_params: _Optional[int] = ..., num_chunks: _Optional[int] = ..., max_weight: _Optional[float] = ..., update_norm_bound: _Optional[float] = ..., schema: _Optional[_Union[_common_pb2.DatasetSchema, _Mapping]] = ..., statistics: _Optional[bool] = ..., nodes_per_round: _Optional[int] = ..., public_data: _Optional[_Union[PublicDataShard, _Mapping]] = ...) -> None: ...

class PublicDataShard(_message.Message):
    __slots__ = ("samples", "data_seed", "shard", "shards")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DATA_SEED_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    samples: int
    data_seed: int
    shard: int
    shards: int
    def __init__(self, samples: _Optional[int] = ..., data_seed: _Optional[int] = ..., shard: _Optional[int] = ..., shards: _Optional[int] = ...) -> None: ...

class PullTaskReply(_message.Message):
    __slots__ = ("task", "receipts")
    TASK_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    task: Task
    receipts: _containers.RepeatedCompositeFieldContainer[Receipt]
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., receipts: _Optional[_Iterable[_Union[Receipt, _Mapping]]] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("job_id", "round", "node_id", "reward", "entry_hash", "head_hash", "signature", "aggregator_key", "id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    ENTRY_HASH_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_KEY_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    round: int
    node_id: str
    reward: float
    entry_hash: str
    head_hash: str
    signature: str
    aggregator_key: str
    id: int
    def __init__(self, job_id: _Optional[str] = ..., round: _Optional[int] = ..., node_id: _Optional[str] = ..., reward: _Optional[float] = ..., entry_hash: _Optional[str] = ..., head_hash: _Optional[str] = ..., signature: _Optional[str] = ..., aggregator_key: _Optional[str] = ..., id: _Optional[int] = ...) -> None: ...

class DeclineTaskRequest(_message.Message):
    __slots__ = ("auth", "task_id", "reason", "message")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    auth: _common_pb2.NodeAuth
    task_id: str
    reason: DeclineReason
    message: str
    def __init__(self, auth: _Optional[_Union[_common_pb2.NodeAuth, _Mapping]] = ..., task_id: _Optional[str] = ..., reason: _Optional[_Union[DeclineReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class DeclineTaskReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DownloadModelRequest(_message.Message):
    __slots__ = ("auth", "job_id", "version", "from_chunk")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FROM_CHUNK_FIELD_NUMBER: _ClassVar[int]
    auth: _common_pb2.NodeAuth
    job_id: str
    version: int
    from_chunk: int
    def __init__(self, auth: _Optional[_Union[_common_pb2.NodeAuth, _Mapping]] = ..., job_id: _Optional[str] = ..., version: _Optional[int] = ..., from_chunk: _Optional[int] = ...) -> None: ...

class UpdateChunk(_message.Message):
    __slots__ = ("auth", "task_id", "fingerprint", "chunk", "train_seconds", "epsilon", "encrypt_seconds")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    ENCRYPT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    auth: _common_pb2.NodeAuth
    task_id: str
    fingerprint: str
    chunk: _common_pb2.Chunk
    train_seconds: float
    epsilon: float
    encrypt_seconds: float
    def __init__(self, auth: _Optional[_Union[_common_pb2.NodeAuth, _Mapping]] = ..., task_id: _Optional[str] = ..., fingerprint: _Optional[str] = ..., chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ..., train_seconds: _Optional[float] = ..., epsilon: _Optional[float] = ..., encrypt_seconds: _Optional[float] = ...) -> None: ...

class UploadStatusRequest(_message.Message):
    __slots__ = ("auth", "task_id")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    auth: _common_pb2.NodeAuth
    task_id: str
    def __init__(self, auth: _Optional[_Union[_common_pb2.NodeAuth, _Mapping]] = ..., task_id: _Optional[str] = ...) -> None: ...

class UploadReply(_message.Message):
    __slots__ = ("received", "complete", "not_needed")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    NOT_NEEDED_FIELD_NUMBER: _ClassVar[int]
    received: int
    complete: bool
    not_needed: bool
    def __init__(self, received: _Optional[int] = ..., complete: _Optional[bool] = ..., not_needed: _Optional[bool] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ("auth", "new_public_key", "new_key_signature")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    NEW_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NEW_KEY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    auth: _common_pb2.NodeAuth
    new_public_key: bytes
    new_key_signature: bytes
    def __init__(self, auth: _Optional[_Union[_common_pb2.NodeAuth, _Mapping]] = ..., new_public_key: _Optional[bytes] = ..., new_key_signature: _Optional[bytes] = ...) -> None: ...

class RotateKeyReply(_message.Message):
    __slots__ = ("node_id", "operator_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    operator_id: str
    def __init__(self, node_id: _Optional[str] = ..., operator_id: _Optional[str] = ...) -> None: ...
