"""What an operator meets when running the aggregator: a busy port refused, a health check, Prometheus metrics."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedgpu.aggregator.local import LocalAggregator
from fedgpu.aggregator.metrics import MetricsServer
from fedgpu.aggregator.server import SERVICES
from fedgpu.cli.main import main
from fedgpu.errors import ConfigError
from fedgpu.proto.fedgpu.v1 import node_pb2, node_pb2_grpc
from fedgpu.wire import PROTOCOL_VERSION, chunks
from fedgpu.wire.auth import Identity
from fedgpu.wire.transport import open_channel

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")}


def test_a_second_aggregator_on_a_busy_port_is_refused(aggregator: LocalAggregator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """gRPC's default SO_REUSEPORT would let both bind and share connections silently."""
    assert main(["aggregator", "--listen", aggregator.address, "--db", str(tmp_path / "second.db")]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert f"cannot listen on {aggregator.address}" in err and "taken" in err
    with pytest.raises(ConfigError, match="taken"):
        LocalAggregator(str(tmp_path / "third.db"), tmp_path / "spool3", listen=aggregator.address).start()


def test_listen_without_a_port_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["aggregator", "--listen", "127.0.0.1", "--db", str(tmp_path / "a.db")]) == ConfigError.exit_code
    assert "expected HOST:PORT" in capsys.readouterr().err
    assert main(["aggregator", "--metrics", "127.0.0.1", "--db", str(tmp_path / "a.db")]) == ConfigError.exit_code
    assert "--metrics" in capsys.readouterr().err


def test_health_service_says_serving(aggregator: LocalAggregator) -> None:
    with open_channel(aggregator.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", *SERVICES):
            assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_metrics_count_nodes_and_uploads(aggregator: LocalAggregator, tmp_path: Path) -> None:
    assert aggregator.agg is not None
    exporter = MetricsServer("127.0.0.1:0", aggregator.loop, aggregator.agg.snapshot).start()
    try:
        before = scrape(exporter.port)
        assert before["fedgpu_nodes_registered"] == 0 and before["fedgpu_uploads_refused_total"] == 0
        node = Identity.load_or_create(tmp_path / "n.pem")
        with open_channel(aggregator.address) as channel:
            stub = node_pb2_grpc.NodeServiceStub(channel)
            req = node_pb2.RegisterRequest(public_key=node.public_key, name="n", capabilities=node_pb2.Capabilities(models=["mlp"], datasets=["digits"]), protocol_version=PROTOCOL_VERSION)
            node.sign("Register", req)
            stub.Register(req, timeout=10)
            chunk = node_pb2.UpdateChunk(task_id="no-such-task", chunk=chunks.make_chunk(0, 1, b"x" * 1000))
            node.sign("UploadUpdate", chunk)
            with pytest.raises(grpc.RpcError):
                stub.UploadUpdate(iter([chunk]), timeout=10)
        after = scrape(exporter.port)
        assert after["fedgpu_nodes_registered"] == 1 and after["fedgpu_nodes_live"] == 1
        assert after["fedgpu_registrations_total"] == 1
        assert after["fedgpu_uploads_refused_total"] == 1 and after["fedgpu_uploads_accepted_total"] == 0
        assert after["fedgpu_bytes_in_total"] > 1000
        assert after["fedgpu_rounds_closed_total"] == 0
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/other", timeout=10)
    finally:
        exporter.stop()


@pytest.mark.e2e
def test_aggregator_process_serves_metrics_and_health(tmp_path: Path) -> None:
    port = free_port()
    ready = tmp_path / "addr"
    cmd = [sys.executable, "-m", "fedgpu", "aggregator", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "a.db"), "--metrics", f"127.0.0.1:{port}", "--ready-file", str(ready)]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < end
            time.sleep(0.1)
        metrics = scrape(port)
        assert metrics["fedgpu_nodes_registered"] == 0
        with open_channel(ready.read_text().strip()) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.terminate()
        proc.wait(15)
