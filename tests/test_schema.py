"""Dataset schemas as data (issue #17): declared in the job file, carried by the spec, checked on the node's files,
and the federated statistics that standardise tabular features."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedgpu.config import job_from_dict, job_to_dict, load_job
from fedgpu.datasets import ArrayDataset, Schema, get_schema, load_file, schema_from_dict, schema_to_dict
from fedgpu.datasets.export import job_toml, tabular_schema
from fedgpu.datasets.statistics import statistics_update, stats_from_sums
from fedgpu.errors import ConfigError, HeadroomExceeded, SchemaMismatch
from fedgpu.wire import serde
from fedgpu.wire.records import EncryptionContext

ROOT = Path(__file__).resolve().parents[1]
JOB = {"model": "tab_mlp", "dataset": "cells", "rounds": 3, "schema": {"columns": ["a", "b", "c"], "classes": 2, "ranges": [[0, 10], [-1, 1], [0, 100]]}}


def _csv(path: Path, header: list[str], rows: list[list[float]]) -> Path:
    path.write_text(",".join(header) + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows))
    return path


def test_a_schema_is_read_from_a_table_and_written_back() -> None:
    s = schema_from_dict({"columns": ["a", "b"], "classes": 3, "label": "y", "ranges": [[0, 1], [2, 3]]}, "cells")
    assert s == Schema("cells", (2,), 3, ("a", "b"), "y", "float32", ((0.0, 1.0), (2.0, 3.0)))
    assert schema_from_dict(schema_to_dict(s)) == s
    assert schema_from_dict({"shape": [8, 8], "classes": 10}, "img").input_shape == (8, 8)
    assert schema_from_dict({"features": 30, "classes": 2}, "x").num_features == 30


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"features": 3, "columns": ["a", "b", "c"], "classes": 2}, "exactly one of features"),
        ({"features": 3, "classes": 1}, "schema.classes"),
        ({"features": 2, "classes": 2, "ranges": [[0, 1]]}, "one \\[low, high\\] pair"),
        ({"features": 1, "classes": 2, "ranges": [[1, 0]]}, "low < high"),
        ({"columns": ["a", "label"], "classes": 2}, "schema.label"),
        ({"features": 2, "classes": 2, "dtype": "int8"}, "schema.dtype"),
        ({"features": 2, "classes": 2, "colour": "red"}, "schema.colour: unknown field"),
    ],
)
def test_a_bad_schema_table_names_the_field(table: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        schema_from_dict(table, "cells")


def test_a_job_with_its_own_schema_travels_whole_and_resumes() -> None:
    job = job_from_dict({**JOB, "data": {"standardize": True}})
    assert job.dataset_schema.columns == ("a", "b", "c") and job.data.standardize
    assert job_from_dict(job_to_dict(job)) == job  # what a driver keeps in job.json
    enc = EncryptionContext(scheme="ckks", params=b"p", public_material=b"k", fingerprint="f", values_per_chunk=8)
    spec = serde.job_to_proto(job, serde.encryption_to_proto(enc), 500)
    assert spec.schema.columns == ["a", "b", "c"] and spec.standardize
    assert serde.job_from_proto(spec, check_registry=False) == job  # the aggregator reads the same job back
    assert serde.job_spec_from_proto(spec).schema == job.schema  # and its tasks carry the schema


def test_an_unknown_dataset_without_a_schema_is_refused_and_standardize_needs_ckks_and_ranges_under_dp() -> None:
    with pytest.raises(ConfigError, match="declare it in a \\[schema\\] table"):
        job_from_dict({"model": "tab_mlp", "dataset": "cells"})
    no_ranges = {**JOB, "schema": {"columns": ["a", "b", "c"], "classes": 2}}
    job_from_dict({**no_ranges, "data": {"standardize": True}})  # without DP the ranges are optional
    with pytest.raises(ConfigError, match=r"data\.standardize: a DP statistics round needs every feature's public range .* declare ranges"):
        job_from_dict({**no_ranges, "data": {"standardize": True}, "privacy": {"epsilon": 8.0}})
    with pytest.raises(ConfigError, match=r"data\.standardize: the DP statistics round protects records .* set standardize = false"):
        job_from_dict({**JOB, "data": {"standardize": True}, "privacy": {"epsilon": 8.0, "mode": "client"}})
    with pytest.raises(ConfigError, match=r"privacy\.statistics_epsilon: must be in \[0, epsilon = 8\)"):
        job_from_dict({**JOB, "data": {"standardize": True}, "privacy": {"epsilon": 8.0, "statistics_epsilon": 8.0}})
    with pytest.raises(ConfigError, match=r"privacy\.statistics_epsilon: only a job with \[data\] standardize"):
        job_from_dict({**JOB, "privacy": {"epsilon": 8.0, "statistics_epsilon": 1.0}})
    dp = job_from_dict({**JOB, "data": {"standardize": True}, "privacy": {"epsilon": 8.0}})
    assert dp.statistics_epsilon == pytest.approx(0.8) and job_from_dict({**JOB, "privacy": {"epsilon": 8.0}}).statistics_epsilon == 0
    enc = EncryptionContext(scheme="ckks", params=b"p", public_material=b"k", fingerprint="f", values_per_chunk=8)
    for job in (dp, job_from_dict({**JOB, "data": {"standardize": True}, "privacy": {"epsilon": 8.0, "statistics_epsilon": 2.0}})):
        spec = serde.job_to_proto(job, serde.encryption_to_proto(enc), 500)
        assert spec.privacy.statistics_epsilon == job.statistics_epsilon > 0  # what every node plans with
        assert serde.job_from_proto(spec, check_registry=False) == job
    with pytest.raises(ConfigError, match=r"data\.standardize: encryption\.scheme = 'bfv8'"):
        job_from_dict({**JOB, "data": {"standardize": True}, "encryption": {"scheme": "bfv8"}, "nodes_per_round": 2, "cohort_size": 1})


def test_a_csv_is_read_by_the_schemas_column_names(tmp_path: Path) -> None:
    schema = job_from_dict(JOB).dataset_schema
    f = _csv(tmp_path / "mine.csv", ["c", "extra", "label", "a", "b"], [[50, 9, 1, 2.5, 0.5], [7, 9, 0, 1, -0.5]])
    ds = load_file(f, schema)
    np.testing.assert_array_equal(ds.x, np.array([[2.5, 0.5, 50], [1, -0.5, 7]], np.float32))
    np.testing.assert_array_equal(ds.y, [1, 0])


@pytest.mark.parametrize(
    ("header", "row", "match"),
    [
        (["a", "b", "label"], [1, 0, 1], "1 of the schema's columns are missing from its header, first 'c'"),
        (["a", "b", "c", "label"], [1, 0, 500, 1], "feature 'c' has values in 500..500, outside the schema's range \\[0, 100\\]"),
        (["a", "b", "c", "label"], [1, 0, 5, 2], "labels must lie in 0..1"),
        (["a", "b", "c", "y"], [1, 0, 5, 1], "needs a header with a 'label' column"),
    ],
)
def test_a_file_that_does_not_fit_is_a_schema_mismatch(tmp_path: Path, header: list[str], row: list[float], match: str) -> None:
    schema = job_from_dict(JOB).dataset_schema
    with pytest.raises(SchemaMismatch, match=match):
        load_file(_csv(tmp_path / "mine.csv", header, [row]), schema)


def test_named_defaults_stay() -> None:
    assert get_schema("digits").input_shape == (8, 8) and get_schema("mnist1d").num_classes == 10
    declared = Schema("digits", (64,), 10)
    assert get_schema("digits", declared) is declared


def test_summed_statistics_give_the_pooled_mean_and_std() -> None:
    schema = job_from_dict(JOB).dataset_schema
    rng = np.random.default_rng(0)
    parts = [ArrayDataset(np.stack([rng.uniform(2, 8, n), rng.normal(0, 0.1, n), rng.uniform(40, 60, n)], 1), np.zeros(n, np.int64)) for n in (30, 50, 70)]
    ups = [statistics_update(p, schema, 10, 10.0, None, 3) for p in parts]
    weighted = np.sum([w * v for v, w in ups], axis=0)
    stats = stats_from_sums(weighted, sum(w for _, w in ups), schema, 1e-5)
    pooled = np.concatenate([p.x for p in parts])
    np.testing.assert_allclose(stats.mean, pooled.mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats.std, pooled.std(0), rtol=1e-6)
    assert stats.samples == pytest.approx(150) and stats.imprecise == ()
    assert np.count_nonzero(ups[0][0][6:]) == 0  # only the 2F statistics slots are used


def test_statistics_beyond_the_headroom_name_the_feature() -> None:
    schema = Schema("raw", (2,), 2, ("small", "area"))
    ds = ArrayDataset(np.array([[1.0, 4000.0]] * 200), np.zeros(200, np.int64))
    with pytest.raises(HeadroomExceeded, match=r"feature 'area' reaches .*Declare ranges"):
        statistics_update(ds, schema, 10, 10.0, 3.7e5, 3)
    with pytest.raises(ConfigError, match="fewer than the 4 its statistics round needs"):
        statistics_update(ds, schema, 3, 10.0, None, 3)


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_the_examples_are_the_exports_schema(name: str) -> None:
    path = ROOT / "examples" / f"{name}.toml"
    assert path.read_text() == job_toml(name)  # regenerate with fedgpu.datasets.export.job_toml after changing the export
    job = load_job(path)
    assert job.schema == tabular_schema(name) and job.model == "tab_mlp" and job.data.standardize
    assert tomllib.loads(path.read_text())["schema"]["classes"] == job.dataset_schema.num_classes
