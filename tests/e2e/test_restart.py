"""The aggregator (its own process, serving TLS) is SIGKILLed mid-job and restarted on the same database: nothing is lost or paid twice."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from fedgpu.cli.rewards import verify
from fedgpu.aggregator.store import Store
from fedgpu.datasets import public_split
from fedgpu.driver.driver import JobDriver
from fedgpu.wire.certs import CertFiles
from fedgpu.wire.transport import TLSConfig

from test_job import job, start_nodes, stop_nodes  # type: ignore[import-not-found]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_aggregator(port: int, db: Path, log: Path, certs: CertFiles | None = None) -> subprocess.Popen[bytes]:
    """``fedgpu aggregator`` as its own process; with ``certs`` it serves TLS (``--tls-cert``/``--tls-key``)."""
    ready = db.with_suffix(".addr")
    ready.unlink(missing_ok=True)
    tls = ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)] if certs else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedgpu", "aggregator", "--listen", f"127.0.0.1:{port}", "--db", str(db), "--ready-file", str(ready), *tls],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    end = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < end, log.read_text()
        time.sleep(0.05)
    return proc


def test_aggregator_crash_resumes_from_last_round(tmp_path: Path, certs: CertFiles) -> None:
    train, test = public_split("digits", seed=0)
    port, db, log = free_port(), tmp_path / "agg.db", tmp_path / "agg.log"
    agg = start_aggregator(port, db, log, certs)
    address = f"127.0.0.1:{port}"
    tls = TLSConfig(ca=certs.ca)
    nodes = start_nodes(address, tmp_path, train, 3, tls)
    killed = threading.Event()

    def progress(ev: dict) -> None:
        if ev["event"] == "round" and ev["round"] == 2 and not killed.is_set():
            agg.send_signal(signal.SIGKILL)  # no clean shutdown: whatever was in flight is lost
            agg.wait()
            killed.set()

    result: dict = {}
    driver = JobDriver(address, job(rounds=4), tmp_path / "out", validation=test, progress=progress, tls=tls)
    th = threading.Thread(target=lambda: result.update(driver.run()), daemon=True)
    th.start()
    try:
        assert killed.wait(120), log.read_text()
        agg = start_aggregator(port, db, log, certs)
        th.join(180)
        assert not th.is_alive(), "the job did not finish after the restart"
    finally:
        stop_nodes(nodes)
        if agg.poll() is None:
            agg.send_signal(signal.SIGTERM)
            agg.wait(10)
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3, 4]
    assert result["final_accuracy"] > 0.8
    store = Store(str(db))
    rows = store.ledger_rows()
    paid = [(r["round"], r["node_id"]) for r in rows]
    assert len(paid) == len(set(paid)) == 4 * 3  # every participant of every round, exactly once
    ok, message = verify(store, None)
    assert ok, message
    assert store.job(result["job"]).state == "done"
    store.engine.dispose()
