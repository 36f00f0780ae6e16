"""Models and updates as bytes: safetensors for state dicts, flat float64 vectors for updates
(in the one order of :mod:`fedgpu.models.flat`).

Never pickle: ``safetensors`` stores dtype, shape and raw bytes only, and loading a file checks
each tensor against the model the receiver built from its own code.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fedgpu.errors import ProtocolError

# The flat-vector order is defined once, in fedgpu.models.flat (a leaf valuation imports too); the
# wire's callers keep reaching it here.
from fedgpu.models.flat import flatten as flatten
from fedgpu.models.flat import float_keys as float_keys
from fedgpu.models.flat import num_values as num_values
from fedgpu.models.flat import unflatten as unflatten


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


__all__ = ["state_from_bytes", "state_to_bytes"]
