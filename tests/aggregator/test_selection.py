"""Selection: uniform as before, utility by measured value per second, exploration, over-selection, DP, deadlines."""

from __future__ import annotations

import random
from collections import Counter

from fedgpu.aggregator.selection import NodeHistory, plan_of, select
from fedgpu.wire.records import SelectionPlan

NODES = [f"n{i}" for i in range(10)]
UTILITY = SelectionPlan(rule="utility", exploration=0.2, over_select=0.2)


def measured(seconds: dict[str, float], values: dict[str, tuple[float, ...]] | None = None) -> dict[str, NodeHistory]:
    return {n: NodeHistory(tasks=3, seconds=s, values=(values or {}).get(n, (1.0, 1.0, 1.0))) for n, s in seconds.items()}


def counts(history: dict[str, NodeHistory], plan: SelectionPlan = UTILITY, rounds: int = 200, want: int = 4, dp: bool = False) -> Counter[str]:
    c: Counter[str] = Counter()
    for r in range(rounds):
        c.update(select(NODES, want, history, plan, random.Random(r), deadline_seconds=60.0, dp=dp).chosen)
    return c


def test_uniform_is_the_old_draw_and_closes_when_every_task_ended() -> None:
    for seed in range(5):
        got = select(NODES, 4, {}, SelectionPlan(rule="uniform"), random.Random(seed), 60.0)
        assert got.chosen == random.Random(seed).sample(NODES, 4) and got.enough == 4


def test_utility_prefers_fast_nodes_of_equal_value_and_still_explores_the_slow() -> None:
    history = measured({n: 1.0 + 9.0 * i / 9 for i, n in enumerate(NODES)})  # n0 1 s .. n9 10 s: speeds spread 10x
    c = counts(history)
    assert c["n0"] > 150 and c["n1"] > 150
    assert c["n0"] > 3 * c["n9"] > 0  # explored now and then, not starved
    got = select(NODES, 4, history, UTILITY, random.Random(0), 60.0)
    assert len(got.chosen) == 5 and got.enough == 4  # ceil(0.2 x 4) = 1 extra task; the round closes at 4


def test_value_per_second_decides_between_a_fast_useless_node_and_a_slower_valuable_one() -> None:
    seconds = dict.fromkeys(NODES, 2.0)
    seconds["n0"] = 1.0
    values = dict.fromkeys(NODES, (1.0,) * 5)
    values["n0"] = (0.05,) * 5   # fast, little value: 0.05 + floor per second
    values["n1"] = (3.0,) * 5    # twice as slow as n0, 60x the value
    c = counts(measured(seconds, values))
    assert c["n1"] > 190 and c["n1"] > c["n0"]


def test_persistently_non_positive_nodes_get_less_and_less_work() -> None:
    seconds = dict.fromkeys(NODES, 1.0)
    few = {"n8": (1.0, 0.0, 0.0), "n9": (1.0, 1.0, 1.0)}
    many = {"n8": (1.0,) + (0.0,) * 8, "n9": (1.0,) + (-0.5,) * 8}
    c_few, c_many = counts(measured(seconds, few)), counts(measured(seconds, many))
    honest = min(c_many[n] for n in NODES[:8] if n != "n8")
    assert c_many["n8"] < c_few["n8"] and c_many["n9"] < honest / 4


def test_a_dp_job_does_not_over_select_unless_it_allows_it() -> None:
    history = measured({n: 1.0 for n in NODES})
    assert len(select(NODES, 4, history, UTILITY, random.Random(0), 60.0, dp=True).chosen) == 4
    allowed = SelectionPlan(rule="utility", exploration=0.2, over_select=0.2, dp_over_selection=True)
    assert len(select(NODES, 4, history, allowed, random.Random(0), 60.0, dp=True).chosen) == 5


def test_nodes_measured_slower_than_the_deadline_are_skipped_unless_too_few_are_left() -> None:
    seconds = {n: 5.0 for n in NODES}
    seconds.update(n0=100.0, n1=100.0)
    history = measured(seconds)
    for r in range(50):
        assert not {"n0", "n1"} & set(select(NODES, 8, history, UTILITY, random.Random(r), deadline_seconds=30.0).chosen)
    only_slow = select(["n0", "n1", "n2"], 3, history, UTILITY, random.Random(0), deadline_seconds=30.0, minimum=3).chosen
    assert sorted(only_slow) == ["n0", "n1", "n2"]


