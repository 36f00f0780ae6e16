"""Admission and liveness over real gRPC on 127.0.0.1: rate limits, the allow-list, driver tokens,
the bound on identities that never became live, concurrent calls per identity, and who is eligible.

The jobs these rules protect (a burst of registrations during a job, nodes SIGKILLed mid-round)
are in tests/e2e/test_liveness.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from fedgpu.aggregator.admission import Admission, AdmissionMode, AdmissionPolicy, RateLimit, TokenBucket, source_of
from fedgpu.aggregator.local import LocalAggregator
from fedgpu.aggregator.store import Store
from fedgpu.config import EncryptionConfig, JobConfig, TrainingConfig
from fedgpu.crypto.plain import PlainKeyPair
from fedgpu.datasets import public_split
from fedgpu.driver.driver import JobDriver
from fedgpu.errors import ConfigError, NotAdmitted, RateLimited
from fedgpu.proto.fedgpu.v1 import driver_pb2, driver_pb2_grpc, node_pb2, node_pb2_grpc
from fedgpu.wire import PROTOCOL_VERSION
from fedgpu.wire.auth import Identity
from fedgpu.wire.transport import open_channel

MODEL, DATASET = "digits_cnn", "digits"


class Client:
    """A node speaking the protocol by hand: one identity, one channel."""

    def __init__(self, address: str, identity: Identity | None = None) -> None:
        self.channel = open_channel(address)
        self.stub = node_pb2_grpc.NodeServiceStub(self.channel)
        self.id = identity or Identity.generate()

    def register(self) -> str:
        req = node_pb2.RegisterRequest(
            public_key=self.id.public_key, name="", capabilities=node_pb2.Capabilities(models=[MODEL], datasets=[DATASET]), protocol_version=PROTOCOL_VERSION
        )
        self.id.sign("Register", req)
        return str(self.stub.Register(req, timeout=10).node_id)

    def pull_request(self, wait: int) -> node_pb2.PullTaskRequest:
        req = node_pb2.PullTaskRequest(wait_seconds=wait)
        self.id.sign("PullTask", req)
        return req

    def pull(self, wait: int = 0) -> node_pb2.PullTaskReply:
        return self.stub.PullTask(self.pull_request(wait), timeout=wait + 10)

    def heartbeat(self) -> None:
        req = node_pb2.HeartbeatRequest()
        self.id.sign("Heartbeat", req)
        self.stub.Heartbeat(req, timeout=10)

    def close(self) -> None:
        self.channel.close()


def refused(fn, code: grpc.StatusCode) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        fn()
    assert err.value.code() == code, err.value.details()
    return str(err.value.details())


@pytest.fixture
def start(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Start an aggregator with a policy: ``start(AdmissionPolicy(...))``; stopped at the end."""
    started: list[LocalAggregator] = []

    def go(policy: AdmissionPolicy | None = None) -> LocalAggregator:
        a = LocalAggregator(str(tmp_path / f"agg{len(started)}.db"), tmp_path / f"spool{len(started)}", admission=policy).start()
        started.append(a)
        return a

    yield go
    for a in started:
        a.stop()


def eligible(a: LocalAggregator) -> list[str]:
    async def look() -> list[str]:
        assert a.agg is not None
        return a.agg.registry.eligible(MODEL, DATASET, ())

    return list(a.call(look))


# ---- the policy's parts ------------------------------------------------------------------------
def test_token_bucket_gives_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(RateLimit(2.0, 3), now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # empty: the next token comes in half a second
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) > 0
    assert bucket.full(10.0)  # refilled, never past the burst
    assert [bucket.take(10.0) for _ in range(4)][-1] > 0


def test_policy_and_limits_are_checked_with_the_flag_named() -> None:
    assert RateLimit.parse("2:20", "--register-limit") == RateLimit(2.0, 20)
    assert RateLimit.parse("0.5", "--register-limit") == RateLimit(0.5, 5)
    with pytest.raises(ConfigError, match="--register-limit 'fast'"):
        RateLimit.parse("fast", "--register-limit")
    with pytest.raises(ConfigError, match="--register-limit-total"):
        RateLimit.parse("0:10", "--register-limit-total")
    with pytest.raises(ConfigError, match="needs --allow"):
        AdmissionPolicy(mode=AdmissionMode.ALLOWLIST).validate()
    with pytest.raises(ConfigError, match="only applies with --admission allowlist"):
        AdmissionPolicy(allow_file=Path("keys.txt")).validate()


