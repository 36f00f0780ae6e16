"""Dataset schemas, generators of public data, loaders of a data owner's files, and partitioners.

A job names a *schema*: the input shape (or named feature columns), the label column, the classes,
the dtype and optional per-feature value ranges. Built-ins (``mnist1d``, ``digits``) are named
defaults; a job file may declare its own in a ``[schema]`` table (data, no code), and schemas that
need code come from the ``fedgpu.datasets`` entry-point group. The schema travels in the job spec;
each data owner maps its name to files on their own disk (``fedgpu node --data NAME=/data/mine.csv``),
checked against it when a task arrives. The data never leaves the node.
``public_split`` generates the published benchmarks locally (no download), and ``public_shard`` the
shard of one a public-data task names (alike on every node).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np

from fedgpu.errors import CapabilityError, ConfigError, SchemaMismatch

DTYPES = ("float32", "float64", "int64")  # int64: every feature must be a whole number (stored as float32)


@dataclass(frozen=True)
class Schema:
    """What a job's data looks like; ``columns`` (CSV header names, in order) and ``ranges`` are optional."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    columns: tuple[str, ...] = ()
    label: str = "label"
    dtype: str = "float32"
    ranges: tuple[tuple[float, float], ...] = ()  # one (low, high) per feature, in flattened order

    @property
    def num_features(self) -> int:
        return math.prod(self.input_shape)


SCHEMAS: dict[str, Schema] = {
    "mnist1d": Schema("mnist1d", (40,), 10),
    "digits": Schema("digits", (8, 8), 10),
}


