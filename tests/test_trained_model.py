"""model.safetensors carries what it takes to rebuild its model; load_trained refuses files that do not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fedgpu.errors import ConfigError
from fedgpu.models import ModelSpec, build_model, load_trained, save_trained, trained_info


def test_round_trip(tmp_path: Path) -> None:
    spec = ModelSpec((40,), 10)
    model = build_model("cnn1d", spec, seed=3)
    save_trained(tmp_path / "m.safetensors", model.state_dict(), "cnn1d", "mnist1d", spec, job="job-1", rounds=7)
    info = trained_info(tmp_path / "m.safetensors")
    assert (info.model, info.dataset, info.job, info.rounds, info.spec) == ("cnn1d", "mnist1d", "job-1", 7, spec)
    loaded = load_trained(tmp_path / "m.safetensors")
    x = torch.randn(4, 40)
    model.eval()
    assert torch.equal(loaded(x), model(x))


def test_files_without_fedgpu_metadata_or_with_other_weights_are_refused(tmp_path: Path) -> None:
    spec = ModelSpec((40,), 10)
    save_file({k: v.contiguous() for k, v in build_model("mlp", spec).state_dict().items()}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ConfigError, match="no fedgpu metadata"):
        load_trained(tmp_path / "plain.safetensors")
    save_trained(tmp_path / "lie.safetensors", build_model("mlp", spec).state_dict(), "cnn1d", "mnist1d", spec)
    with pytest.raises(ConfigError, match="do not fit model 'cnn1d'"):
        load_trained(tmp_path / "lie.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        trained_info(tmp_path / "junk.safetensors")
