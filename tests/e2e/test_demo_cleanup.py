"""`fedgpu demo` leaves no process behind, however it ends: SIGTERM unwinds it, SIGKILL takes its children along."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(int(pid))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_demo_stops_every_process_it_started(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "fedgpu", "demo", "--dataset", "digits", "--nodes", "2", "-k", "1", "--rounds", "50", "--encryption", "none", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until the nodes are running
            if line.startswith("started"):
                break
        children = [p for p in processes_mentioning(str(out)) if p != proc.pid]
        assert len(children) == 3  # the aggregator and two nodes
        proc.send_signal(sig)
        proc.wait(timeout=60)
        end = time.monotonic() + 30
        while [p for p in processes_mentioning(str(out)) if p in children] and time.monotonic() < end:
            time.sleep(0.2)
        assert not [p for p in processes_mentioning(str(out)) if p in children]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in processes_mentioning(str(out)):
            os.kill(p, signal.SIGKILL)
