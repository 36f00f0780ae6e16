"""scripts/bench_vs_flower.py's process handling: every process a run starts carries the run's tag and dies on
every exit path (an aborted run once left ~270 Flower ClientApps behind), and its memory is counted."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_vs_flower.py"

# A process that starts a grandchild in its own session which ignores SIGTERM, as Flower's SuperExec starts ClientApps.
TREE = textwrap.dedent("""
    import subprocess, sys, time
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    time.sleep(120)
""")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_vs_flower", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_kill_tagged_stops_a_tree_that_ignores_sigterm(bench: ModuleType) -> None:
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-c", TREE], env={**os.environ, bench.TAG: tag}, start_new_session=True)
    try:
        wait_for(lambda: len(bench.tagged_pids(tag)) == 2)
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # untagged: must survive
        try:
            assert bench.kill_tagged(tag, grace=0.5) == 0
            assert bench.tagged_pids(tag) == []
            assert other.poll() is None
        finally:
            other.kill()
            other.wait()
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_to_the_bench_kills_its_runs(bench: ModuleType) -> None:
    tag = uuid.uuid4().hex
    driver = textwrap.dedent(f"""
        import importlib.util, os, subprocess, sys, time
        spec = importlib.util.spec_from_file_location("b", {str(SCRIPT)!r})
        b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
        b.install_exit_handlers()
        b.LIVE_TAGS.add({tag!r})
        subprocess.Popen([sys.executable, "-c", {TREE!r}], env={{**os.environ, b.TAG: {tag!r}}}, start_new_session=True)
        try:
            time.sleep(120)
        finally:
            print("unwound", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(bench.tagged_pids(tag)) == 2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM
        assert "unwound" in out  # finally blocks run before the atexit kill
        assert bench.tagged_pids(tag) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        bench.kill_tagged(tag, grace=0.1)


def test_memory_sampler_counts_a_tagged_process(bench: ModuleType) -> None:
    tag = uuid.uuid4().hex
    hold = "import sys, time; block = bytearray(96 * 2**20); block[::4096] = b'x' * len(block[::4096]); print('ready', flush=True); time.sleep(120)"
    with bench.MemorySampler(tag) as sampler:
        proc = subprocess.Popen([sys.executable, "-c", hold], env={**os.environ, bench.TAG: tag}, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            wait_for(lambda: sampler.peak_pss >= 96)
        finally:
            proc.kill()
            proc.wait()
    assert sampler.peak_rss >= sampler.peak_pss >= 96
    assert sampler.by_role()["python"]["processes"] == 1
