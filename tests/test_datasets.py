import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgpu.datasets import ArrayDataset, get_schema, load_file, partition_dirichlet, partition_iid, public_split, save_npz
from fedgpu.errors import ConfigError


def test_npz_and_csv_loaders(tmp_path) -> None:  # type: ignore[no-untyped-def]
    schema = get_schema("mnist1d")
    x = np.random.default_rng(0).normal(size=(20, 40)).astype(np.float32)
    y = np.arange(20) % 10
    save_npz(tmp_path / "a.npz", ArrayDataset(x, y))
    ds = load_file(tmp_path / "a.npz", schema)
    assert ds.x.shape == (20, 40) and ds.y.tolist() == y.tolist()
    header = ",".join([f"f{i}" for i in range(40)] + ["label"])
    rows = [",".join([*map(str, x[i]), str(y[i])]) for i in range(20)]
    (tmp_path / "a.csv").write_text("\n".join([header, *rows]) + "\n")
    ds2 = load_file(tmp_path / "a.csv", schema)
    np.testing.assert_allclose(ds2.x, x, rtol=1e-6)
    assert ds2.y.tolist() == y.tolist()


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((5, 39)), np.zeros(5), "shape"),
        (np.full((5, 40), np.nan), np.zeros(5), "NaN"),
        (np.zeros((5, 40)), np.full(5, 10), "labels must lie"),
        (np.zeros((5, 40)), np.zeros(4), "labels of shape"),
    ],
)
def test_bad_files_are_refused(tmp_path, x, y, message) -> None:  # type: ignore[no-untyped-def]
    np.savez(tmp_path / "bad.npz", x=x, y=y)
    with pytest.raises(ConfigError, match=message):
        load_file(tmp_path / "bad.npz", get_schema("mnist1d"))


def test_pickled_npz_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    np.savez(tmp_path / "evil.npz", x=np.array([object()], dtype=object), y=np.zeros(1))
    with pytest.raises(ConfigError, match="allow_pickle"):
        load_file(tmp_path / "evil.npz", get_schema("mnist1d"))


def test_public_splits_are_generated_locally() -> None:
    train, test = public_split("digits", seed=0)
    assert train.x.shape[1:] == (8, 8) and len(train) + len(test) == 1797
    train, test = public_split("mnist1d", num_samples=500, seed=1)
    assert train.x.shape == (400, 40) and len(test) == 100


@settings(max_examples=30, deadline=None)
@given(n=st.integers(20, 500), parts=st.integers(1, 10), seed=st.integers(0, 100))
def test_iid_partition_covers_everything_once(n: int, parts: int, seed: int) -> None:
    idx = partition_iid(n, parts, seed)
    assert sorted(np.concatenate(idx).tolist()) == list(range(n))
    assert max(map(len, idx)) - min(map(len, idx)) <= 1


def test_dirichlet_partition_is_skewed_and_complete() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = partition_dirichlet(labels, 5, alpha=0.5, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    shares = np.array([[np.mean(labels[p] == c) for c in range(10)] for p in parts])
    assert shares.max() > 0.25  # far from the IID 0.1 per class
