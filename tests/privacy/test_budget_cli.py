"""``fedgpu budget``: per job and dataset, what is left under the cap, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fedgpu.cli import budget
from fedgpu.errors import ConfigError
from fedgpu.privacy.ledger import OwnerLedger, PrivacyEvent


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    budget.register(ap.add_subparsers())
    return ap.parse_args(["budget", *argv])


def test_budget_reports_jobs_datasets_and_what_is_left(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "privacy.db"
    ledger = OwnerLedger(db, accountant="rdp")
    ledger.charge(PrivacyEvent("o", "sha256:" + "a" * 64, "job-1", 0, 1.5, 0.1, 10, 1e-5), cap=10)
    ledger.charge(PrivacyEvent("o", "sha256:" + "a" * 64, "job-2", 0, 2.0, 0.1, 10, 1e-5), cap=10)
    args = parse(["--ledger", str(db), "--cap", "4", "--accountant", "rdp", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["job"] for r in out["jobs"]] == ["job-1", "job-2"]
    [ds] = out["datasets"]
    assert ds["epsilon"] == pytest.approx(ledger.epsilon(1e-5), abs=1e-6)
    assert ds["left"] == pytest.approx(4 - ds["epsilon"], abs=1e-6)
    args = parse(["--ledger", str(db), "--cap", "4", "--accountant", "rdp"])
    assert args.func(args) == 0
    assert "left under the cap 4" in capsys.readouterr().out


def test_missing_ledger_is_a_config_error_and_is_not_created(tmp_path: Path) -> None:
    args = parse(["--ledger", str(tmp_path / "none.db")])
    with pytest.raises(ConfigError, match="no privacy ledger"):
        args.func(args)
    assert not (tmp_path / "none.db").exists()


def test_cli_default_ledger_is_the_nodes_default() -> None:
    from fedgpu.privacy.ledger import DEFAULT_LEDGER

    assert budget.DEFAULT_LEDGER == DEFAULT_LEDGER
