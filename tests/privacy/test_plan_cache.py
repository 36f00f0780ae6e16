"""The node's plan cache saves the search and nothing else: a hit only for the same inputs and versions, damage is a miss."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import fedgpu.privacy.planning as dp
from fedgpu.privacy.dp import Accountant, epsilon_of
from fedgpu.privacy.plan_cache import MAX_ENTRIES, NoisePlan, PlanCache, PlanKey, _digest
from fedgpu.privacy.planning import noise_plan, plan_key

ARGS = (8.0, 1e-5, 0.1, 200)  # epsilon, delta, q, steps
TOL = 0.008


def plan_rdp(path: Path, *args: object) -> NoisePlan:
    """A fresh PlanCache per call: what a new node process sees. RDP keeps the tests fast."""
    eps, delta, q, steps = args or ARGS
    return noise_plan(eps, delta, q, steps, Accountant.RDP, TOL, PlanCache(path))  # type: ignore[arg-type]


def test_a_new_process_reads_the_plan_instead_of_searching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "privacy.plans.json"
    first = plan_rdp(path)
    assert first.evaluations >= 1 and path.exists()
    monkeypatch.setattr(dp, "_search", lambda *_: pytest.fail("searched although the cache holds the plan"))
    second = plan_rdp(path)
    assert (second.noise_multiplier, second.epsilon, second.evaluations) == (first.noise_multiplier, first.epsilon, 0)
    assert epsilon_of([(second.noise_multiplier, 0.1, 200)], 1e-5, "rdp") == first.epsilon


@pytest.mark.parametrize(
    "change",
    ["epsilon", "delta", "sample_rate", "steps", "accountant", "tolerance", "planner", "engine"],
)
def test_any_change_of_the_key_is_a_miss(tmp_path: Path, change: str) -> None:
    cache = PlanCache(tmp_path / "p.json")
    key = plan_key(*ARGS, Accountant.RDP, TOL)
    plan = noise_plan(*ARGS, Accountant.RDP, TOL)
    cache.put(key, plan)
    changed = {
        "epsilon": 8.000001,
        "delta": 1.1e-5,
        "sample_rate": 0.1000001,
        "steps": 201,
        "accountant": "prv",
        "tolerance": 0.0081,
        "planner": key.planner + 1,
        "engine": key.engine.replace("opacus ", "opacus 0"),
    }[change]
    other = dataclasses.replace(key, **{change: changed})
    assert PlanCache(tmp_path / "p.json").get(key) == NoisePlan(plan.noise_multiplier, plan.epsilon)
    assert PlanCache(tmp_path / "p.json").get(other) is None


def test_a_new_opacus_version_plans_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.json"
    plan_rdp(path)
    monkeypatch.setattr(dp, "_engine", lambda: "opacus 9.9, numpy 1, scipy 1")
    assert plan_rdp(path).evaluations >= 1
    assert len(json.loads(path.read_text())["plans"]) == 2


@pytest.mark.parametrize("garbage", [b"", b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'{"format": 99, "plans": {}}', b'{"format": 1, "plans": 3}'])
def test_a_corrupt_file_is_ignored_and_rewritten(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "p.json"
    path.write_bytes(garbage)
    plan = plan_rdp(path)
    assert plan.evaluations >= 1  # searched, not read
    stored = json.loads(path.read_text())
    assert stored["format"] == 1 and len(stored["plans"]) == 1
    assert plan_rdp(path).evaluations == 0


def test_a_damaged_entry_is_never_a_wrong_sigma(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    good = plan_rdp(path)
    raw = json.loads(path.read_text())
    [entry] = raw["plans"].values()
    entry["noise_multiplier"] *= 0.9  # less noise than planned: would overspend
    path.write_text(json.dumps(raw))
    again = plan_rdp(path)
    assert again.evaluations >= 1 and again.noise_multiplier == good.noise_multiplier
    assert plan_rdp(path).evaluations == 0  # the entry was rewritten


def test_an_entry_over_the_target_is_refused_even_with_a_valid_digest(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    key = plan_key(*ARGS, Accountant.RDP, TOL)
    sigma = 1.0  # spends more than 8 at q = 0.1 over 200 steps
    eps = epsilon_of([(sigma, 0.1, 200)], 1e-5, "rdp")
    assert eps > 8.0
    entry = {**dataclasses.asdict(key), "noise_multiplier": sigma, "epsilon": eps, "digest": _digest(key, sigma, eps)}
    path.write_text(json.dumps({"format": 1, "plans": {key.text(): entry}}))
    assert PlanCache(path).get(key) is None
    with pytest.raises(ValueError, match="outside its target"):
        PlanCache(path).put(key, NoisePlan(sigma, eps))
    plan = plan_rdp(path)
    assert 8.0 - TOL <= plan.epsilon <= 8.0


def test_an_unwritable_cache_only_costs_the_search(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "p.json"  # its folder is a file
    assert plan_rdp(path).evaluations >= 1
    assert plan_rdp(path).evaluations >= 1


def test_the_file_keeps_the_newest_entries(tmp_path: Path) -> None:
    cache = PlanCache(tmp_path / "p.json")
    base = plan_key(*ARGS, Accountant.RDP, TOL)
    for i in range(MAX_ENTRIES + 3):
        cache.put(dataclasses.replace(base, steps=base.steps + i), NoisePlan(2.0, 7.995))
    kept = PlanCache(tmp_path / "p.json")
    assert kept.get(base) is None  # the oldest went first
    assert kept.get(dataclasses.replace(base, steps=base.steps + MAX_ENTRIES + 2)) == NoisePlan(2.0, 7.995)
    assert len(json.loads((tmp_path / "p.json").read_text())["plans"]) == MAX_ENTRIES


def test_keys_are_exact_for_floats() -> None:
    key = PlanKey(1 / 3, 1e-5, 1 / 93, 93, "prv", 1 / 3000, 2, "x")
    assert json.loads(key.text())[:3] == [1 / 3, 1e-5, 1 / 93]
