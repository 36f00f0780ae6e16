"""The demo's simulated adversaries live outside the production node: their own entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedgpu.adversaries import BEHAVIOURS, apply_behaviour
from fedgpu.cli.main import main
from fedgpu.datasets import public_split, save_npz
from fedgpu.errors import ConfigError
from fedgpu.node.agent import NodeConfig


def test_the_production_node_has_no_behaviour_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["node", "--data", "digits=x.npz", "--behaviour", "zeros"])
    assert "unrecognized arguments: --behaviour" in capsys.readouterr().err


def test_the_adversary_entry_point_names_its_behaviours() -> None:
    out = subprocess.run([sys.executable, "-m", "fedgpu.adversaries"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and all(b in out.stderr for b in BEHAVIOURS)


def test_labelflip_trains_on_flipped_labels_and_zeros_sends_nothing(tmp_path: Path) -> None:
    train, _ = public_split("digits", seed=0)
    f = tmp_path / "d.npz"
    save_npz(f, train.subset(np.arange(50)))
    cfg = NodeConfig(aggregator="127.0.0.1:1", data={"digits": f}, identity_path=tmp_path / "id.pem")
    apply_behaviour(cfg, "labelflip")
    assert cfg.data == {} and np.array_equal(cfg.extra_datasets["digits"].y, 9 - train.y[:50])
    apply_behaviour(cfg, "zeros")
    assert cfg.update_hook is not None
    assert not cfg.update_hook(None, np.ones(3), np.ones(3)).any()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="allowed values"):
        apply_behaviour(cfg, "sneaky")


def test_the_demo_marks_lazy_nodes_and_builds_a_public_data_job() -> None:
    from fedgpu.demo import DemoConfig, _roles, build_job

    cfg = DemoConfig(nodes=6, free_riders=1, poisoners=1, lazy_nodes=2, public=True, replication=0.25, dataset="digits")
    assert _roles(cfg) == ["honest", "honest", "lazy", "lazy", "signflip", "zeros"]
    job = build_job(cfg)
    assert job.public_data.enabled and job.public_data.replication == 0.25 and job.cohort_size == 1
    assert not build_job(DemoConfig(nodes=3)).public_data.enabled


def test_a_slow_node_is_an_honest_node_with_a_real_delay_and_the_demo_marks_it(tmp_path: Path) -> None:
    from fedgpu.demo import DemoConfig, _roles, build_job

    cfg = NodeConfig(aggregator="127.0.0.1:1", data={}, identity_path=tmp_path / "id.pem")
    apply_behaviour(cfg, "slow", 5.0)
    assert cfg.slowdown == 5.0 and cfg.update_hook is None and cfg.extra_datasets == {}
    with pytest.raises(ConfigError, match="slow-factor"):
        apply_behaviour(cfg, "slow", 0.5)
    demo = DemoConfig(nodes=6, slow_nodes=2, slow_factor=5.0, free_riders=1)
    assert _roles(demo) == ["slow", "slow", "honest", "honest", "honest", "zeros"]
    job = build_job(demo)
    assert job.nodes_per_round == 4 and job.selection.rule == "utility" and job.selection.over_select == 0.5  # the 2 slow ones are offered on top of 4 (over-selection)