def test_a_source_is_an_ipv4_address_or_an_ipv6_64() -> None:
    assert source_of("ipv4:10.1.2.3:5555") == "10.1.2.3"
    assert source_of("ipv6:[2001:db8:1:2:aaaa::1]:5555") == source_of("ipv6:[2001:db8:1:2:bbbb::9]:6") == "2001:db8:1:2::/64"
    assert source_of("ipv6:[2001:db8:1:3::1]:5555") != source_of("ipv6:[2001:db8:1:2::1]:5555")
    assert source_of("unix:/tmp/s") == "unix:/tmp/s"


def test_allow_and_driver_files_are_checked_on_load(tmp_path: Path) -> None:
    bad = tmp_path / "keys.txt"
    bad.write_text("# operators\nnot-a-key\n")
    with pytest.raises(ConfigError, match=r"entry 1 .* 64 hex digits"):
        Admission(AdmissionPolicy(mode=AdmissionMode.ALLOWLIST, allow_file=bad))
    short = tmp_path / "drivers.txt"
    short.write_text("secret\n")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        Admission(AdmissionPolicy(drivers_file=short))
    gate = Admission(AdmissionPolicy(mode=AdmissionMode.ALLOWLIST, allow_file=_keys(tmp_path / "ok.txt", [Identity.generate()])))
    with pytest.raises(NotAdmitted, match="allow-list"):
        gate.check_key(Identity.generate().public_key)


def _keys(path: Path, ids: list[Identity]) -> Path:
    path.write_text("# the nodes this aggregator admits\n" + "".join(f"{i.public_key.hex()}  # node {i.node_id}\n" for i in ids))
    return path


