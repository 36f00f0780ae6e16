from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Chunk(_message.Message):
    __slots__ = ("index", "count", "sha256", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    count: int
    sha256: bytes
    data: bytes
    def __init__(self, index: _Optional[int] = ..., count: _Optional[int] = ..., sha256: _Optional[bytes] = ..., data: _Optional[bytes] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("version", "chunk")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    version: int
    chunk: Chunk
    def __init__(self, version: _Optional[int] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class NodeAuth(_message.Message):
    __slots__ = ("node_id", "timestamp_ms", "nonce", "signature")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    timestamp_ms: int
    nonce: bytes
    signature: bytes
    def __init__(self, node_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class TrainingPlan(_message.Message):
    __slots__ = ("epochs", "batch_size", "lr", "momentum", "seed")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    seed: int
    def __init__(self, epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., lr: _Optional[float] = ..., momentum: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class PrivacyPlan(_message.Message):
    __slots__ = ("enabled", "epsilon", "delta", "max_grad_norm", "rounds", "accountant", "mode", "client_noise_multiplier", "client_clip", "cohort_size", "statistics_epsilon")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTANT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CLIP_FIELD_NUMBER: _ClassVar[int]
    COHORT_SIZE_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_EPSILON_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    epsilon: float
    delta: float
    max_grad_norm: float
    rounds: int
    accountant: str
    mode: str
    client_noise_multiplier: float
    client_clip: float
    cohort_size: int
    statistics_epsilon: float
    def __init__(self, enabled: _Optional[bool] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., max_grad_norm: _Optional[float] = ..., rounds: _Optional[int] = ..., accountant: _Optional[str] = ..., mode: _Optional[str] = ..., client_noise_multiplier: _Optional[float] = ..., client_clip: _Optional[float] = ..., cohort_size: _Optional[int] = ..., statistics_epsilon: _Optional[float] = ...) -> None: ...

class EncryptionContext(_message.Message):
    __slots__ = ("scheme", "params", "public_material", "fingerprint", "values_per_chunk")
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_MATERIAL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    VALUES_PER_CHUNK_FIELD_NUMBER: _ClassVar[int]
    scheme: str
    params: bytes
    public_material: bytes
    fingerprint: str
    values_per_chunk: int
    def __init__(self, scheme: _Optional[str] = ..., params: _Optional[bytes] = ..., public_material: _Optional[bytes] = ..., fingerprint: _Optional[str] = ..., values_per_chunk: _Optional[int] = ...) -> None: ...

class DatasetSchema(_message.Message):
    __slots__ = ("name", "input_shape", "num_classes", "columns", "label", "dtype", "range_low", "range_high")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    RANGE_LOW_FIELD_NUMBER: _ClassVar[int]
    RANGE_HIGH_FIELD_NUMBER: _ClassVar[int]
    name: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    num_classes: int
    columns: _containers.RepeatedScalarFieldContainer[str]
    label: str
    dtype: str
    range_low: _containers.RepeatedScalarFieldContainer[float]
    range_high: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., num_classes: _Optional[int] = ..., columns: _Optional[_Iterable[str]] = ..., label: _Optional[str] = ..., dtype: _Optional[str] = ..., range_low: _Optional[_Iterable[float]] = ..., range_high: _Optional[_Iterable[float]] = ...) -> None: ...
