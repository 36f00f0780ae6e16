"""scikit-learn's tabular sets as a data owner would hold them: CSV files, one per node, and a held-out CSV.

``fedgpu datasets --export breast_cancer --out DIR --nodes 3`` writes ``DIR/breast_cancer_node{i}.csv``
and ``DIR/breast_cancer_test.csv`` (header: the feature names, then ``label``); the job file
``examples/breast_cancer.toml`` declares their schema as data, so the job needs no Python.
The declared ranges are the features' domain (the published set's extent, rounded outwards), not
statistics of any node's data: nodes use them only to scale values before the encrypted sums.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fedgpu.datasets import ArrayDataset, Schema, partition_iid
from fedgpu.errors import ConfigError

TABULAR = ("breast_cancer", "wine")


def _load(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if name not in TABULAR:
        raise ConfigError(f"--export {name!r}: allowed values are {', '.join(TABULAR)}")
    from sklearn import datasets

    d = datasets.load_breast_cancer() if name == "breast_cancer" else datasets.load_wine()
    return np.asarray(d.data, np.float64), np.asarray(d.target, np.int64), [str(f) for f in d.feature_names]


def _outward(v: float, up: bool) -> float:
    """``v`` rounded away from the data to two significant digits (0 stays 0)."""
    if v == 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(abs(v))) - 1)
    return float(f"{(math.ceil(v / step) if up else math.floor(v / step)) * step:.3g}")


def tabular_schema(name: str) -> Schema:
    """The schema the export's files fit: named columns, the classes, and each feature's domain."""
    x, y, names = _load(name)
    lo, hi = x.min(axis=0), x.max(axis=0)
    ranges = tuple((0.0 if a >= 0 else _outward(1.5 * a, up=False), _outward(1.25 * b, up=True)) for a, b in zip(lo, hi, strict=True))
    return Schema(name, (len(names),), int(y.max()) + 1, tuple(names), "label", "float32", ranges)


def tabular_split(name: str, seed: int = 0, test_fraction: float = 0.3) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test), stratified by class: the same split the export writes and the benchmark uses."""
    x, y, _ = _load(name)
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.extend(idx[: round(test_fraction * len(idx))].tolist())
    mask = np.zeros(len(y), bool)
    mask[test] = True
    return ArrayDataset(x[~mask], y[~mask]), ArrayDataset(x[mask], y[mask])


def _write(path: Path, ds: ArrayDataset, columns: tuple[str, ...]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*columns, "label"])
        for row, label in zip(np.asarray(ds.x, np.float64), ds.y, strict=True):
            w.writerow([repr(float(v)) for v in row] + [int(label)])


_TITLES = {"breast_cancer": "scikit-learn's breast-cancer set (30 features, 2 classes)", "wine": "scikit-learn's wine set (13 features, 3 classes)"}


def job_toml(name: str) -> str:
    """The job file of ``examples/NAME.toml``: the export's schema as data, federated standardisation on."""
    s = tabular_schema(name)
    cols = "".join(f"    {json.dumps(c)},\n" for c in s.columns)
    ranges = "".join(f"    [{lo!r}, {hi!r}],\n" for lo, hi in s.ranges)
    return f"""# {_TITLES[name]} as CSV files on 3 nodes: no Python, the schema is data (docs/tabular.md).
# Export the files:  fedgpu datasets --export {name} --out data/ --nodes 3
# Each node i:       fedgpu node --aggregator HOST:PORT --data {name}=data/{name}_node0.csv --home node0 --name node0
# The ML team:       fedgpu train examples/{name}.toml --aggregator HOST:PORT --validation data/{name}_test.csv --out runs/{name}
name = "{name.replace("_", "-")}"
model = "tab_mlp"          # an MLP sized from the schema: inputs = its columns, outputs = its classes
dataset = "{name}"
rounds = 12                # round 1 is the statistics round of [data] standardize
nodes_per_round = 3
min_nodes = 3
deadline_seconds = 60
cohort_size = 1
seed = 0

[training]
epochs = 3
batch_size = 16
lr = 0.05

[data]
standardize = true         # federated: encrypted per-feature sums in round 1, no pooled data

[schema]                   # what every node checks its CSV against; a mismatch is declined with the reason
label = "label"
classes = {s.num_classes}
dtype = "float32"
columns = [
{cols}]
# Each feature's domain [low, high]: nodes scale by it before the encrypted sums, so that the sums keep
# CKKS's precision and headroom. A value outside it is refused as a schema mismatch.
ranges = [
{ranges}]
"""


def export_tabular(name: str, out: Path, nodes: int = 3, seed: int = 0) -> dict[str, Any]:
    """Write one CSV per node (an IID split of the train part) and the held-out CSV; returns what was written."""
    if not 1 <= nodes <= 1000:
        raise ConfigError(f"--nodes {nodes}: must be in 1..1000")
    schema = tabular_schema(name)
    train, test = tabular_split(name, seed)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, idx in enumerate(partition_iid(len(train), nodes, seed)):
        p = out / f"{name}_node{i}.csv"
        _write(p, train.subset(idx), schema.columns)
        files.append({"path": str(p), "samples": len(idx)})
    test_path = out / f"{name}_test.csv"
    _write(test_path, test, schema.columns)
    return {"dataset": name, "nodes": files, "test": {"path": str(test_path), "samples": len(test)}}


__all__ = ["TABULAR", "export_tabular", "job_toml", "tabular_schema", "tabular_split"]
