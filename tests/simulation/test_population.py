"""The simulated population: a node is drawn from (seed, number), partitions as promised, mixes in their shares."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fedgpu.cli.main import main
from fedgpu.errors import ConfigError
from fedgpu.simulation.population import Population, parse_mix, parse_speeds
from fedgpu.simulation.runner import INSTALL_HINT

LABELS = np.repeat(np.arange(10), 100)  # 1,000 samples, 10 classes


def test_iid_partitions_are_disjoint_until_the_set_runs_out_and_the_same_every_time() -> None:
    pop = Population(50, LABELS, samples_per_node=20, seed=3)
    nodes = pop.nodes(list(range(50)))
    held = np.concatenate([n.indices for n in nodes])
    assert len(held) == 1000 and len(np.unique(held)) == 1000 and pop.repeats == 1.0
    again = pop.nodes([7, 0])
    assert np.array_equal(again[0].indices, nodes[7].indices) and again[1].name == nodes[0].name == "sim-000000"
    over = Population(200, LABELS, samples_per_node=20, seed=3)  # 4,000 samples wanted from 1,000: each held by 4 nodes
    assert over.repeats == 4.0
    assert all(len(np.unique(n.indices)) == 20 for n in over.nodes([0, 199]))


def test_dirichlet_partitions_are_skewed_over_labels() -> None:
    iid = Population(100, LABELS, 50, seed=1).nodes(list(range(20)))
    skew = Population(100, LABELS, 50, seed=1, partition="dirichlet", alpha=0.1).nodes(list(range(20)))

    def top_share(nodes: list) -> float:  # type: ignore[type-arg]
        return float(np.mean([np.bincount(LABELS[n.indices], minlength=10).max() / 50 for n in nodes]))

    assert top_share(skew) > 0.5 > top_share(iid)
    assert all(len(n.indices) == 50 for n in skew)


def test_mixes_give_their_shares_and_refuse_nonsense() -> None:
    pop = Population(10_000, LABELS, 10, seed=0, speeds=parse_speeds("0.1=0.25"), behaviours=parse_mix("free_rider=0.1,signflip=0.2", "--behaviour-mix", ("honest", "zeros", "signflip")))
    nodes = pop.nodes(list(range(2000)))
    assert abs(np.mean([n.speed == 0.1 for n in nodes]) - 0.25) < 0.03
    assert abs(np.mean([n.behaviour == "zeros" for n in nodes]) - 0.1) < 0.03
    assert abs(np.mean([n.behaviour == "signflip" for n in nodes]) - 0.2) < 0.03
    with pytest.raises(ConfigError, match="more than 1"):
        parse_mix("a=0.6,b=0.6", "--speed-mix")
    with pytest.raises(ConfigError, match="unknown"):
        parse_mix("sleeper=0.1", "--behaviour-mix", ("honest", "zeros"))
    with pytest.raises(ConfigError, match="speed factor"):
        parse_speeds("0=0.5")


def test_simulate_without_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["simulate", "examples/mnist1d.toml", "--nodes", "10"]) == 2
    err = capsys.readouterr().err
    assert INSTALL_HINT in err and 'pip install "fedgpu[sim]"' in err
