"""The aggregator on PostgreSQL as a real process: a job whose aggregator is SIGKILLed inside a
transaction and restarted on the same database loses, doubles and mixes nothing.

Runs where ``FEDGPU_TEST_POSTGRES_URL`` is set (tests/conftest.py's ``postgres_url``), always in CI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fedgpu.config import RewardsConfig
from fedgpu.crypto.plain import PlainKeyPair
from fedgpu.datasets import public_split
from fedgpu.driver.driver import JobDriver

from test_job import job, stop_nodes  # type: ignore[import-not-found]
from test_restart import check_ledger, check_sums_hold_only_their_members, free_port, start_nodes  # type: ignore[import-not-found]

pytestmark = pytest.mark.e2e


def start_aggregator(url: str, port: int, tmp: Path, crash_at: str | None = None) -> subprocess.Popen[bytes]:
    """``fedgpu aggregator --db URL`` as its own process (test_restart's, with a URL and an explicit spool)."""
    ready = tmp / "agg.addr"
    ready.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "FEDGPU_CRASH_AT"}
    if crash_at:
        env["FEDGPU_CRASH_AT"] = crash_at
    log = tmp / "agg.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedgpu", "aggregator", "--listen", f"127.0.0.1:{port}", "--db", url, "--spool", str(tmp / "spool"), "--ready-file", str(ready)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
    )
    end = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > end:
            raise AssertionError(log.read_text()[-3000:])
        time.sleep(0.05)
    return proc


def test_a_job_on_postgresql_survives_its_aggregator_killed_inside_the_ledger_transaction(tmp_path: Path, postgres_url: str) -> None:
    train, test = public_split("digits", seed=0)
    port = free_port()
    address = f"127.0.0.1:{port}"
    # The first ledger_write is the initial model's put_model; the second is round 1's: model, result and payments.
    agg = start_aggregator(postgres_url, port, tmp_path, "ledger_write@2")
    nodes = start_nodes(address, tmp_path, train)
    result: dict = {}
    driver = JobDriver(address, job(rounds=3, rewards=RewardsConfig(pool_per_round=100.0, budget=16)), tmp_path / "out", validation=test, keys=PlainKeyPair(values_per_chunk=2_000))
    th = threading.Thread(target=lambda: result.update(driver.run()), daemon=True)
    th.start()
    try:
        assert agg.wait(300) == -signal.SIGKILL, (tmp_path / "agg.log").read_text()[-3000:]
        agg = start_aggregator(postgres_url, port, tmp_path)  # the same database and port
        th.join(300)
        assert not th.is_alive(), (tmp_path / "agg.log").read_text()[-3000:]
        check_ledger(postgres_url, result, nodes)  # paid once per (round, node), the chain verifies, every receipt arrived
    finally:
        stop_nodes(nodes)
        if agg.poll() is None:
            agg.send_signal(signal.SIGTERM)
            agg.wait(10)
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3]
    check_sums_hold_only_their_members(result, nodes)
    assert result["final_accuracy"] > 0.75
