"""The transport seam: cleartext only on loopback, TLS that verifies, gRPC failures in fedgpu's words."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedgpu.aggregator.local import LocalAggregator
from fedgpu.cli.main import main
from fedgpu.datasets import public_split, save_npz
from fedgpu.errors import AuthError, ConfigError, FedgpuError, NotFoundError, ProtocolError, StateError, TransportError
from fedgpu.node.agent import NodeAgent, NodeConfig
from fedgpu.proto.fedgpu.v1 import node_pb2, node_pb2_grpc
from fedgpu.wire import PROTOCOL_VERSION, transport
from fedgpu.wire.auth import Identity
from fedgpu.wire.certs import CertFiles, write_certs
from fedgpu.wire.transport import TLSConfig, check_listen, error_from_rpc, open_channel, parse_address, rpc_errors

REPO = Path(__file__).resolve().parents[2]
SERVING = TLSConfig(cert=Path("server.pem"), key=Path("server.key"))  # check_listen reads no file


# ---- the cleartext rule, without binding anything ------------------------------------------------
@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.8.9.10:50051", "[::1]:50051", "localhost:50051", "LOCALHOST:1"])
def test_cleartext_is_allowed_on_loopback(listen: str) -> None:
    check_listen(listen, TLSConfig())


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051", "10.0.0.5:50051", "agg.example.org:50051", ":50051", "[::ffff:127.0.0.1]:1"])
def test_cleartext_off_loopback_is_refused_unless_insecure(listen: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_listen(listen, TLSConfig())
    assert "--tls-cert" in str(err.value) and "--insecure" in str(err.value)
    check_listen(listen, TLSConfig(insecure=True))
    check_listen(listen, SERVING)


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1", "0.0.0.0:", "[::1]", "::1:50051", "host:port", "h:70000", ""])
def test_listen_needs_host_and_port(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"HOST:PORT|past 65535"):
        check_listen(listen, TLSConfig(insecure=True))


def test_parse_address() -> None:
    assert parse_address("[::1]:50051") == ("::1", 50051)
    assert parse_address("agg.example.org:443") == ("agg.example.org", 443)


def test_contradictory_tls_flags_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="go together"):
        TLSConfig(cert=Path("c.pem"))
    with pytest.raises(ConfigError, match="--insecure"):
        TLSConfig(ca=Path("ca.pem"), insecure=True)


def test_client_uses_cleartext_only_on_loopback_or_when_told(certs: CertFiles) -> None:
    assert transport.channel_credentials("127.0.0.1:50051", TLSConfig()) is None
    assert transport.channel_credentials("localhost:50051", TLSConfig()) is None
    assert transport.channel_credentials("agg.example.org:50051", TLSConfig()) is not None  # the system's CAs
    assert transport.channel_credentials("dns:///agg.example.org", TLSConfig()) is not None
    assert transport.channel_credentials("agg.example.org:50051", TLSConfig(insecure=True)) is None
    assert transport.channel_credentials("127.0.0.1:50051", TLSConfig(ca=certs.ca)) is not None


def test_aggregator_cli_refuses_cleartext_on_all_interfaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["aggregator", "--listen", "0.0.0.0:0", "--db", str(tmp_path / "a.db")]) == ConfigError.exit_code
    assert "refusing cleartext" in capsys.readouterr().err
    assert not (tmp_path / "a.db").exists()  # refused before the database opened
    assert main(["aggregator", "--listen", "localhost", "--db", str(tmp_path / "a.db")]) == ConfigError.exit_code


def test_every_channel_and_port_goes_through_the_seam() -> None:
    """No other module opens a channel or a port: TLS, limits and keep-alives cannot be forgotten there."""
    seam = REPO / "fedgpu" / "wire" / "transport.py"
    calls = ("insecure_channel(", "secure_channel(", "add_insecure_port(", "add_secure_port(", "grpc.aio.server(", "grpc.server(")
    offenders = [
        f"{path.relative_to(REPO)}: {call}"
        for path in (REPO / "fedgpu").rglob("*.py")
        if path != seam and "proto" not in path.relative_to(REPO).parts
        for call in calls
        if call in path.read_text()
    ]
    assert not offenders, offenders


# ---- PEM files -----------------------------------------------------------------------------------
def test_certs_command_writes_a_ca_and_rotates_only_the_leaf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tls"
    assert main(["certs", str(out), "--host", "127.0.0.1", "--host", "agg.example.org"]) == 0
    assert "--tls-ca" in capsys.readouterr().out
    assert stat.S_IMODE(os.stat(out / "ca.key").st_mode) == 0o600 and stat.S_IMODE(os.stat(out / "server.key").st_mode) == 0o600
    ca, leaf = (out / "ca.pem").read_bytes(), (out / "server.pem").read_bytes()
    assert main(["certs", str(out), "--host", "127.0.0.1"]) == 0
    assert (out / "ca.pem").read_bytes() == ca and (out / "server.pem").read_bytes() != leaf


def test_bad_pem_files_are_config_errors(tmp_path: Path, certs: CertFiles) -> None:
    other = write_certs(tmp_path / "other", ["127.0.0.1"])
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot read"):
        transport.server_pair(TLSConfig(cert=tmp_path / "missing.pem", key=certs.key))
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        transport.server_pair(TLSConfig(cert=tmp_path / "junk.pem", key=certs.key))
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        transport.server_pair(TLSConfig(cert=certs.cert, key=tmp_path / "junk.pem"))
    with pytest.raises(ConfigError, match="not the key of the certificate"):
        transport.server_pair(TLSConfig(cert=certs.cert, key=other.key))
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        open_channel("127.0.0.1:1", TLSConfig(ca=tmp_path / "junk.pem"))


# ---- errors --------------------------------------------------------------------------------------
class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    "code, kind",
    [
        (grpc.StatusCode.INVALID_ARGUMENT, ProtocolError),
        (grpc.StatusCode.UNAUTHENTICATED, AuthError),
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.FAILED_PRECONDITION, StateError),
        (grpc.StatusCode.UNAVAILABLE, TransportError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, TransportError),
        (grpc.StatusCode.INTERNAL, FedgpuError),
    ],
)
def test_rpc_errors_become_fedgpu_errors(code: grpc.StatusCode, kind: type[FedgpuError]) -> None:
    with pytest.raises(kind) as err, rpc_errors("agg:1"):
        raise FakeRpcError(code, "what the server said")
    assert type(err.value) is kind
    assert "agg:1" in str(err.value) and "what the server said" in str(err.value)
    assert isinstance(err.value.__cause__, grpc.RpcError)


def test_handshake_failures_say_what_to_fix() -> None:
    untrusted = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "ipv4:127.0.0.1:1: Tls handshake failed (TSI_PROTOCOL_FAILURE): CERTIFICATE_VERIFY_FAILED")
    assert transport.handshake_failed(untrusted)
    assert "not signed by the CA given with --tls-ca" in str(error_from_rpc(untrusted))
    cleartext = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Tls handshake failed (TSI_PROTOCOL_FAILURE): WRONG_VERSION_NUMBER")
    assert "does not seem to speak TLS" in str(error_from_rpc(cleartext))
    assert not transport.handshake_failed(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Connection refused"))


# ---- real sockets ----------------------------------------------------------------------------------
def register(address: str, tls: TLSConfig | None, tmp: Path) -> str:
    ident = Identity.load_or_create(tmp / "id.pem")
    req = node_pb2.RegisterRequest(public_key=ident.public_key, name="t", capabilities=node_pb2.Capabilities(models=["mlp"], datasets=["digits"]), protocol_version=PROTOCOL_VERSION)
    ident.sign("Register", req)
    channel = open_channel(address, tls)
    try:
        with rpc_errors(address):
            return node_pb2_grpc.NodeServiceStub(channel).Register(req, timeout=10).node_id
    finally:
        channel.close()


def test_tls_client_trusting_the_ca_registers(tls_aggregator: LocalAggregator, certs: CertFiles, tmp_path: Path) -> None:
    assert register(tls_aggregator.address, TLSConfig(ca=certs.ca), tmp_path).startswith("n")
    port = tls_aggregator.address.rsplit(":", 1)[1]
    assert register(f"localhost:{port}", TLSConfig(ca=certs.ca), tmp_path).startswith("n")  # the DNS name in the certificate


def test_cleartext_client_to_a_tls_aggregator_fails_cleanly(tls_aggregator: LocalAggregator, tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="If it serves TLS, pass --tls-ca"):
        register(tls_aggregator.address, None, tmp_path)


def test_tls_client_to_a_cleartext_aggregator_fails_cleanly(aggregator: LocalAggregator, certs: CertFiles, tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="does not seem to speak TLS"):
        register(aggregator.address, TLSConfig(ca=certs.ca), tmp_path)


def test_node_with_the_wrong_ca_refuses_to_connect(tls_aggregator: LocalAggregator, tmp_path: Path) -> None:
    wrong = write_certs(tmp_path / "wrong", ["127.0.0.1"])
    train, _ = public_split("digits", seed=0)
    save_npz(tmp_path / "d.npz", train.subset(np.arange(50)))
    agent = NodeAgent(NodeConfig(aggregator=tls_aggregator.address, data={"digits": tmp_path / "d.npz"}, identity_path=tmp_path / "n" / "id.pem", tls=TLSConfig(ca=wrong.ca)))
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            agent.run()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(20), "the node kept retrying a certificate it cannot trust"
    agent.stop()
    agent.channel.close()
    assert len(errors) == 1 and isinstance(errors[0], TransportError)
    assert "not signed by the CA given with --tls-ca" in str(errors[0])


def test_leaf_rotation_needs_no_change_on_the_client(tmp_path: Path, certs: CertFiles) -> None:
    """Restart the aggregator with a new certificate from the same CA: a client with the old --tls-ca still connects."""
    for attempt in range(2):
        files = write_certs(certs.ca.parent, ["127.0.0.1"]) if attempt else certs
        with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool", tls=TLSConfig(cert=files.cert, key=files.key)) as agg:
            assert register(agg.address, TLSConfig(ca=certs.ca), tmp_path)


JOB_TOML = """
name = "t"
model = "digits_cnn"
dataset = "digits"
rounds = 1
nodes_per_round = 1
min_nodes = 1
cohort_size = 1
[encryption]
scheme = "none"
[rewards]
pool_per_round = 0.0
"""


@pytest.mark.parametrize("client", ["cleartext", "wrong_ca"])
def test_train_cli_fails_with_a_message_not_a_traceback(tls_aggregator: LocalAggregator, tmp_path: Path, client: str) -> None:
    (tmp_path / "job.toml").write_text(JOB_TOML)
    args = [sys.executable, "-m", "fedgpu", "train", str(tmp_path / "job.toml"), "--aggregator", tls_aggregator.address, "--out", str(tmp_path / "out")]
    if client == "wrong_ca":
        args += ["--tls-ca", str(write_certs(tmp_path / "wrong", ["127.0.0.1"]).ca)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == TransportError.exit_code, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count("fedgpu: error: ") == 1
    assert ("If it serves TLS, pass --tls-ca" if client == "cleartext" else "not signed by the CA given with --tls-ca") in r.stderr


def test_a_ca_bundle_trusts_either_ca(tmp_path: Path, certs: CertFiles) -> None:
    """CA rotation without a flag day: clients hold old + new CA while the aggregator switches its leaf."""
    new = write_certs(tmp_path / "new", ["127.0.0.1"])
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(certs.ca.read_bytes() + new.ca.read_bytes())
    for files in (certs, new):
        with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool", tls=TLSConfig(cert=files.cert, key=files.key)) as agg:
            assert register(agg.address, TLSConfig(ca=bundle), tmp_path)


@pytest.mark.skipif(subprocess.run(["which", "openssl"], capture_output=True).returncode != 0, reason="no openssl")
def test_certificates_made_with_openssl_as_in_the_docs_work(tmp_path: Path) -> None:
    script = (REPO / "docs" / "tls.md").read_text().split("**The same with openssl:**", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    script = script.replace("agg.example.org", "localhost").replace("203.0.113.7", "127.0.0.1")
    subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True, capture_output=True)
    with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool", tls=TLSConfig(cert=tmp_path / "server.pem", key=tmp_path / "server.key")) as agg:
        assert register(agg.address, TLSConfig(ca=tmp_path / "ca.pem"), tmp_path)
