"""One flat-vector order: what nodes send (fedgpu.wire.tensors.flatten of the state dict) is the order
valuation writes models in (fedgpu.rewards.utility.flatten_params / load_flat), for every model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedgpu.datasets import SCHEMAS, get_schema
from fedgpu.models import ModelSpec, available_models, build_model
from fedgpu.models import flat as model_flat
from fedgpu.rewards.utility import flatten_params, load_flat
from fedgpu.wire import tensors


def _spec_for(name: str) -> ModelSpec:
    schema = get_schema("digits" if name.startswith("digits") else "mnist1d")
    return ModelSpec(schema.input_shape, schema.num_classes)


@pytest.mark.parametrize("name", available_models())
def test_a_state_dict_flattened_by_each_matches(name: str) -> None:
    assert SCHEMAS  # the registered models are built for the datasets fedgpu knows
    model = build_model(name, _spec_for(name), seed=0)
    sent = tensors.flatten(model.state_dict())  # what a node uploads
    valued = flatten_params(model)  # what valuation reads and writes
    np.testing.assert_array_equal(sent, valued)
    # and, for models without floating-point buffers (nothing shared), model.parameters() order too;
    # tab_mlp's scaler buffers (feature_mean, feature_std) come first, its parameters after them
    params = torch.nn.utils.parameters_to_vector(model.parameters()).detach().double().numpy()
    buffered = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    np.testing.assert_array_equal(sent[buffered:], params)
    assert sent.size == buffered + params.size
    assert tensors.num_values(model.state_dict()) == sent.size
    assert tensors.flatten is model_flat.flatten  # one function, not two that agree


@pytest.mark.parametrize("name", available_models())
def test_what_valuation_loads_is_what_the_driver_unflattens(name: str) -> None:
    model = build_model(name, _spec_for(name), seed=0)
    state = model.state_dict()
    vec = np.random.default_rng(0).normal(size=tensors.num_values(state))
    driver = tensors.unflatten(vec, state)  # the driver's new model from a flat vector
    load_flat(model, vec)  # valuation's candidate model from the same vector
    for key, value in model.state_dict().items():
        assert torch.equal(value, driver[key]), key


class WithBuffer(nn.Module):
    """A float buffer between two layers, and an integer one: parameters() order skips the buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.register_buffer("scale", torch.full((3,), 2.0))
        self.register_buffer("steps", torch.tensor(7))
        self.b = nn.Linear(3, 1)


def test_the_order_is_the_state_dicts_float_entries_buffers_included() -> None:
    m = WithBuffer()
    # a module's own tensors come before its children's: the buffers first, then a's and b's parameters
    assert list(m.state_dict()) == ["scale", "steps", "a.weight", "a.bias", "b.weight", "b.bias"]
    vec = flatten_params(m)
    assert vec.size == 3 + 6 + 3 + 3 + 1  # the int buffer "steps" is not part of an update
    np.testing.assert_array_equal(vec, tensors.flatten(m.state_dict()))
    assert vec.size != torch.nn.utils.parameters_to_vector(m.parameters()).numel()  # why one order had to win
    load_flat(m, np.arange(vec.size, dtype=np.float64))
    np.testing.assert_array_equal(m.scale.numpy(), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(m.a.bias.detach().numpy(), [9.0, 10.0, 11.0])
    assert int(m.steps) == 7