# ---- refusals over gRPC ------------------------------------------------------------------------
def test_registrations_past_the_per_source_limit_are_refused_resource_exhausted(start) -> None:  # type: ignore[no-untyped-def]
    a = start(AdmissionPolicy(per_source=RateLimit(0.2, 5)))
    clients = [Client(a.address) for _ in range(8)]
    for c in clients[:5]:
        c.register()
    details = refused(clients[5].register, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "too many registrations from 127.0.0.1" in details and "retry in" in details
    refused(clients[6].register, grpc.StatusCode.RESOURCE_EXHAUSTED)
    for c in clients:
        c.close()


def test_new_identities_past_the_total_limit_are_refused_and_known_nodes_still_register(start) -> None:  # type: ignore[no-untyped-def]
    a = start(AdmissionPolicy(per_source=RateLimit(100, 100), total=RateLimit(0.1, 3)))
    clients = [Client(a.address) for _ in range(4)]
    for c in clients[:3]:
        c.register()
        c.pull()  # live once: a known node from now on
    details = refused(clients[3].register, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "new nodes a second" in details
    clients[0].register()  # a known identity registering again (a restarted node) spends no new-node token
    for c in clients:
        c.close()


def test_identities_that_never_became_live_are_bounded_and_never_stored(start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = start(AdmissionPolicy(per_source=RateLimit(100, 100), total=RateLimit(100, 100), max_unproven=3))
    ghosts = [Client(a.address) for _ in range(3)]
    for g in ghosts:
        g.register()
    late = Client(a.address)
    details = refused(late.register, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "have not connected since" in details
    ghosts[0].register()  # the same identity again is not a new one
    ghosts[0].pull()  # it shows life: no longer unproven, and now it is stored
    late.register()
    store = Store(str(tmp_path / "agg0.db"))
    try:
        assert {n["id"] for n in store.all_nodes()} == {ghosts[0].id.node_id}
    finally:
        store.engine.dispose()
    assert eligible(a) == [ghosts[0].id.node_id]  # no ghost is ever eligible
    for c in [*ghosts, late]:
        c.close()


def test_the_allow_list_admits_only_its_keys_and_is_read_again_when_it_changes(start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    listed_id, other_id = Identity.generate(), Identity.generate()
    allow = _keys(tmp_path / "nodes.allow", [listed_id])
    a = start(AdmissionPolicy(mode=AdmissionMode.ALLOWLIST, allow_file=allow))
    listed, other = Client(a.address, listed_id), Client(a.address, other_id)
    listed.register()
    details = refused(other.register, grpc.StatusCode.PERMISSION_DENIED)
    assert other.id.public_key.hex() in details and "--allow file" in details and str(allow) in details
    time.sleep(1.1)  # the file is looked at again at most once a second
    _keys(allow, [listed.id, other.id])
    end = time.monotonic() + 5
    while True:
        try:
            other.register()
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED and time.monotonic() < end
            time.sleep(0.2)
    listed.close()
    other.close()


def test_jobs_are_taken_only_with_a_listed_submission_token(start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    token = "d" * 32
    drivers = tmp_path / "drivers.txt"
    drivers.write_text(f"# the ML team\n{token}\n")
    a = start(AdmissionPolicy(drivers_file=drivers))
    stub = driver_pb2_grpc.DriverServiceStub(open_channel(a.address))
    details = refused(lambda: stub.SubmitJob(driver_pb2.SubmitJobRequest(protocol_version=PROTOCOL_VERSION), timeout=10), grpc.StatusCode.PERMISSION_DENIED)
    assert "FEDGPU_SUBMIT_TOKEN" in details
    details = refused(lambda: stub.SubmitJob(driver_pb2.SubmitJobRequest(protocol_version=PROTOCOL_VERSION, submit_token="x" * 32), timeout=10), grpc.StatusCode.PERMISSION_DENIED)
    assert "--drivers list" in details
    job = JobConfig(
        name="t", model=MODEL, dataset=DATASET, rounds=1, nodes_per_round=1, min_nodes=1, deadline_seconds=10,
        training=TrainingConfig(epochs=1), encryption=EncryptionConfig("none"),
    ).validate()
    _, test = public_split(DATASET, seed=0)
    monkeypatch.setenv("FEDGPU_SUBMIT_TOKEN", token)
    driver = JobDriver(a.address, job, tmp_path / "out", validation=test, keys=PlainKeyPair())
    assert driver.submit().startswith("job-")
    driver.channel.close()


def test_a_node_holds_at_most_two_pulls_at_once(start) -> None:  # type: ignore[no-untyped-def]
    a = start()
    c = Client(a.address)
    c.register()
    calls = [c.stub.PullTask.future(c.pull_request(wait=2), timeout=15) for _ in range(5)]
    outcomes = []
    for f in calls:
        try:
            f.result()
            outcomes.append("ok")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
            assert "at most 2 per node" in str(exc.details())
            outcomes.append("refused")
    assert sorted(outcomes) == ["ok", "ok", "refused", "refused", "refused"]
    c.pull()  # the slots are free again
    c.close()


# ---- liveness ----------------------------------------------------------------------------------
def live_at(a: LocalAggregator, node_id: str, after_last_life: float | None = None) -> bool:
    """Whether the registry counts the node live ``after_last_life`` seconds after its last sign of life (None:
    a minute from now) — the grace is checked against the registry's own clock values, so load cannot blur it."""

    async def look() -> bool:
        assert a.agg is not None
        r = a.agg.registry
        now = time.monotonic() + 60 if after_last_life is None else r.last_life[node_id] + after_last_life
        return r.live(node_id, now)

    return bool(a.call(look))


def wait_until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)


def test_a_node_is_eligible_while_it_pulls_and_a_few_seconds_after_not_once_it_is_gone(start) -> None:  # type: ignore[no-untyped-def]
    a = start()
    c = Client(a.address)
    c.register()
    node = c.id.node_id
    assert eligible(a) == []  # registering is not a sign of life
    a.agg.registry.live_grace = 0.5
    pulling = c.stub.PullTask.future(c.pull_request(wait=5), timeout=30)
    wait_until(lambda: eligible(a) == [node])
    assert live_at(a, node)  # a long-poll in flight: live a minute on, far past the grace
    pulling.result()
    assert live_at(a, node, 0.45) and not live_at(a, node, 0.55)  # just returned: within the grace, then not
    wait_until(lambda: eligible(a) == [])
    c.heartbeat()
    assert live_at(a, node, 0.45) and not live_at(a, node, 0.55)  # a heartbeat counts like a returned pull
    a.agg.registry.live_grace = 30.0
    pulling = c.stub.PullTask.future(c.pull_request(wait=30), timeout=40)
    wait_until(lambda: live_at(a, node))  # the pull is in flight
    pulling.cancel()  # the node went away (a killed process closes its connection the same way)
    wait_until(lambda: eligible(a) == [], timeout=20)  # well before the 30 s grace: cancelling ends its life at once
    c.close()


def test_a_node_that_missed_a_deadline_waits_for_its_next_pull(start) -> None:  # type: ignore[no-untyped-def]
    a = start()
    c = Client(a.address)
    c.register()
    c.pull()

    async def missed() -> None:
        assert a.agg is not None
        a.agg.registry.missed_deadline(c.id.node_id)  # what a round's deadline does to an unfinished task

    a.call(missed)
    c.heartbeat()
    assert eligible(a) == []  # alive, but it has not asked for work since it let a task lapse
    c.pull()
    assert eligible(a) == [c.id.node_id]
    c.close()


def test_rate_limit_refusals_reach_a_client_as_rate_limited(start) -> None:  # type: ignore[no-untyped-def]
    from fedgpu.wire.transport import error_from_rpc

    a = start(AdmissionPolicy(per_source=RateLimit(0.1, 1)))
    Client(a.address).register()
    with pytest.raises(grpc.RpcError) as err:
        Client(a.address).register()
    assert isinstance(error_from_rpc(err.value), RateLimited)
