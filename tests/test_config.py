import pytest

from fedgpu.config import job_from_dict, load_job
from fedgpu.errors import ConfigError

BASE = {"model": "cnn1d", "dataset": "mnist1d"}


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"model": "resnet999"}, "model"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"rounds": 0}, "rounds"),
        ({"rounds": "5"}, "rounds"),
        ({"min_nodes": 9, "nodes_per_round": 3}, "min_nodes"),
        ({"cohort_size": 4, "min_nodes": 2, "nodes_per_round": 5}, "cohort_size"),
        ({"training": {"lr": -1.0}}, "training.lr"),
        ({"training": {"epochz": 1}}, "training.epochz"),
        ({"encryption": {"scheme": "rsa"}}, "encryption.scheme"),
        ({"privacy": {"epsilon": 0.0}}, "privacy.epsilon"),
        ({"privacy": {"accountant": "gdp"}}, "privacy.accountant"),
        ({"training": {"server_momentum": 1.0}}, "training.server_momentum"),
        ({"rewards": {"step_sizes": []}}, "rewards.step_sizes"),
        ({"rewards": {"step_sizes": [0.5, -1]}}, "rewards.step_sizes"),
    ],
)
def test_errors_name_the_field(patch: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        job_from_dict({**BASE, **patch})
    assert str(err.value).startswith(field)


def test_privacy_table_turns_dp_on_and_defaults_hold() -> None:
    job = job_from_dict({**BASE, "privacy": {"epsilon": 3.0}})
    assert job.privacy.enabled and job.privacy.epsilon == 3.0 and job.privacy.accountant == "prv"
    assert job.encryption.scheme == "ckks"
    assert not job_from_dict(BASE).privacy.enabled


def test_examples_load() -> None:
    from pathlib import Path

    for f in (Path(__file__).resolve().parent.parent / "examples").glob("*.toml"):
        load_job(f)


def test_bad_toml_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "job.toml"
    p.write_text("model = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_job(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_job(tmp_path / "missing.toml")
