"""The one exception tree of fedgpu.

    FedgpuError
    ├── ConfigError            a job spec, flag or file is wrong: the user fixes it
    ├── ProtocolError          a peer sent something malformed, forged, replayed or out of turn
    │   ├── AuthError          its signature or token does not verify
    │   ├── NotFoundError      it names a node, job, round or task that does not exist
    │   └── StateError         it is valid but comes at the wrong time (round closed, task done)
    ├── CapabilityError        a node lacks the model or dataset a job needs
    │   └── UnsupportedTask    its trainer cannot run the task as asked (DP-SGD with a Flower client)
    ├── PrivacyBudgetExceeded  a task would push a data owner past their epsilon cap
    ├── CryptoError            a ciphertext, key or context does not fit
    ├── StorageError           the database or a file could not be read or written
    ├── RoundFailed            a round could not gather enough nodes
    ├── TransportError         the aggregator cannot be reached, or TLS does not verify
    ├── RewardsError           valuation, estimates, payout or ledger rows got inputs they cannot use
    └── AdmissionError         the aggregator will not take this registration, call or job now
        ├── NotAdmitted        the key or token is not on the operator's list
        └── RateLimited        too many requests from this source, identity or overall: retry later

Every branch maps to one gRPC status (``grpc_status``) and one CLI exit code (``exit_code``),
so a servicer and the CLI translate errors at one boundary each.
"""

from __future__ import annotations

import grpc


class FedgpuError(Exception):
    """Root of every error fedgpu raises on purpose."""

    grpc_status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    exit_code: int = 1


class ConfigError(FedgpuError):
    """Raised when a job spec, flag or file is invalid; the message names the field and what is allowed."""

    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    exit_code = 2


class ProtocolError(FedgpuError):
    """Raised when a message is malformed, forged, replayed, oversized or out of turn. The sender must fix it."""

    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    exit_code = 3


class AuthError(ProtocolError):
    """Raised when a signature or token does not verify; the peer must re-register or use its own key."""

    grpc_status = grpc.StatusCode.UNAUTHENTICATED


class NotFoundError(ProtocolError):
    """Raised when a request names a node, job, round or task the aggregator does not know."""

    grpc_status = grpc.StatusCode.NOT_FOUND


class StateError(ProtocolError):
    """Raised when a request is valid but arrives at the wrong time (round closed, task already done)."""

    grpc_status = grpc.StatusCode.FAILED_PRECONDITION


class CapabilityError(FedgpuError):
    """Raised when a node lacks the model or dataset a job names; install it or map the dataset with --data."""

    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    exit_code = 4


class SchemaMismatch(ConfigError):
    """Raised when a data owner's file does not fit the job's dataset schema (columns, shape, classes, ranges)."""

    exit_code = 2


class UnsupportedTask(CapabilityError):
    """Raised when the node's trainer cannot run a task as asked (a Flower client cannot train with DP-SGD);
    the node declines that job. Run a native node (no --flower-client) for it, or use client-level DP."""


class PrivacyBudgetExceeded(FedgpuError):
    """Raised when a task would push a data owner's epsilon past their cap; the node trains nothing."""

    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    exit_code = 5


class CryptoError(FedgpuError):
    """Raised when a ciphertext, key or encryption context is malformed or belongs to another job."""

    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    exit_code = 6


class HeadroomExceeded(CryptoError):
    """Raised when a value is too large for the encryption scheme's headroom; standardise the features or declare ranges."""


class StorageError(FedgpuError):
    """Raised when the database or a file cannot be read or written (full disk, bad URL, corrupt file)."""

    grpc_status = grpc.StatusCode.UNAVAILABLE
    exit_code = 7


class RoundFailed(FedgpuError):
    """Raised when a job cannot gather min_nodes reports; start more nodes or lower min_nodes."""

    grpc_status = grpc.StatusCode.UNAVAILABLE
    exit_code = 8


class TransportError(FedgpuError):
    """Raised on a client when the aggregator cannot be reached or its TLS certificate does not verify;
    check --aggregator, that it is running, and that --tls-ca is the CA that signed its certificate."""

    grpc_status = grpc.StatusCode.UNAVAILABLE
    exit_code = 9


class RewardsError(FedgpuError):
    """Raised when fedgpu.rewards gets inputs it cannot value, pay or chain (non-finite numbers, lengths
    that do not match, settings out of range). They come from fedgpu's own driver or aggregator, not
    from a peer: the message names the input; fix the caller or the job's ``[rewards]`` settings."""

    grpc_status = grpc.StatusCode.INTERNAL
    exit_code = 10


class AdmissionError(FedgpuError):
    """Raised when the aggregator's admission policy refuses a registration, a call or a job submission."""

    grpc_status = grpc.StatusCode.PERMISSION_DENIED
    exit_code = 11


class NotAdmitted(AdmissionError):
    """Raised when a node's public key is not on the aggregator's allow-list (``--allow``) or a driver's
    submission token is not on its ``--drivers`` list; the message names what the operator must add."""

    grpc_status = grpc.StatusCode.PERMISSION_DENIED


class RateLimited(AdmissionError):
    """Raised when a source address, an identity or the aggregator as a whole is over its limit
    (registrations per second, identities not yet live, concurrent calls): retry after a back-off."""

    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED


__all__ = [
    "AdmissionError",
    "AuthError",
    "CapabilityError",
    "ConfigError",
    "CryptoError",
    "FedgpuError",
    "HeadroomExceeded",
    "NotAdmitted",
    "NotFoundError",
    "PrivacyBudgetExceeded",
    "ProtocolError",
    "RateLimited",
    "RewardsError",
    "RoundFailed",
    "SchemaMismatch",
    "StateError",
    "StorageError",
    "TransportError",
    "UnsupportedTask",
]
