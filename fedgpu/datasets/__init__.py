"""Dataset schemas, generators of public data, loaders of a data owner's files, and partitioners.

A job names a *schema* (``mnist1d``, ``digits``): the input shape and the classes. Each data owner
maps that name to files on their own disk (``fedgpu node --data mnist1d=/data/mine.npz``); the data
never leaves the node. ``public_split`` generates the published benchmarks locally (no download),
and ``public_shard`` the shard of one a public-data task names (alike on every node).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedgpu.errors import CapabilityError, ConfigError


@dataclass(frozen=True)
class Schema:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int


SCHEMAS: dict[str, Schema] = {
    "mnist1d": Schema("mnist1d", (40,), 10),
    "digits": Schema("digits", (8, 8), 10),
}


def get_schema(name: str) -> Schema:
    if name not in SCHEMAS:
        raise ConfigError(f"dataset = {name!r}: allowed values are {', '.join(sorted(SCHEMAS))}")
    return SCHEMAS[name]


@dataclass(frozen=True)
class ArrayDataset:
    """Features (float32, shape ``(n, *input_shape)``) and integer labels."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: np.ndarray) -> ArrayDataset:
        return ArrayDataset(self.x[idx], self.y[idx])


def validate(ds: ArrayDataset, schema: Schema, source: str) -> ArrayDataset:
    """Check a data owner's arrays against the schema; the error says which file and what is wrong."""
    x = np.asarray(ds.x, dtype=np.float32)
    y = np.asarray(ds.y)
    if x.shape[1:] != schema.input_shape:
        want = "x".join(map(str, schema.input_shape))
        raise ConfigError(f"{source}: samples have shape {x.shape[1:]}, schema {schema.name!r} needs {want}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ConfigError(f"{source}: {x.shape[0]} samples but labels of shape {y.shape}")
    if x.shape[0] == 0:
        raise ConfigError(f"{source}: no samples")
    if not np.isfinite(x).all():
        raise ConfigError(f"{source}: features hold NaN or infinite values")
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise ConfigError(f"{source}: labels must be integers")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= schema.num_classes:
        raise ConfigError(f"{source}: labels must lie in 0..{schema.num_classes - 1}, found {y.min()}..{y.max()}")
    return ArrayDataset(x, y)


def load_file(path: str | Path, schema: Schema, label_column: str = "label") -> ArrayDataset:
    """Load a data owner's file: ``.npz`` with arrays ``x`` and ``y``, or ``.csv`` with a label column."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"data file {p} does not exist")
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:  # never unpickle a file we did not write
            if "x" not in z or "y" not in z:
                raise ConfigError(f"{p}: an .npz data file needs arrays named 'x' and 'y', found {list(z.keys())}")
            try:
                x, y = z["x"], z["y"]
            except ValueError as exc:  # an object array: numpy refuses to unpickle it
                raise ConfigError(f"{p}: {exc}") from exc
            return validate(ArrayDataset(x, y), schema, str(p))
    if p.suffix == ".csv":
        with p.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or label_column not in header:
                raise ConfigError(f"{p}: a .csv data file needs a header with a {label_column!r} column")
            li = header.index(label_column)
            rows = [r for r in reader if r]
        try:
            y = np.array([float(r[li]) for r in rows])
            x = np.array([[float(v) for j, v in enumerate(r) if j != li] for r in rows], dtype=np.float32)
        except ValueError as exc:
            raise ConfigError(f"{p}: every cell must be a number ({exc})") from exc
        x = x.reshape((x.shape[0], *schema.input_shape)) if x.size == x.shape[0] * int(np.prod(schema.input_shape)) else x
        return validate(ArrayDataset(x, y), schema, str(p))
    raise ConfigError(f"{p}: unsupported data file type {p.suffix!r}; use .npz (x, y) or .csv with a label column")


def save_npz(path: str | Path, ds: ArrayDataset) -> None:
    np.savez(path, x=ds.x, y=ds.y)


def public_split(name: str, num_samples: int | None = None, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """Generate a published dataset locally: (train, test). Nothing is downloaded."""
    schema = get_schema(name)
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = num_samples or 5000
        args.seed = seed
        data = make_dataset(args)  # generated in memory; get_dataset(download=True) is never used
        train = ArrayDataset(np.asarray(data["x"], np.float32), np.asarray(data["y"], np.int64))
        test = ArrayDataset(np.asarray(data["x_test"], np.float32), np.asarray(data["y_test"], np.int64))
    elif name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images / 16.0).astype(np.float32)
        y = d.target.astype(np.int64)
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(y))
        if num_samples:
            perm = perm[:num_samples]
        cut = int(0.8 * len(perm))
        train, test = ArrayDataset(x[perm[:cut]], y[perm[:cut]]), ArrayDataset(x[perm[cut:]], y[perm[cut:]])
    else:  # pragma: no cover - every schema has a generator
        raise CapabilityError(f"no generator for dataset {name!r}")
    return validate(train, schema, name), validate(test, schema, name)


PUBLIC_PREFIX = "public:"  # a node registers "public:mnist1d": it builds that dataset itself for public-data jobs


def public_capability(name: str) -> str:
    """The capability a node registers when it can take public-data tasks on ``name`` without files of its own."""
    return PUBLIC_PREFIX + name


@lru_cache(maxsize=4)
def _public_train(name: str, samples: int, seed: int) -> ArrayDataset:
    return public_split(name, num_samples=samples or None, seed=seed)[0]


def public_shard(name: str, samples: int, data_seed: int, shard: int, shards: int) -> ArrayDataset:
    """Shard ``shard`` of ``shards`` of the training part of the public dataset ``name`` generated with
    (``samples``, ``data_seed``): the same arrays on every node, so a task on it can be re-executed."""
    if not 0 <= shard < shards:
        raise ConfigError(f"public-data shard {shard} of {shards}: the shard must be in 0..{shards - 1}")
    train = _public_train(name, samples, data_seed)
    if shards > len(train):
        raise ConfigError(f"public_data.shards = {shards} is more than the {len(train)} training samples of {name}: lower it")
    return train.subset(partition_iid(len(train), shards, data_seed)[shard])


def partition_iid(num_samples: int, num_parts: int, seed: int) -> list[np.ndarray]:
    """Shuffle and cut into ``num_parts`` near-equal parts."""
    perm = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(p) for p in np.array_split(perm, num_parts)]


def partition_dirichlet(labels: np.ndarray, num_parts: int, alpha: float, seed: int, min_size: int = 10) -> list[np.ndarray]:
    """Non-IID split: each class is spread over parts with proportions drawn from Dirichlet(alpha).

    Redraws (up to 100 times) until every part has ``min_size`` samples, as in the usual FL benchmarks.
    """
    if alpha <= 0:
        raise ConfigError(f"dirichlet alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(num_parts)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            props = rng.dirichlet(np.full(num_parts, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            break
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


__all__ = [
    "ArrayDataset",
    "PUBLIC_PREFIX",
    "SCHEMAS",
    "Schema",
    "get_schema",
    "load_file",
    "partition_dirichlet",
    "partition_iid",
    "public_capability",
    "public_shard",
    "public_split",
    "save_npz",
    "validate",
]
