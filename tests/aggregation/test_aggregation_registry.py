"""Rules by name, in Opacus' registry style: errors name the allowed values; the job file picks one."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from fedgpu.aggregation import (
    CoordinateMedian,
    FedAvg,
    NormBoundedMean,
    RuleParams,
    TrimmedMean,
    available_rules,
    get_rule,
    register_rule,
)
from fedgpu.aggregation import registry as registry_module
from fedgpu.aggregation.interface import Cohort
from fedgpu.config import AggregationConfig, job_from_dict, load_job
from fedgpu.errors import ConfigError

BASE = {"model": "cnn1d", "dataset": "mnist1d", "nodes_per_round": 9, "min_nodes": 9, "cohort_size": 3}


class FirstCohort:
    """A stand-in third-party rule."""

    name = "first"

    def __call__(self, cohorts: Sequence[Cohort], /) -> np.ndarray:
        return np.asarray(cohorts[0].weighted) / cohorts[0].weight


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test stay in the test."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


def test_the_built_in_rules_in_order() -> None:
    assert available_rules()[:4] == ("fedavg", "median", "trimmed_mean", "norm_bounded")
    assert isinstance(get_rule("fedavg"), FedAvg) and isinstance(get_rule("median"), CoordinateMedian)
    assert get_rule("trimmed_mean", RuleParams(trim_fraction=0.34)) == TrimmedMean(0.34)
    assert get_rule("norm_bounded", RuleParams(norm_bound=2.5)) == NormBoundedMean(2.5)
    assert get_rule("trimmed_mean") == TrimmedMean(RuleParams().trim_fraction)  # defaults without params


def test_an_unknown_rule_names_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"aggregation\.rule: allowed values are fedavg, median, trimmed_mean, norm_bounded; got 'krum'"):
        get_rule("krum")


def test_bad_parameters_name_the_job_file_field() -> None:
    with pytest.raises(ConfigError, match=r"^aggregation\.trim_fraction"):
        get_rule("trimmed_mean", RuleParams(trim_fraction=0.7))
    with pytest.raises(ConfigError, match=r"^aggregation\.norm_bound"):
        get_rule("norm_bounded", RuleParams(norm_bound=-1.0))


@pytest.mark.usefixtures("registry")
def test_register_refuses_a_taken_name_unless_forced() -> None:
    register_rule("first", lambda params: FirstCohort())
    assert "first" in available_rules() and isinstance(get_rule("first"), FirstCohort)
    with pytest.raises(ConfigError, match="already registered; pass force=True"):
        register_rule("first", lambda params: FirstCohort())
    with pytest.raises(ConfigError, match="already registered"):
        register_rule("median", lambda params: FirstCohort())
    register_rule("median", lambda params: FirstCohort(), force=True)
    assert isinstance(get_rule("median"), FirstCohort)
    for bad in ("", " padded ", 3):
        with pytest.raises(ConfigError, match="rule name"):
            register_rule(bad, lambda params: FirstCohort())  # type: ignore[arg-type]


@pytest.mark.usefixtures("registry")
def test_a_registered_rule_is_a_valid_job_file_choice() -> None:
    with pytest.raises(ConfigError, match=r"^aggregation\.rule"):
        job_from_dict({**BASE, "aggregation": {"rule": "first"}})
    register_rule("first", lambda params: FirstCohort())
    assert job_from_dict({**BASE, "aggregation": {"rule": "first"}}).aggregation.rule == "first"


# ---- the job file -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "table, field",
    [
        ({"rule": "krum"}, "aggregation.rule"),
        ({"rule": 3}, "aggregation.rule"),
        ({"rule": "trimmed_mean", "trim_fraction": 0.5}, "aggregation.trim_fraction"),
        ({"trim_fraction": -0.1}, "aggregation.trim_fraction"),
        ({"trim_fraction": "a lot"}, "aggregation.trim_fraction"),
        ({"rule": "norm_bounded", "norm_bound": 0.0}, "aggregation.norm_bound"),
        ({"norm_bound": float("inf")}, "aggregation.norm_bound"),
        ({"norm_bound": float("nan")}, "aggregation.norm_bound"),
        ({"bound": 1.0}, "aggregation.bound"),
        # 9 nodes in cohorts of 3 are at most 3 cohorts: 0.2 of them cuts none
        ({"rule": "trimmed_mean", "trim_fraction": 0.2}, "aggregation.trim_fraction"),
    ],
)
def test_config_errors_name_the_field(table: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        job_from_dict({**BASE, "aggregation": table})
    assert str(err.value).startswith(field)


def test_unknown_rule_error_lists_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match="allowed values are fedavg, median, trimmed_mean, norm_bounded"):
        job_from_dict({**BASE, "aggregation": {"rule": "krum"}})


def test_trimmed_mean_needs_three_cohorts_to_cut_one() -> None:
    with pytest.raises(ConfigError, match=r"^aggregation\.rule: trimmed_mean needs at least 3 cohorts"):
        job_from_dict({**BASE, "cohort_size": 4, "min_nodes": 8, "aggregation": {"rule": "trimmed_mean", "trim_fraction": 0.4}})
    job = job_from_dict({**BASE, "aggregation": {"rule": "trimmed_mean", "trim_fraction": 0.34}})
    assert get_rule(job.aggregation.rule, job.aggregation.params) == TrimmedMean(0.34)


def test_defaults_are_fedavg_and_the_aggregator_skips_the_registry() -> None:
    job = job_from_dict(BASE)
    assert job.aggregation == AggregationConfig() and job.aggregation.rule == "fedavg"
    assert job.aggregation.params == RuleParams()
    # the aggregator has no driver's registrations: it checks a name, and still the parameters
    assert job_from_dict({**BASE, "aggregation": {"rule": "someones_rule"}}, check_registry=False).aggregation.rule == "someones_rule"
    with pytest.raises(ConfigError, match=r"^aggregation\.norm_bound"):
        job_from_dict({**BASE, "aggregation": {"rule": "someones_rule", "norm_bound": -2}}, check_registry=False)


def test_a_job_file_picks_its_rule(tmp_path: Path) -> None:
    text = (
        'model = "cnn1d"\ndataset = "mnist1d"\nnodes_per_round = 10\nmin_nodes = 9\ncohort_size = 3\n\n'
        '[aggregation]\nrule = "norm_bounded"\nnorm_bound = 2\n'
    )
    (tmp_path / "job.toml").write_text(text)
    assert tomllib.loads(text)["aggregation"]["norm_bound"] == 2  # an int in TOML, a float in the config
    job = load_job(tmp_path / "job.toml")
    assert job.aggregation == AggregationConfig(rule="norm_bounded", norm_bound=2.0)
    assert get_rule(job.aggregation.rule, job.aggregation.params) == NormBoundedMean(2.0)
