"""A model's values as one flat float64 vector: the one order every update, sum and valuation uses.

The order is the model's floating-point state-dict entries, in state-dict order (integer buffers such
as BatchNorm's step counter are left out). Nodes flatten their change in it, cohort sums add up in
it, the driver unflattens the round's update in it, and valuation writes candidate models in it, so
the vector a node sends lands on the tensor it came from. It is defined here, once: a leaf that the
wire (``fedgpu.wire.tensors``) and valuation (``fedgpu.rewards.utility``) both import.

For a model without floating-point buffers and without shared parameters this is also
``model.parameters()`` order (both walk the modules depth first, each module's own tensors before its
children's); tests/aggregation/test_flat_order.py checks it for every registered model. Valuation's
``flatten_params`` / ``load_flat`` (:mod:`fedgpu.rewards.utility`) are these functions on a model in hand.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from fedgpu.errors import ProtocolError


def float_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """The entries an update covers: floating-point tensors, in the model's own order."""
    return [k for k, v in state.items() if v.is_floating_point()]


def flatten(state: dict[str, torch.Tensor]) -> np.ndarray:
    keys = float_keys(state)
    if not keys:
        return np.zeros(0)
    return torch.cat([state[k].detach().reshape(-1).to(torch.float64) for k in keys]).numpy()


def num_values(state: dict[str, torch.Tensor]) -> int:
    return sum(state[k].numel() for k in float_keys(state))


def unflatten(vec: np.ndarray, reference: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Inverse of ``flatten`` over the float entries of ``reference``; other entries are copied."""
    n = num_values(reference)
    if vec.shape != (n,):
        raise ProtocolError(f"flat vector has shape {vec.shape}, the model has {n} values")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    pos = 0
    for k, ref in reference.items():
        if ref.is_floating_point():
            m = ref.numel()
            out[k] = torch.from_numpy(np.ascontiguousarray(vec[pos : pos + m])).reshape(ref.shape).to(ref.dtype)
            pos += m
        else:
            out[k] = ref.clone()
    return out


__all__ = ["flatten", "float_keys", "num_values", "unflatten"]