def schema_from_dict(data: Mapping[str, Any], name: str = "") -> Schema:
    """A schema from a job file's ``[schema]`` table: ``features = 30`` or ``shape = [8, 8]`` or
    ``columns = [...]``, ``classes``, and optionally ``name``, ``label``, ``dtype``, ``ranges``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"schema: expected a table, got {type(data).__name__}")
    allowed = {"name", "features", "shape", "columns", "label", "classes", "dtype", "ranges"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"schema.{unknown[0]}: unknown field; allowed: {', '.join(sorted(allowed))}")
    name = str(data.get("name", name))
    if not name or len(name) > 200:
        raise ConfigError("schema.name: must be a name of 1..200 characters (it defaults to the job's dataset)")
    given = [k for k in ("features", "shape", "columns") if k in data]
    if len(given) != 1:
        raise ConfigError(f"schema: give exactly one of features (a count), shape (a list) or columns (CSV header names); got {given or 'none'}")
    columns: tuple[str, ...] = ()
    shape: tuple[int, ...]
    if "columns" in data:
        cols = data["columns"]
        if not isinstance(cols, list | tuple) or not cols or not all(isinstance(c, str) and c for c in cols):
            raise ConfigError("schema.columns: must be a non-empty list of column names")
        if len(set(cols)) != len(cols):
            raise ConfigError("schema.columns: names must be unique")
        columns, shape = tuple(cols), (len(cols),)
    elif "features" in data:
        n = data["features"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1_000_000:
            raise ConfigError(f"schema.features: must be a whole number in 1..1000000, got {n!r}")
        shape = (n,)
    else:
        dims = data["shape"]
        if not isinstance(dims, list | tuple) or not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
            raise ConfigError(f"schema.shape: must be a non-empty list of positive whole numbers, got {dims!r}")
        shape = tuple(int(d) for d in dims)
        if math.prod(shape) > 1_000_000:
            raise ConfigError(f"schema.shape: {shape} has more than 1000000 features")
    classes = data.get("classes")
    if not isinstance(classes, int) or isinstance(classes, bool) or not 2 <= classes <= 100_000:
        raise ConfigError(f"schema.classes: must be a whole number in 2..100000, got {classes!r}")
    label = data.get("label", "label")
    if not isinstance(label, str) or not label or label in columns:
        raise ConfigError(f"schema.label: must be the name of the label column, not a feature column; got {label!r}")
    dtype = data.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ConfigError(f"schema.dtype: allowed values are {', '.join(DTYPES)}; got {dtype!r}")
    ranges: tuple[tuple[float, float], ...] = ()
    if "ranges" in data:
        raw = data["ranges"]
        ok = isinstance(raw, list | tuple) and all(
            isinstance(r, list | tuple) and len(r) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in r) and r[0] < r[1]
            for r in raw
        )
        if not ok or len(raw) != math.prod(shape):
            raise ConfigError(f"schema.ranges: must be one [low, high] pair (low < high, finite) per feature, {math.prod(shape)} in all")
        ranges = tuple((float(lo), float(hi)) for lo, hi in raw)
    return Schema(name, shape, classes, columns, label, dtype, ranges)


def schema_to_dict(schema: Schema) -> dict[str, Any]:
    """The ``[schema]`` table ``schema_from_dict`` reads back."""
    out: dict[str, Any] = {"name": schema.name, "classes": schema.num_classes, "label": schema.label, "dtype": schema.dtype}
    if schema.columns:
        out["columns"] = list(schema.columns)
    else:
        out["shape"] = list(schema.input_shape)
    if schema.ranges:
        out["ranges"] = [list(r) for r in schema.ranges]
    return out


def _entry_point_schemas() -> dict[str, Schema]:
    """Schemas installed through the ``fedgpu.datasets`` group: a Schema, or a function returning one."""
    found: dict[str, Schema] = {}
    for ep in entry_points(group="fedgpu.datasets"):
        obj = ep.load()
        schema = obj() if callable(obj) and not isinstance(obj, Schema) else obj
        if not isinstance(schema, Schema):
            raise ConfigError(f"entry point {ep.name} = {ep.value} in group fedgpu.datasets: expected a fedgpu.datasets.Schema, got {type(schema).__name__}")
        found[ep.name] = schema
    return found


def available_schemas() -> dict[str, Schema]:
    """The named schemas this machine knows: the built-ins and the ``fedgpu.datasets`` entry points."""
    return {**_entry_point_schemas(), **SCHEMAS}


def get_schema(name: str, declared: Schema | None = None) -> Schema:
    """The job's schema: the one it declares (``[schema]`` in its file), else the named default of that name."""
    if declared is not None:
        return declared
    if name in SCHEMAS:
        return SCHEMAS[name]
    known = available_schemas()
    if name not in known:
        raise ConfigError(f"dataset = {name!r}: no schema of that name here (known: {', '.join(sorted(known))}); declare it in the job's [schema] table")
    return known[name]


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
    """Check a data owner's arrays against the schema; SchemaMismatch says which file and what is wrong."""
    x = np.asarray(ds.x, dtype=np.float64 if schema.dtype == "float64" else np.float32)
    y = np.asarray(ds.y)
    if x.shape[1:] != schema.input_shape:
        want = "x".join(map(str, schema.input_shape))
        raise SchemaMismatch(f"{source}: samples have shape {x.shape[1:]}, schema {schema.name!r} needs {want}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise SchemaMismatch(f"{source}: {x.shape[0]} samples but labels of shape {y.shape}")
    if x.shape[0] == 0:
        raise SchemaMismatch(f"{source}: no samples")
    if not np.isfinite(x).all():
        raise SchemaMismatch(f"{source}: features hold NaN or infinite values")
    if schema.dtype == "int64" and not np.all(np.mod(x, 1) == 0):
        raise SchemaMismatch(f"{source}: schema {schema.name!r} has dtype int64 but some features are not whole numbers")
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise SchemaMismatch(f"{source}: labels must be integers")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= schema.num_classes:
        raise SchemaMismatch(f"{source}: labels must lie in 0..{schema.num_classes - 1}, found {y.min()}..{y.max()}")
    if schema.ranges:
        flat = x.reshape(x.shape[0], -1)
        lo = np.array([r[0] for r in schema.ranges])
        hi = np.array([r[1] for r in schema.ranges])
        bad = np.flatnonzero((flat < lo).any(axis=0) | (flat > hi).any(axis=0))
        if bad.size:
            j = int(bad[0])
            what = repr(schema.columns[j]) if schema.columns else f"#{j}"
            raise SchemaMismatch(
                f"{source}: feature {what} has values in {flat[:, j].min():.6g}..{flat[:, j].max():.6g}, outside the schema's range "
                f"[{lo[j]:.6g}, {hi[j]:.6g}] ({bad.size} features out of range)"
            )
    return ArrayDataset(x.astype(np.float32), y)


def load_file(path: str | Path, schema: Schema, label_column: str | None = None) -> ArrayDataset:
    """Load a data owner's file: ``.npz`` with arrays ``x`` and ``y``, or ``.csv`` with a header and a label column.

    A CSV is read by the schema's column names when it has them (other columns are ignored), else
    every column but the label is a feature, in file order.
    """
    p = Path(path)
    label = label_column or schema.label
    if not p.exists():
        raise ConfigError(f"data file {p} does not exist")
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:  # never unpickle a file we did not write
            if "x" not in z or "y" not in z:
                raise SchemaMismatch(f"{p}: an .npz data file needs arrays named 'x' and 'y', found {list(z.keys())}")
            try:
                x, y = z["x"], z["y"]
            except ValueError as exc:  # an object array: numpy refuses to unpickle it
                raise SchemaMismatch(f"{p}: {exc}") from exc
            return validate(ArrayDataset(x, y), schema, str(p))
    if p.suffix == ".csv":
        with p.open(newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, None) or []]
            if not header or label not in header:
                raise SchemaMismatch(f"{p}: a .csv data file needs a header with a {label!r} column (schema {schema.name!r})")
            rows = [r for r in reader if r]
        li = header.index(label)
        if schema.columns:
            missing = [c for c in schema.columns if c not in header]
            if missing:
                raise SchemaMismatch(f"{p}: {len(missing)} of the schema's columns are missing from its header, first {missing[0]!r}")
            picks = [header.index(c) for c in schema.columns]
        else:
            picks = [j for j in range(len(header)) if j != li]
            if len(picks) != schema.num_features:
                raise SchemaMismatch(f"{p}: {len(picks)} feature columns besides {label!r}, schema {schema.name!r} needs {schema.num_features}")
        try:
            y = np.array([float(r[li]) for r in rows])
            x = np.array([[float(r[j]) for j in picks] for r in rows], dtype=np.float64)
        except (ValueError, IndexError) as exc:
            raise SchemaMismatch(f"{p}: every row must have a number in each column ({exc})") from exc
        x = x.reshape((x.shape[0], *schema.input_shape))
        return validate(ArrayDataset(x, y), schema, str(p))
    raise ConfigError(f"{p}: unsupported data file type {p.suffix!r}; use .npz (x, y) or .csv with a label column")


def feature_moments(ds: ArrayDataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and mean of squares (flattened order): what a node adds to the federated statistics."""
    flat = np.asarray(ds.x, dtype=np.float64).reshape(len(ds), -1)
    return flat.mean(axis=0), (flat**2).mean(axis=0)


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
    "DTYPES",
    "PUBLIC_PREFIX",
    "SCHEMAS",
    "Schema",
    "available_schemas",
    "feature_moments",
    "get_schema",
    "load_file",
    "partition_dirichlet",
    "partition_iid",
    "public_capability",
    "public_shard",
    "public_split",
    "save_npz",
    "schema_from_dict",
    "schema_to_dict",
    "validate",
]
