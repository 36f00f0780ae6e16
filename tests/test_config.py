from pathlib import Path

import pytest
import torch

from fedgpu.config import job_from_dict, load_job
from fedgpu.crypto import SCHEMES
from fedgpu.datasets import SCHEMAS, get_schema
from fedgpu.errors import ConfigError
from fedgpu.models import ModelSpec, available_models, build_model

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
        ({"max_weight": 0}, "max_weight"),
        ({"max_weight": 1e4}, "max_weight"),
        ({"max_weight": float("inf")}, "max_weight"),
        ({"max_weight": 1000, "cohort_size": 3, "min_nodes": 3, "nodes_per_round": 9}, "max_weight: a cohort sum of up to 7 updates"),
        ({"update_norm_bound": -1.0}, "update_norm_bound"),
        ({"update_norm_bound": float("nan")}, "update_norm_bound"),
        ({"update_norm_bound": "big"}, "update_norm_bound"),
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


def test_claim_bounds_default_to_the_cap_and_the_clip_or_100() -> None:
    job = job_from_dict(BASE)
    assert (job.max_weight, job.update_norm_bound) == (10.0, 0.0)  # 0: the default, resolved below
    assert (job.claim_bounds.max_weight, job.claim_bounds.update_norm_bound) == (10.0, 100.0)
    client = job_from_dict({**BASE, "privacy": {"mode": "client", "client_clip": 0.7}})
    assert client.claim_bounds.update_norm_bound == 0.7
    explicit = job_from_dict({**BASE, "max_weight": 2, "update_norm_bound": 3, "privacy": {"mode": "client", "client_clip": 0.7}})
    assert (explicit.claim_bounds.max_weight, explicit.claim_bounds.update_norm_bound) == (2.0, 3.0)
    assert job_from_dict({**BASE, "update_norm_bound": float("inf")}).claim_bounds.update_norm_bound == float("inf")


# What each example in examples/ is meant to show; a new example gets a line here.
EXAMPLES = {
    "digits_public.toml": {"name": "digits-public", "model": "digits_cnn", "rounds": 20, "cohort_size": 1, "dp": False},
    "mnist1d.toml": {"name": "mnist1d", "model": "cnn1d", "rounds": 12, "cohort_size": 1, "dp": False},
    "mnist1d_private.toml": {"name": "mnist1d-private", "model": "cnn1d_dp", "rounds": 15, "cohort_size": 3, "dp": True},
    "breast_cancer.toml": {"name": "breast-cancer", "model": "tab_mlp", "rounds": 12, "cohort_size": 1, "dp": False},
    "wine.toml": {"name": "wine", "model": "tab_mlp", "rounds": 12, "cohort_size": 1, "dp": False},
}


def test_every_example_is_described() -> None:
    assert sorted(f.name for f in (Path(__file__).resolve().parent.parent / "examples").glob("*.toml")) == sorted(EXAMPLES)


@pytest.mark.parametrize("file", sorted(EXAMPLES))
def test_examples_load(file: str) -> None:
    """Each example is a valid job whose model exists, builds for its dataset and (for DP) suits DP-SGD."""
    want = EXAMPLES[file]
    job = load_job(Path(__file__).resolve().parent.parent / "examples" / file)
    assert (job.name, job.model, job.rounds, job.cohort_size) == (want["name"], want["model"], want["rounds"], want["cohort_size"])
    assert job.model in available_models() and (job.dataset in SCHEMAS or job.schema is not None) and job.encryption.scheme in SCHEMES
    assert job.encryption.scheme == "ckks" and job.rewards.pool_per_round > 0
    assert 1 <= job.cohort_size <= job.min_nodes <= job.nodes_per_round
    schema = get_schema(job.dataset, job.schema)
    model = build_model(job.model, ModelSpec(schema.input_shape, schema.num_classes), seed=job.seed)
    assert model(torch.zeros(2, *schema.input_shape)).shape == (2, schema.num_classes)
    assert job.privacy.enabled is want["dp"]
    if job.privacy.enabled:
        from fedgpu.privacy.dp import check_module

        check_module(model)  # raises if DP-SGD cannot train it (BatchNorm and the like)
        assert 0 < job.privacy.epsilon <= 10 and job.training.server_momentum in job.rewards.momentum_steps


def test_bad_toml_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "job.toml"
    p.write_text("model = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_job(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_job(tmp_path / "missing.toml")


def test_a_job_file_without_cohort_size_gets_k3_on_private_data_and_k1_on_public_data() -> None:
    private = job_from_dict(BASE)  # nodes_per_round 5, min_nodes not given: raised to k
    assert (private.cohort_size, private.min_nodes) == (3, 3)
    assert job_from_dict({**BASE, "min_nodes": 4}).cohort_size == 3
    public = job_from_dict({"model": "digits_cnn", "dataset": "digits", "public_data": {}})
    assert (public.cohort_size, public.min_nodes) == (1, 1)
    assert job_from_dict({**BASE, "cohort_size": 1}).cohort_size == 1  # an explicit k is the owner's
    with pytest.raises(ConfigError, match=r"cohort_size: a private-data job defaults to cohort_size = 3.*set cohort_size = 1"):
        job_from_dict({**BASE, "nodes_per_round": 2})
    with pytest.raises(ConfigError, match=r"min_nodes: .* must be >= 3 \(got 2\)"):
        job_from_dict({**BASE, "min_nodes": 2})
