"""What operators and data owners meet on the command line: --version, models, datasets, rewards with names, pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedgpu import __version__
from fedgpu.aggregator.store import Store
from fedgpu.cli.main import BROKEN_PIPE_EXIT, main
from fedgpu.cli.train import print_progress
from fedgpu.datasets import public_split, save_npz
from fedgpu.errors import ConfigError
from fedgpu.evaluation import parse_device
from fedgpu.models import available_models
from fedgpu.rewards.chain import GENESIS, LedgerEntry, build_rows, sign_head
from fedgpu.wire import PROTOCOL_VERSION

REPO = Path(__file__).resolve().parents[1]


def ledger_db(path: Path, rounds: int, nodes: int = 3) -> Store:
    """An aggregator database with ``rounds`` paid rounds of ``nodes`` named nodes."""
    store = Store(str(path))
    key = Ed25519PrivateKey.generate()
    store.set_meta("signing_key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ids = [f"n{i:015x}" for i in range(nodes)]
    for i, n in enumerate(ids):
        store.upsert_node(n, bytes(32), f"owner-{i}", {"name": f"owner-{i}"})
    store.create_job("job-1", "j", b"", "t")
    for rnd in range(1, rounds + 1):
        entries = [LedgerEntry("job-1", rnd, n, 0.1 * i, 10.0 * i, tuple(ids), "0" * 64) for i, n in enumerate(ids)]
        rows = build_rows(store.ledger_head() or GENESIS, entries)
        head = {"job_id": "job-1", "round": rnd, "head_hash": rows[-1].entry_hash, "signature": sign_head(key, "job-1", rnd, rows[-1].entry_hash).hex(), "evidence": "{}"}
        store.put_model("job-1", rnd, b"m", "0" * 64, None, [r.to_record() for r in rows], head)
    return store


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"fedgpu {__version__} (protocol {PROTOCOL_VERSION}")


def test_models_lists_what_is_installed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in models] == available_models()
    cnn = next(m for m in models if m["name"] == "cnn1d")
    assert cnn["params"]["mnist1d"] == 28_298 and cnn["source"] == "built in"
    assert main(["models"]) == 0
    assert "digits_cnn" in capsys.readouterr().out


def test_datasets_lists_schemas_and_checks_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "--json"]) == 0
    assert {s["name"]: s["input_shape"] for s in json.loads(capsys.readouterr().out)} == {"mnist1d": [40], "digits": [8, 8]}
    train, _ = public_split("digits", seed=0)
    save_npz(tmp_path / "mine.npz", train)
    assert main(["datasets", "--check", f"digits={tmp_path / 'mine.npz'}"]) == 0
    assert f"{len(train):,} samples of schema digits" in capsys.readouterr().out
    assert main(["datasets", "--check", f"mnist1d={tmp_path / 'mine.npz'}"]) == ConfigError.exit_code
    assert "schema 'mnist1d' needs 40" in capsys.readouterr().err


def test_datasets_exports_csvs_that_fit_the_examples_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "--export", "wine", "--out", str(tmp_path), "--nodes", "2", "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert [f["samples"] for f in written["nodes"]] == [63, 62] and written["test"]["samples"] == 53
    example = Path(__file__).resolve().parents[1] / "examples" / "wine.toml"
    assert main(["datasets", "--check", f"wine={written['nodes'][0]['path']}", "--job", str(example)]) == 0
    assert "63 samples of schema wine" in capsys.readouterr().out
    assert main(["datasets", "--check", f"wine={written['nodes'][0]['path']}"]) == ConfigError.exit_code  # no job: no schema of that name
    assert "declare it in the job's [schema] table" in capsys.readouterr().err


def test_rewards_show_node_names_beside_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger_db(tmp_path / "a.db", rounds=2)
    assert main(["rewards", "--db", str(tmp_path / "a.db"), "--rounds"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["name", "operator", "node", "now"]
    assert "owner-2 n000000000000002 n000000000000002" in " ".join(out.split())
    assert main(["rewards", "--db", str(tmp_path / "a.db"), "--export", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["node_name"] for r in rows} == {"owner-0", "owner-1", "owner-2"}


@pytest.mark.e2e
def test_rewards_export_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`fedgpu rewards --export csv | head` must not print a BrokenPipeError."""
    ledger_db(tmp_path / "a.db", rounds=200)  # 600 rows, far more than a pipe holds
    cmd = [sys.executable, "-m", "fedgpu", "rewards", "--db", str(tmp_path / "a.db"), "--export", "csv"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"id,")
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(60) == BROKEN_PIPE_EXIT
    assert "BrokenPipeError" not in err and "Traceback" not in err, err
    shell = subprocess.run(f"{' '.join(cmd)} | head -3", shell=True, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert len(shell.stdout.splitlines()) == 3 and shell.stderr == "", shell.stderr


def test_device_choices() -> None:
    assert parse_device("cpu") == torch.device("cpu")
    assert parse_device(None) == parse_device("auto")
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda or cuda:N"):
        parse_device("tpu:0")
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        assert parse_device("cuda:0") == torch.device("cuda:0")
        with pytest.raises(ConfigError, match=f"has {count} CUDA device"):
            parse_device(f"cuda:{count}")
    else:
        with pytest.raises(ConfigError, match="sees no CUDA device; use --device cpu"):
            parse_device("cuda:1")


def test_node_threads_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fedgpu.cli.main import build_parser
    from fedgpu.node.agent import NodeAgent, NodeConfig

    args = build_parser().parse_args(["node", "--data", "digits=x.npz"])
    assert 1 <= args.threads <= 2 and args.device == "auto"
    train, _ = public_split("digits", seed=0)
    save_npz(tmp_path / "d.npz", train)
    before = torch.get_num_threads()
    try:
        agent = NodeAgent(NodeConfig(aggregator="127.0.0.1:1", data={"digits": tmp_path / "d.npz"}, identity_path=tmp_path / "id.pem", threads=2, device="cpu"))
        assert torch.get_num_threads() == 2 and agent.device == torch.device("cpu")
        agent.channel.close()
        with pytest.raises(ConfigError, match="--threads 0"):
            NodeAgent(NodeConfig(aggregator="127.0.0.1:1", data={"digits": tmp_path / "d.npz"}, identity_path=tmp_path / "id.pem", threads=0))
    finally:
        torch.set_num_threads(before)


def test_progress_line_shows_driver_time_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    ev = {"event": "round", "round": 3, "rounds_total": 12, "participants": ["a", "b"], "accuracy": 0.9, "loss": 0.3, "seconds": 4.0,
          "driver_seconds": 1.5, "publish_seconds": 0.25, "bytes_up": 2e6, "epsilon": {}, "elapsed": 20.0, "eta": 185.0}
    print_progress(ev)
    line = capsys.readouterr().out
    assert "round   3/12" in line and "4.0s + driver 1.8s" in line and "elapsed 20s" in line and "eta 3m05s" in line
    print_progress({**ev, "round": 12, "eta": 0.0})
    assert "eta" not in capsys.readouterr().out  # the last round: nothing left to wait for