def test_fresh_nodes_are_tried_first_in_the_exploration_share() -> None:
    history = measured({n: 1.0 for n in NODES[:8]})  # n8, n9 never worked
    c = counts(history, rounds=100)
    assert c["n8"] + c["n9"] == 100  # one exploration slot of five each round, always a fresh node


def test_the_same_seed_selects_the_same_nodes() -> None:
    history = measured({n: 1.0 + i for i, n in enumerate(NODES)})
    a = select(NODES, 4, history, UTILITY, random.Random(7), 60.0)
    assert a == select(NODES, 4, history, UTILITY, random.Random(7), 60.0)


def test_a_spec_without_a_plan_gets_the_job_files_defaults() -> None:
    assert plan_of(SelectionPlan()) == SelectionPlan(rule="uniform", exploration=0.2, over_select=0.2, dp_over_selection=False)
    assert plan_of(SelectionPlan(rule="uniform")) == SelectionPlan(rule="uniform")


def test_a_node_lying_about_its_device_changes_nothing_in_selection(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Selection reads only measured history: the same measurements with another claimed device select the same."""
    from fedgpu.aggregator.capacity import CapacityBook
    from fedgpu.aggregator.store import Store

    picks = []
    for i, device in enumerate(["cpu", "cuda:8x NVIDIA H200 (a lie)"]):
        store = Store(str(tmp_path / f"agg{i}.db"))
        for n in NODES:
            store.upsert_node(n, n.encode(), n, {"models": ["m"], "datasets": ["d"], "device": device if n == "n9" else "cpu"})
            store.add_capacity(n, tasks=1, compute_seconds=1.0, turnaround_seconds=1.0 + NODES.index(n))
        book = CapacityBook(store)
        assert {r.node_id: r.device for r in book.records()}["n9"] == device  # shown as claimed
        picks.append([select(NODES, 4, book.history("job-1"), UTILITY, random.Random(r), 60.0).chosen for r in range(20)])
        store.engine.dispose()
    assert picks[0] == picks[1]


def test_a_node_cut_by_an_early_close_counts_as_tried_and_as_at_least_that_slow() -> None:
    """Else a node that is always cut looks untried forever and takes an exploration slot every round."""
    history = measured({n: 1.0 for n in NODES[:8]})
    history["n8"] = NodeHistory(cut=3, seconds=100.0)  # never completed: cut three times, after 100 s
    assert history["n8"].tried
    picks = [select(NODES, 4, history, UTILITY, random.Random(r), deadline_seconds=60.0).chosen for r in range(50)]
    assert not any("n8" in p for p in picks)  # slower than the deadline on its own record
    assert all("n9" in p for p in picks)  # the one fresh node is explored


def test_at_k3_slots_are_a_uniform_draw_among_nodes_in_time_without_over_selection() -> None:
    # n0, n1: estimates <= 0 for their last 6 rounds; n9 is the fastest by far; n8 is past the deadline.
    # At k > 1 none of it but the deadline decides: a node's estimate from cohort values is too noisy.
    values = {n: (0.1,) * 6 for n in NODES} | {"n0": (0.0,) * 6, "n1": (-0.01, 0.0, -0.02, 0.0, 0.0, -0.01)}
    history = {n: NodeHistory(tasks=6, seconds={"n9": 0.1, "n8": 90.0}.get(n, 5.0), values=values[n]) for n in NODES}
    c: Counter[str] = Counter()
    for r in range(300):
        got = select(NODES, 6, history, UTILITY, random.Random(r), 60.0, cohort_size=3)
        assert len(got.chosen) == 6 == got.enough  # no extra task to cut: the slowest hold the most data
        c.update(got.chosen)
    assert c["n8"] == 0
    drawn = [c[n] for n in NODES if n != "n8"]
    assert min(drawn) > 0.8 * 300 * 6 / 9 and max(drawn) < 1.2 * 300 * 6 / 9  # each about 6 of 9 rounds
    assert len(select(NODES, 6, history, UTILITY, random.Random(0), 60.0, cohort_size=1).chosen) == 8  # k = 1: ranked, over-selected
