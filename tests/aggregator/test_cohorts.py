import random
from itertools import combinations
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fedgpu.aggregator.cohorts import assign_cohorts, co_membership, max_sum_members, merge_small
from fedgpu.aggregator.core import Aggregator
from fedgpu.aggregator.store import Store
from fedgpu.wire.records import RoundRecord


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 6), seed=st.integers(0, 1000))
def test_cohorts_have_at_least_k_members(n: int, k: int, seed: int) -> None:
    nodes = [f"n{i}" for i in range(n)]
    cohorts = assign_cohorts(nodes, k, random.Random(seed))
    assert sorted(m for c in cohorts for m in c) == sorted(nodes)
    if n >= k:
        assert all(len(c) >= k for c in cohorts)
        assert max(map(len, cohorts)) - min(map(len, cohorts)) <= 1


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 6), min_size=1, max_size=12), k=st.integers(1, 5))
def test_merged_groups_never_release_fewer_than_k(sizes: list[int], k: int) -> None:
    groups = merge_small(sizes, k)
    if sum(sizes) < k:
        assert groups is None
        return
    assert groups is not None
    assert all(sum(sizes[i] for i in g) >= k for g in groups)
    assert sorted(i for g in groups for i in g) == [i for i, s in enumerate(sizes) if s > 0]



@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 6), seed=st.integers(0, 1000), data=st.data())
def test_no_released_sum_holds_more_updates_than_the_headroom_check_allows(n: int, k: int, seed: int, data: st.DataObject) -> None:
    """Cohorts as assigned, any members missing at the close, merged: the largest sum fits max_sum_members."""
    cohorts = assign_cohorts([f"n{i}" for i in range(n)], k, random.Random(seed))
    sizes = [data.draw(st.integers(0, len(c))) for c in cohorts]
    groups = merge_small(sizes, k) or []
    assert all(sum(sizes[i] for i in g) <= max_sum_members(k, n) for g in groups)
    assert max_sum_members(k, n) <= max(n, 1) and max_sum_members(1, n) == 1


def test_reshuffling_spreads_pairs_over_rounds() -> None:
    """Best of random partitions by past co-membership: pairs repeat far less than with plain shuffling.

    The driver separates two nodes' worth only through rounds in which they were apart; with 10 nodes in
    cohorts of 3 a pair shares a cohort with probability 2/9 a round, so over 20 rounds plain shuffling
    pairs some nodes 8 to 10 times while others meet once or never.
    """
    nodes = [f"n{i}" for i in range(10)]

    def spread(balanced: bool, seed: int) -> tuple[int, int]:
        rng, history = random.Random(seed), []
        for _ in range(20):
            together = co_membership(history) if balanced else None
            cohorts = assign_cohorts(nodes, 3, rng, together)
            assert sorted(m for c in cohorts for m in c) == nodes and all(len(c) >= 3 for c in cohorts)
            history.append(cohorts)
        counts = [co_membership(history).get(frozenset(p), 0) for p in combinations(nodes, 2)]
        return max(counts) - min(counts), sum(c * c for c in counts)

    for seed in range(5):
        (range_bal, sq_bal), (range_rand, sq_rand) = spread(True, seed), spread(False, seed)
        assert range_bal <= 3 and range_rand >= 7  # balanced: every pair met 4-7 times; plain: 0-10
        assert sq_bal < sq_rand


def test_co_membership_counts_pairs_once_per_cohort() -> None:
    together = co_membership([[["a", "b", "c"], ["d", "e"]], [["a", "b"], ["c", "d", "e"]]])
    assert together[frozenset({"a", "b"})] == 2 and together[frozenset({"d", "e"})] == 2
    assert together[frozenset({"a", "c"})] == 1 and frozenset({"a", "d"}) not in together


def _record(cohorts: list[list[str]]) -> RoundRecord:
    members = tuple(sorted(m for c in cohorts for m in c))
    return RoundRecord(members, tuple(tuple(c) for c in cohorts), {}, 0, 0, {}, {}, {}, {}, 0.0)


def test_the_cohort_history_is_read_from_the_store_once_and_survives_a_restart(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "a.db"))
    store.create_job("job-1", "j", b"", "t")
    store.save_round("job-1", 1, 1, _record([["a", "b", "c"], ["d", "e", "f"]]))
    reads = []
    original = store.rounds_of
    store.rounds_of = lambda job_id: reads.append(job_id) or original(job_id)  # type: ignore[method-assign]
    agg = Aggregator(store, tmp_path / "spool")
    assert agg.together("job-1")[frozenset({"a", "b"})] == 1
    store.save_round("job-1", 2, 1, _record([["a", "b", "d"], ["c", "e", "f"]]))
    agg.released("job-1", 2, [["a", "b", "d"], ["c", "e", "f"]])  # what closing a round does after saving it
    agg.released("job-1", 2, [["a", "b", "d"], ["c", "e", "f"]])  # a redone round replaces, never adds
    together = agg.together("job-1")
    assert together[frozenset({"a", "b"})] == 2 and together[frozenset({"c", "e"})] == 1 and reads == ["job-1"]
    restarted = Aggregator(store, tmp_path / "spool")  # a new process on the same database
    assert restarted.together("job-1") == together
