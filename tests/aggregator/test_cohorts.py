import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fedgpu.aggregator.cohorts import assign_cohorts, merge_small


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
