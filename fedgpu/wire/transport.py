"""The one transport seam: every gRPC server port and client channel of fedgpu is made here.

It holds what the two ends must agree on (message-size limits, keep-alives), TLS (the
aggregator's certificate and key, the CA a node or driver trusts), the rule that cleartext is for
loopback only unless the operator says ``--insecure``, and the translation of ``grpc.RpcError``
into fedgpu's error tree on the client side, so no gRPC traceback reaches a user.

    client target   TLSConfig            what the channel does
    loopback        ca=None              cleartext (a local aggregator; tests)
    any             ca=PATH              TLS, trusting only that CA
    elsewhere       ca=None              TLS, trusting the system's roots (a public CA)
    any             insecure=True        cleartext: something else (a VPN, a proxy) protects it
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedgpu.errors import (
    AuthError,
    ConfigError,
    FedgpuError,
    NotAdmitted,
    NotFoundError,
    ProtocolError,
    RateLimited,
    StateError,
    TransportError,
)
from fedgpu.wire.chunks import MAX_CHUNK_BYTES

MAX_MESSAGE_BYTES = MAX_CHUNK_BYTES + (64 << 10)  # the gRPC message limit: one chunk plus its envelope

_LIMITS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
# The server pings idle connections every 20 s and lets clients ping every 10 s even with no call
# in flight (a node between long-polls); gRPC's default (5 min) would answer them with GOAWAY.
# gRPC sets SO_REUSEPORT by default: a second aggregator on a busy port would bind it too and share
# its connections without a word, so it is turned off and a busy port is refused (``add_port``).
SERVER_OPTIONS = (*_LIMITS, ("grpc.so_reuseport", 0), ("grpc.keepalive_time_ms", 20000), ("grpc.keepalive_timeout_ms", 10000), ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0), ("grpc.http2.min_ping_interval_without_data_ms", 10000))
# Clients ping every 30 s, so a driver watching a job or a node in a long-poll notices within
# 40 s that the aggregator's machine vanished (no RST) instead of waiting forever.
CHANNEL_OPTIONS = (*_LIMITS, ("grpc.keepalive_time_ms", 30000), ("grpc.keepalive_timeout_ms", 10000), ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0))


@dataclass(frozen=True)
class TLSConfig:
    """Where one end's PEM files are. The aggregator reads ``cert`` and ``key``; nodes and drivers read ``ca``."""

    cert: Path | None = None   # the aggregator's certificate chain: its certificate first, then any intermediates
    key: Path | None = None    # the aggregator's private key, unencrypted (keep it owner-only)
    ca: Path | None = None     # the CA a node or driver trusts; None: the system's roots off loopback, cleartext on it
    insecure: bool = False     # cleartext even off loopback: only where something else protects the traffic

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigError("--tls-cert and --tls-key go together: the certificate and its private key")
        if self.insecure and (self.cert is not None or self.ca is not None):
            raise ConfigError("--insecure turns TLS off: drop it, or drop the --tls-* flags")

    @property
    def serving(self) -> bool:
        """Whether a server with this config speaks TLS."""
        return self.cert is not None


# ---- addresses ---------------------------------------------------------------------------------
_ADDRESS = re.compile(r"\[(?P<v6>[^\]]+)\]:(?P<p6>\d+)|(?P<host>[^:\[\]]*):(?P<port>\d+)")


def parse_address(address: str, flag: str = "--listen") -> tuple[str, int]:
    """Split HOST:PORT or [IPv6]:PORT; the port is required (0 picks a free one on a server)."""
    m = _ADDRESS.fullmatch(address.strip())
    if m is None:
        raise ConfigError(f"{flag} {address!r}: expected HOST:PORT, e.g. 127.0.0.1:50051 or [::1]:50051 (port 0 picks a free one)")
    host = m["v6"] if m["v6"] is not None else m["host"]
    port = int(m["p6"] if m["p6"] is not None else m["port"])
    if port > 65535:
        raise ConfigError(f"{flag} {address!r}: port {port} is past 65535")
    return host, port


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``: traffic that never leaves the machine."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(listen: str, tls: TLSConfig) -> tuple[str, int]:
    """Refuse cleartext on an address the network can reach, unless the operator said ``--insecure``."""
    host, port = parse_address(listen, "--listen")
    if not tls.serving and not tls.insecure and not is_loopback(host):
        raise ConfigError(
            f"--listen {listen}: refusing cleartext on an address other machines can reach (anyone on the path could read "
            "and change every message). Pass --tls-cert and --tls-key (`fedgpu certs` makes a pair; see docs/tls.md), "
            "or --insecure if a VPN or a TLS proxy already protects the traffic"
        )
    return host, port


