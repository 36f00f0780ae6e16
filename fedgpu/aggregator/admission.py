"""Admission: who may register as a node or submit a job, and how fast.

    policy      who may register                              what bounds it
    open        anyone (the default)                          registrations per source address and
                                                              overall (token buckets), identities that
                                                              registered but never showed life
    allowlist   the Ed25519 public keys in ``--allow FILE``   the same limits
                (and the keys they rotated to)

Job submission is open unless ``--drivers FILE`` lists the submission tokens a driver must present.
Every refusal says what to do next: ``RateLimited`` (RESOURCE_EXHAUSTED) means retry after a back-off,
``NotAdmitted`` (PERMISSION_DENIED) means the operator must add a key or a token to a file.

The per-source limit is checked before a registration's signature is verified, so one source cannot
spend the aggregator's CPU faster than its own rate; the overall limit and the bound on unproven
identities apply only to new, verified identities, so a flood of garbage cannot lock known nodes out.
Both files are read again when they change (at most once a second): no restart to admit a node.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedgpu.errors import ConfigError, NotAdmitted, RateLimited

log = logging.getLogger("fedgpu.aggregator")

MAX_SOURCES = 50_000       # per-source buckets kept; past this (after dropping full ones) new sources share one


class AdmissionMode(enum.Enum):
    OPEN = "open"
    ALLOWLIST = "allowlist"


@dataclass(frozen=True)
class RateLimit:
    """A token bucket's shape: ``rate`` requests per second on average, ``burst`` at once."""

    rate: float
    burst: int

    @classmethod
    def parse(cls, text: str, flag: str) -> RateLimit:
        """``RATE`` or ``RATE:BURST`` (``2:20``: two a second, twenty at once; the burst defaults to 10 s of rate)."""
        rate_s, _, burst_s = text.partition(":")
        try:
            rate = float(rate_s)
            burst = int(burst_s) if burst_s else max(1, math.ceil(rate * 10))
        except ValueError as exc:
            raise ConfigError(f"{flag} {text!r}: expected RATE or RATE:BURST, e.g. 2:20 (per second, at once)") from exc
        return cls(rate, burst).validate(flag)

    def validate(self, flag: str) -> RateLimit:
        if not (math.isfinite(self.rate) and self.rate > 0) or self.burst < 1:
            raise ConfigError(f"{flag}: the rate must be > 0 per second and the burst >= 1, got {self.rate:g}:{self.burst}")
        return self


@dataclass(frozen=True)
class AdmissionPolicy:
    """The aggregator's admission rules (``fedgpu aggregator --admission ...``, docs/protocol.md, "Admission")."""

    mode: AdmissionMode = AdmissionMode.OPEN
    allow_file: Path | None = None          # allowlist: one hex Ed25519 public key (64 digits) per line, '#' comments
    drivers_file: Path | None = None        # one submission token per line; None: anyone may submit a job
    per_source: RateLimit = field(default_factory=lambda: RateLimit(2.0, 20))   # registrations per source address
    total: RateLimit = field(default_factory=lambda: RateLimit(20.0, 200))      # new identities overall
    # Identities that registered but sent no signed request since (no PullTask, no Heartbeat): kept in
    # memory only, never in the database, and forgotten after ``unproven_ttl_s``.
    max_unproven: int = 1000
    unproven_ttl_s: float = 60.0
    # Concurrent PullTask, UploadUpdate and DownloadModel calls per identity (each method on its own).
    max_calls_per_node: int = 2

    def validate(self) -> AdmissionPolicy:
        if self.mode is AdmissionMode.ALLOWLIST and self.allow_file is None:
            raise ConfigError("--admission allowlist needs --allow FILE: the public keys (hex) of the nodes to admit, one per line")
        if self.mode is AdmissionMode.OPEN and self.allow_file is not None:
            raise ConfigError("--allow FILE only applies with --admission allowlist: add it, or drop --allow")
        self.per_source.validate("--register-limit")
        self.total.validate("--register-limit-total")
        if self.max_unproven < 1:
            raise ConfigError(f"--max-unproven must be >= 1, got {self.max_unproven}")
        if not self.unproven_ttl_s > 0:
            raise ConfigError(f"unproven_ttl_s must be > 0, got {self.unproven_ttl_s}")
        if self.max_calls_per_node < 1:
            raise ConfigError(f"--max-calls-per-node must be >= 1, got {self.max_calls_per_node}")
        return self


class TokenBucket:
    """``limit.burst`` tokens, refilled at ``limit.rate`` a second; each request takes one."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = float(limit.burst)
        self.at = now

    def _refill(self, now: float) -> None:
        self.tokens = min(float(self.limit.burst), self.tokens + max(0.0, now - self.at) * self.limit.rate)
        self.at = now

    def wait(self, now: float) -> float:
        """Seconds until a token is free (0: one is free now); takes nothing."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.limit.rate

    def take(self, now: float) -> float:
        """Take a token if one is free: 0. Otherwise take nothing and return the seconds to wait."""
        wait = self.wait(now)
        if wait == 0.0:
            self.tokens -= 1
        return wait

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.limit.burst


def source_of(peer: str) -> str:
    """The source a rate limit counts, from ``grpc.aio.ServicerContext.peer()``: the IPv4 address, or
    the IPv6 /64 (one host often holds a whole /64, so counting addresses would not bound it)."""
    kind, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    if kind == "ipv4":
        return host
    if kind == "ipv6":
        try:
            return str(ipaddress.IPv6Network(f"{host.strip('[]').split('%')[0]}/64", strict=False))
        except ValueError:
            return host
    return peer or "unknown"


