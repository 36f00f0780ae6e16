"""The owner's ledger: epsilon is Opacus's on the stored rows, the cap is enforced, charges survive kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opacus.accountants import create_accountant

from fedgpu.errors import ConfigError, PrivacyBudgetExceeded
from fedgpu.privacy.dp import epsilon_of
from fedgpu.privacy.ledger import OwnerLedger, PrivacyEvent

REPO = Path(__file__).resolve().parents[2]


def event(job: str = "job-a", rnd: int = 0, sigma: float = 1.5, q: float = 0.1, steps: int = 10, fp: str = "sha256:aa", delta: float = 1e-5) -> PrivacyEvent:
    return PrivacyEvent("owner-1", fp, job, rnd, sigma, q, steps, delta)


def stored_rows(path: Path, fp: str) -> list[tuple[float, float, int]]:
    """Read the table directly, independently of the ledger's code."""
    with sqlite3.connect(path) as con:
        return [tuple(r) for r in con.execute("SELECT noise_multiplier, sample_rate, steps FROM privacy_events WHERE dataset_fp = ? ORDER BY id", (fp,))]  # type: ignore[misc]


@pytest.mark.parametrize("mechanism", ["prv", "rdp"])
def test_reported_epsilon_equals_opacus_on_the_stored_history(tmp_path: Path, mechanism: str) -> None:
    ledger = OwnerLedger(tmp_path / "p.db", accountant=mechanism)
    # two jobs on one dataset, one round repeated (same sigma and q), different deltas
    ledger.charge(event("job-a", 0, 1.5, 0.1, 10), cap=100)
    ledger.charge(event("job-a", 1, 1.5, 0.1, 10), cap=100)
    ledger.charge(event("job-b", 0, 2.2, 0.05, 20, delta=1e-6), cap=100)
    # Opacus's own way of building a history: one step() per optimiser step, in stored order
    acc = create_accountant(mechanism)
    for sigma, q, steps in stored_rows(tmp_path / "p.db", "sha256:aa"):
        for _ in range(steps):
            acc.step(noise_multiplier=sigma, sample_rate=q)
    assert ledger.epsilon(1e-5) == pytest.approx(acc.get_epsilon(delta=1e-5), abs=1e-6)
    # and fed the rows as they are stored, without the ledger's canonical merging, at another delta
    raw = create_accountant(mechanism)
    raw.history = stored_rows(tmp_path / "p.db", "sha256:aa")
    at_1e6 = ledger.epsilon(1e-6)
    assert at_1e6 == pytest.approx(raw.get_epsilon(delta=1e-6), abs=1e-6)
    assert at_1e6 > ledger.epsilon(1e-5)  # computed at the delta asked, whatever the events' deltas
    if mechanism == "rdp":  # one job's share (PRV is slow, one check per mechanism suffices)
        assert ledger.epsilon(1e-5, job_id="job-b") == pytest.approx(epsilon_of([(2.2, 0.05, 20)], 1e-5, mechanism), abs=1e-6)


def test_refusal_above_the_cap_records_nothing(tmp_path: Path) -> None:
    ledger = OwnerLedger(tmp_path / "p.db", accountant="rdp")
    first = ledger.charge(event(steps=50), cap=5.0)
    nxt = event(rnd=1, steps=5000)
    projected = ledger.project(nxt)
    assert projected > 5.0
    with pytest.raises(PrivacyBudgetExceeded, match=r"above the cap 5.*nothing was trained or recorded"):
        ledger.charge(nxt, cap=5.0)
    assert len(ledger.events()) == 1 and ledger.epsilon(1e-5) == pytest.approx(first)
    assert ledger.charge(event(rnd=1, steps=5), cap=5.0) == pytest.approx(ledger.epsilon(1e-5))


def test_datasets_compose_in_parallel_and_the_cap_applies_per_dataset(tmp_path: Path) -> None:
    ledger = OwnerLedger(tmp_path / "p.db", accountant="rdp")
    a = ledger.charge(event(fp="sha256:aa", steps=400), cap=10)
    b = ledger.charge(event(fp="sha256:bb", steps=40), cap=10)
    assert ledger.epsilon_by_dataset(1e-5) == {"sha256:aa": pytest.approx(a), "sha256:bb": pytest.approx(b)}
    assert ledger.epsilon(1e-5) == pytest.approx(max(a, b))
    # dataset bb has room even though aa alone would pass the cap with this event
    assert ledger.project(event(fp="sha256:aa", steps=400)) > a
    rows = {(j.dataset_fp, j.job_id): j for j in ledger.by_job(1e-5)}
    assert rows[("sha256:aa", "job-a")].steps == 400 and rows[("sha256:bb", "job-a")].epsilon_dataset == pytest.approx(b)


def test_prv_admission_falls_back_to_rdp_on_long_mixed_histories(tmp_path: Path) -> None:
    ledger = OwnerLedger(tmp_path / "p.db", accountant="prv", prv_max_segments=1)
    ledger.charge(event(sigma=1.5), cap=50)
    nxt = event(sigma=2.5, rnd=1)
    assert ledger.project(nxt) == pytest.approx(epsilon_of([(1.5, 0.1, 10), (2.5, 0.1, 10)], 1e-5, "rdp"), abs=1e-9)


def test_bad_events_and_caps_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        event(sigma=0.0)
    with pytest.raises(ConfigError):
        event(q=1.5)
    with pytest.raises(ConfigError):
        OwnerLedger(tmp_path / "p.db").charge(event(), cap=float("nan"))


@pytest.mark.e2e
def test_a_charge_survives_sigkill_before_upload(tmp_path: Path) -> None:
    db = tmp_path / "owner" / "privacy.db"
    script = textwrap.dedent(
        f"""
        import sys, time
        from fedgpu.privacy.ledger import OwnerLedger, PrivacyEvent
        ledger = OwnerLedger({str(db)!r}, accountant="rdp")
        ledger.charge(PrivacyEvent("owner-1", "sha256:aa", "job-k", 3, 1.1, 0.1, 10, 1e-5), cap=50)
        print("charged", flush=True)
        time.sleep(60)  # training and upload would happen here
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "charged"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    stored = OwnerLedger(db, accountant="rdp").events()
    assert [(s.event.job_id, s.event.round, s.event.steps) for s in stored] == [("job-k", 3, 10)]
