"""Models and updates as bytes: safetensors for state dicts, flat float64 vectors for updates.

Never pickle: ``safetensors`` stores dtype, shape and raw bytes only, and loading a file checks
each tensor against the model the receiver built from its own code.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fedgpu.errors import ProtocolError


def state_to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in state.items()})


def state_from_bytes(data: bytes, reference: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Parse safetensors bytes and check they match ``reference`` key for key, shape for shape, finite."""
    try:
        loaded = st_load(data)
    except (SafetensorError, Exception) as exc:  # safetensors raises several types on garbage
        raise ProtocolError(f"model bytes are not a valid safetensors file: {exc}") from exc
    if set(loaded) != set(reference):
        missing, extra = sorted(set(reference) - set(loaded)), sorted(set(loaded) - set(reference))
        raise ProtocolError(f"model tensors do not match the architecture: missing {missing[:5]}, unexpected {extra[:5]}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, ref in reference.items():
        t = loaded[k]
        if t.shape != ref.shape or t.dtype != ref.dtype:
            raise ProtocolError(f"tensor {k!r} is {t.dtype}{tuple(t.shape)}, the architecture needs {ref.dtype}{tuple(ref.shape)}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ProtocolError(f"tensor {k!r} holds NaN or infinite values")
        out[k] = t
    return out


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


__all__ = ["flatten", "float_keys", "num_values", "state_from_bytes", "state_to_bytes", "unflatten"]