def _lines(path: Path, flag: str) -> list[str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read it ({exc.strerror})") from exc
    return [ln.split("#", 1)[0].strip() for ln in text.splitlines() if ln.split("#", 1)[0].strip()]


def read_public_keys(path: Path) -> frozenset[bytes]:
    """An allow file: one raw Ed25519 public key in hex (64 digits) per line; '#' starts a comment."""
    keys = set()
    for i, line in enumerate(_lines(path, "--allow"), 1):
        try:
            key = bytes.fromhex(line)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ConfigError(
                f"--allow {path}, entry {i} ({line[:20]!r}): expected a node's public key as 64 hex digits "
                "(a refused node's log and `fedgpu node` print it)"
            )
        keys.add(key)
    return frozenset(keys)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def read_tokens(path: Path) -> frozenset[bytes]:
    """A drivers file: one submission token per line (at least 16 characters), kept as SHA-256 digests."""
    digests = set()
    for i, line in enumerate(_lines(path, "--drivers"), 1):
        if len(line) < 16:
            raise ConfigError(f"--drivers {path}, entry {i}: a submission token needs at least 16 characters (e.g. `openssl rand -hex 32`)")
        digests.add(token_digest(line))
    return frozenset(digests)


class WatchedFile:
    """A file's parsed contents, read again when it changes (checked at most once a second).
    A change that does not parse keeps the last good contents and says so in the log."""

    def __init__(self, path: Path, parse: Callable[[Path], frozenset[bytes]], clock: Callable[[], float]) -> None:
        self.path, self.parse, self.clock = path, parse, clock
        self.items = parse(path)  # a bad file at start is a ConfigError: the aggregator does not start
        self.stamp = self._stamp()
        self.checked = clock()

    def _stamp(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> frozenset[bytes]:
        now = self.clock()
        if now - self.checked >= 1.0:
            self.checked = now
            stamp = self._stamp()
            if stamp != self.stamp:
                self.stamp = stamp
                try:
                    self.items = self.parse(self.path)
                    log.info("%s reloaded: %d entries", self.path, len(self.items))
                except ConfigError as exc:
                    log.warning("%s changed but does not parse, keeping the last good list: %s", self.path, exc)
        return self.items


class Admission:
    """The gate in front of ``Register`` and ``SubmitJob``: the policy's files and token buckets."""

    def __init__(self, policy: AdmissionPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = (policy or AdmissionPolicy()).validate()
        self.clock = clock
        p = self.policy
        self.allow = WatchedFile(p.allow_file, read_public_keys, clock) if p.mode is AdmissionMode.ALLOWLIST and p.allow_file else None
        self.drivers = WatchedFile(p.drivers_file, read_tokens, clock) if p.drivers_file else None
        self.total = TokenBucket(p.total, clock())
        self.sources: dict[str, TokenBucket] = {}
        self.refused = 0  # registrations refused by a rate limit since start (the health endpoint may show it)

    # ---- nodes ---------------------------------------------------------------------------------
    def check_source(self, source: str) -> None:
        """Take one of ``source``'s registration tokens, or refuse: RateLimited with the wait."""
        now = self.clock()
        bucket = self.sources.get(source)
        if bucket is None:
            if len(self.sources) >= MAX_SOURCES:
                self.sources = {s: b for s, b in self.sources.items() if not b.full(now)}
            if len(self.sources) >= MAX_SOURCES:
                source = "(other sources)"
            bucket = self.sources.setdefault(source, TokenBucket(self.policy.per_source, now))
        wait = bucket.take(now)
        if wait:
            self.refused += 1
            raise RateLimited(
                f"too many registrations from {source} (at most {self.policy.per_source.rate:g}/s, {self.policy.per_source.burst} at once): "
                f"retry in {wait:.1f} s with back-off"
            )

    def check_new_identity(self) -> None:
        """Take one of the overall tokens for a new identity, or refuse."""
        wait = self.total.take(self.clock())
        if wait:
            self.refused += 1
            raise RateLimited(
                f"the aggregator takes at most {self.policy.total.rate:g} new nodes a second ({self.policy.total.burst} at once): "
                f"retry in {wait:.1f} s with back-off"
            )

    def check_key(self, public_key: bytes, *also: bytes) -> None:
        """Refuse a key not on the allow-list (``also``: earlier keys of the same operator, whose rotation it is)."""
        if self.allow is None:
            return
        listed = self.allow.current()
        if public_key in listed or any(k in listed for k in also):
            return
        raise NotAdmitted(
            f"this aggregator admits only the nodes on its allow-list, and public key {public_key.hex()} is not on it: "
            f"ask its operator to add that line to the --allow file ({self.policy.allow_file})"
        )

    # ---- drivers -------------------------------------------------------------------------------
    def check_driver(self, token: str) -> None:
        """Refuse a job submission whose token is not on the ``--drivers`` list (open when there is none)."""
        if self.drivers is None:
            return
        if not token:
            raise NotAdmitted("this aggregator takes jobs only from listed drivers: set FEDGPU_SUBMIT_TOKEN to a token its operator gave you")
        if token_digest(token) not in self.drivers.current():
            raise NotAdmitted("the submission token is not on this aggregator's --drivers list: ask its operator for a valid one")


__all__ = [
    "Admission",
    "AdmissionMode",
    "AdmissionPolicy",
    "MAX_SOURCES",
    "RateLimit",
    "TokenBucket",
    "WatchedFile",
    "read_public_keys",
    "read_tokens",
    "source_of",
    "token_digest",
]