# ---- PEM files ---------------------------------------------------------------------------------
def _read(path: Path, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read it ({exc.strerror})") from exc


def _certificates(path: Path, flag: str) -> tuple[bytes, list[x509.Certificate]]:
    pem = _read(path, flag)
    try:
        return pem, x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError(f"{flag} {path}: not a PEM certificate ({exc})") from exc


def server_pair(tls: TLSConfig) -> tuple[bytes, bytes]:
    """The aggregator's (certificate chain, private key) PEM bytes, checked to belong together and to be in date."""
    if tls.cert is None or tls.key is None:
        raise ConfigError("TLS needs --tls-cert and --tls-key")
    cert_pem, chain = _certificates(tls.cert, "--tls-cert")
    key_pem = _read(tls.key, "--tls-key")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--tls-key {tls.key}: not an unencrypted PEM private key ({exc})") from exc
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != chain[0].public_key().public_bytes(*spki):
        raise ConfigError(f"--tls-key {tls.key} is not the key of the certificate in --tls-cert {tls.cert}")
    if chain[0].not_valid_after_utc < dt.datetime.now(dt.UTC):
        raise ConfigError(f"--tls-cert {tls.cert} expired on {chain[0].not_valid_after_utc:%Y-%m-%d}; issue a new one (docs/tls.md)")
    return cert_pem, key_pem


# ---- server ------------------------------------------------------------------------------------
def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    """TLS server credentials from the aggregator's certificate and key. Clients are not asked for certificates:
    nodes prove who they are by signing every request (fedgpu/wire/auth.py)."""
    cert_pem, key_pem = server_pair(tls)
    return grpc.ssl_server_credentials([(key_pem, cert_pem)])


def make_server(interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> grpc.aio.Server:
    return grpc.aio.server(options=SERVER_OPTIONS, interceptors=list(interceptors))


def add_port(server: grpc.aio.Server, listen: str, tls: TLSConfig) -> int:
    """Listen on ``listen`` with TLS when ``tls`` has a certificate; return the port bound."""
    check_listen(listen, tls)
    try:
        port = int(server.add_secure_port(listen, server_credentials(tls)) if tls.serving else server.add_insecure_port(listen))
    except RuntimeError:  # gRPC raises on a failed bind in recent versions, returns 0 in older ones
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen on {listen}: the port is taken or the address is not on this machine; pick another --listen")
    return port


def add_health(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """Serve the standard ``grpc.health.v1.Health`` service (what load balancers and
    ``grpc_health_probe`` ask); :func:`set_serving` says what it answers."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


async def set_serving(servicer: health.aio.HealthServicer, services: Sequence[str], serving: bool) -> None:
    """Report the server (``""``) and each of ``services`` as SERVING or NOT_SERVING."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *services):
        await servicer.set(name, status)


# ---- client ------------------------------------------------------------------------------------
def channel_credentials(target: str, tls: TLSConfig) -> grpc.ChannelCredentials | None:
    """What a client channel to ``target`` uses; None means cleartext (see the table at the top)."""
    if tls.ca is not None:
        ca_pem, _ = _certificates(tls.ca, "--tls-ca")
        return grpc.ssl_channel_credentials(root_certificates=ca_pem)
    if tls.insecure:
        return None
    try:
        host, _ = parse_address(target, "--aggregator")
    except ConfigError:
        host = ""  # a form we do not parse (dns:///..., no port): treat it as remote
    return None if is_loopback(host) else grpc.ssl_channel_credentials()


def open_channel(target: str, tls: TLSConfig | None = None) -> grpc.Channel:
    """A client channel to the aggregator, with fedgpu's limits and keep-alives."""
    creds = channel_credentials(target, tls or TLSConfig())
    if creds is None:
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(target, creds, options=CHANNEL_OPTIONS)


# ---- errors ------------------------------------------------------------------------------------
_REFUSED: dict[grpc.StatusCode, type[FedgpuError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: ProtocolError,
    grpc.StatusCode.OUT_OF_RANGE: ProtocolError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNIMPLEMENTED: ProtocolError,
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.PERMISSION_DENIED: NotAdmitted,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: StateError,
    grpc.StatusCode.ABORTED: StateError,
    grpc.StatusCode.ALREADY_EXISTS: StateError,
}


def _status(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return code, details or ""


def handshake_failed(exc: grpc.RpcError) -> bool:
    """True when TLS itself failed (untrusted certificate, wrong host name, a peer without TLS): retrying cannot help."""
    code, details = _status(exc)
    return code == grpc.StatusCode.UNAVAILABLE and "handshake failed" in details.lower()


def error_from_rpc(exc: grpc.RpcError, target: str | None = None) -> FedgpuError:
    """The fedgpu error a failed call means, with a message that says what to do next."""
    code, details = _status(exc)
    where = f"the aggregator at {target}" if target else "the aggregator"
    if handshake_failed(exc):
        if "WRONG_VERSION_NUMBER" in details:
            hint = "it does not seem to speak TLS: drop --tls-ca if it serves cleartext on loopback or with --insecure"
        elif "CERTIFICATE_VERIFY_FAILED" in details:
            hint = "its certificate is not signed by the CA given with --tls-ca (or, without --tls-ca, by a CA this system trusts)"
        else:
            hint = "check that --tls-ca is the CA that signed its certificate and that the certificate names this host"
        return TransportError(f"TLS handshake with {where} failed: {hint} [{details}]")
    if code == grpc.StatusCode.UNAVAILABLE:
        return TransportError(
            f"cannot reach {where}: is it running there? If it serves TLS, pass --tls-ca with its CA (cleartext on loopback "
            f"meets a TLS port as a closed socket) [{details}]"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TransportError(f"{where} did not answer in time; it may be overloaded or unreachable [{details}]")
    if code == grpc.StatusCode.CANCELLED:
        return TransportError(f"the call to {where} was cancelled [{details}]")
    if code in _REFUSED:
        return _REFUSED[code](f"{where} refused the request ({code.name}): {details}")
    return FedgpuError(f"{where} failed ({code.name}): {details}; its log says more")


@contextmanager
def rpc_errors(target: str | None = None) -> Iterator[None]:
    """Re-raise a ``grpc.RpcError`` from the block as the fedgpu error it means (``raise ... from``)."""
    try:
        yield
    except grpc.RpcError as exc:
        raise error_from_rpc(exc, target) from exc


__all__ = [
    "CHANNEL_OPTIONS",
    "MAX_MESSAGE_BYTES",
    "SERVER_OPTIONS",
    "TLSConfig",
    "add_health",
    "add_port",
    "channel_credentials",
    "check_listen",
    "error_from_rpc",
    "handshake_failed",
    "is_loopback",
    "make_server",
    "open_channel",
    "parse_address",
    "rpc_errors",
    "server_credentials",
    "server_pair",
    "set_serving",
]
