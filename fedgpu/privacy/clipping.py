"""DP-SGD's clipped sum in one backward pass, without per-sample gradients ("book-keeping" clipping).

Opacus's ``ew`` and ``hooks`` modes materialise every sample's gradient (batch x parameters floats a
step) and then clip it; its ``ghost`` mode avoids that for Linear layers only (1.6 still materialises
convolutions) and runs a second backward pass; on fedgpu's small CNNs on CPU either costs several
plain steps (docs/privacy.md). ``BookKeepingClipper`` follows Bu et al., "Differentially Private
Optimization on Large Model at Small Cost" (ICML 2023), with the mixed ghost norm of Bu et al.,
"Scalable and Efficient Training of Large Convolutional Neural Networks with Differential Privacy"
(NeurIPS 2022):

1. the forward runs with the parameters' ``requires_grad`` off, so the backward computes only
   activation gradients, never the unclipped parameter gradients DP-SGD throws away;
   forward hooks keep each trainable layer's input ``a`` and tensor hooks its output gradient ``b``;
2. each sample's gradient norm comes from those two: for a layer with T output positions (1 for a
   plain Linear) either the ghost norm ``sum_tt' (a a^T)_tt' (b b^T)_tt'`` or the per-sample
   gradient ``b^T a`` itself, whichever is smaller (T^2 against in x out);
3. the clipped sum ``sum_i c_i g_i`` with Opacus's factor ``c_i = min(1, C / (|g_i| + 1e-6))`` is one
   weighted weight-gradient per layer (a matmul, or the convolution's own weight-gradient kernel),
   written to ``p.grad``.

Everything after the clipped sum is Opacus's: ``BookKeepingDPOptimizer`` is the optimizer of Opacus's
ghost mode (``DPOptimizerFastGradientClipping``, which expects the clipped sum in ``p.grad``) and
adds the noise N(0, (sigma C)^2), divides by the expected batch size and calls the accountant's hook
on every logical step, exactly as in the other modes. The tests check the clipped sum against
per-sample gradients computed one sample at a time, and a whole step against Opacus's ``ew``.

Layers: Linear, Conv1d and Conv2d (zero padding given as numbers, one group), and GroupNorm and
LayerNorm (per-sample gradients from Opacus's own samplers: they are small). A model with any other
trainable layer, or a layer that is called twice in one forward, is for Opacus's modes.
The loss must be a mean over the batch (as ``CrossEntropyLoss()``), which Opacus assumes too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from opacus.optimizers import DPOptimizerFastGradientClipping
from torch import nn

from fedgpu.errors import ConfigError

_SAMPLED = (nn.GroupNorm, nn.LayerNorm)  # per-sample gradients from Opacus's grad samplers
_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, *_SAMPLED)


def _own_trainable(m: nn.Module) -> list[nn.Parameter]:
    return [p for p in m._parameters.values() if p is not None and p.requires_grad]


def unsupported_layers(model: nn.Module) -> list[str]:
    """Why ``model`` cannot use book-keeping clipping (one line per layer); empty when it can."""
    problems: list[str] = []
    seen: set[int] = set()
    for name, m in model.named_modules():
        params = _own_trainable(m)
        if not params:
            continue
        label = f"{name or '<root>'} ({type(m).__name__})"
        if type(m) not in _SUPPORTED:
            problems.append(f"{label}: no book-keeping rule for this layer")
        elif isinstance(m, nn.Conv1d | nn.Conv2d) and (
            m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str)
        ):
            problems.append(f"{label}: only one group and numeric zero padding")
        if any(id(p) in seen for p in params):
            problems.append(f"{label}: shares a parameter with another layer")
        seen.update(id(p) for p in params)
    return problems


def _pad1d(m: nn.Conv1d) -> int:
    if isinstance(m.padding, str):  # pragma: no cover - refused by unsupported_layers
        raise ConfigError("book-keeping clipping needs numeric padding")
    return int(m.padding[0])


def _conv_positions(a: torch.Tensor, m: nn.Conv1d | nn.Conv2d) -> torch.Tensor:
    """The input patches a convolution multiplies with its weight: (n, positions, in_channels * kernel)."""
    if isinstance(m, nn.Conv1d):
        (k,), (s,), (d,), p = m.kernel_size, m.stride, m.dilation, _pad1d(m)
        patches = F.pad(a, (p, p)).unfold(2, d * (k - 1) + 1, s)[..., ::d]  # (n, C, T, k)
        # contiguous: torch.bmm falls back to one small matmul per sample on other strides
        return patches.permute(0, 2, 1, 3).reshape(a.shape[0], patches.shape[2], -1).contiguous()
    cols = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)  # type: ignore[arg-type]
    return cols.transpose(1, 2).contiguous()


def _conv1d_gram(a: torch.Tensor, m: nn.Conv1d, positions: int) -> torch.Tensor:
    """(a a^T) over input patches, (n, T, T), from the Gram matrix of the input: no patches formed.

    Entry (t, t') is sum_j G[s t + j d, s t' + j d] of the padded input's Gram matrix G, which is the
    input's own (n, L, L) Gram matrix with p zero rows and columns around it.
    """
    (k,), (s,), (d,), p = m.kernel_size, m.stride, m.dilation, _pad1d(m)
    gram = torch.bmm(a.transpose(1, 2), a)  # (n, L, L)
    if p:
        gram = F.pad(gram, (p, p, p, p))
    span = s * (positions - 1) + 1
    out = gram[:, 0:span:s, 0:span:s]
    for j in range(1, k):
        o = j * d
        out = out + gram[:, o : o + span : s, o : o + span : s]
    return out


def _bias_sums(m: nn.Linear | nn.Conv1d | nn.Conv2d, b: torch.Tensor) -> torch.Tensor:
    """Per-sample bias gradients (n, out): the output gradient summed over positions."""
    n = b.shape[0]
    return b.reshape(n, -1, b.shape[-1]).sum(1) if isinstance(m, nn.Linear) else b.reshape(n, b.shape[1], -1).sum(2)


def _sq_norms(
    b: torch.Tensor,
    in_features: int,
    patches: Callable[[], torch.Tensor],
    patch_gram: Callable[[], torch.Tensor] | None,
    bias: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample squared gradient norms of a weight ``b_i^T a_i`` and (with ``bias``) a bias ``sum_t b_i``.

    For output gradients b (n, T, out) and input patches a (n, T, in): the ghost norm
    sum_tt' (a a^T + 1)_tt' (b b^T)_tt' (the 1 is the bias) when T^2 <= in x out, else the per-sample
    gradient itself, whichever is smaller (Bu et al.'s mixed ghost norm). The per-sample gradient,
    when formed, is returned too, (n, out, in [+ 1 column for the bias]), for the clipped sum.
    ``patch_gram`` may supply a a^T without forming the patches.
    """
    positions, out_features = b.shape[1], b.shape[2]
    if positions == 1:  # a plain Linear: |b_i a_i^T| = |a_i| |b_i|
        a_sq = patches().pow(2).sum((1, 2))
        return (a_sq + 1.0 if bias else a_sq) * b.pow(2).sum((1, 2)), None
    if positions * positions <= in_features * out_features:
        if patch_gram is not None:
            aa = patch_gram()
        else:
            a = patches()
            aa = torch.bmm(a, a.transpose(1, 2))
        if bias:
            aa = aa + 1.0
        return (aa * torch.bmm(b, b.transpose(1, 2))).sum((1, 2)), None
    a = patches()
    if bias:
        a = torch.cat([a, a.new_ones(a.shape[0], positions, 1)], dim=2)
    per_sample = torch.bmm(b.transpose(1, 2), a)
    return per_sample.pow(2).sum((1, 2)), per_sample


class _Layer:
    """One trainable layer's record for the current step."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.params = _own_trainable(module)
        self.calls = 0
        self.a: torch.Tensor | None = None
        self.b: torch.Tensor | None = None

    def reset(self) -> None:
        self.calls, self.a, self.b = 0, None, None


class BookKeepingClipper:
    """Hooks on ``model``'s trainable layers; ``write_clipped_sum`` turns the last backward into clipped ``p.grad``."""

    def __init__(self, model: nn.Module, max_grad_norm: float) -> None:
        problems = unsupported_layers(model)
        if problems:
            raise ConfigError(
                "grad_sample_mode 'bk' cannot train this model: " + "; ".join(problems) + ". Use 'ew' (or 'auto', which picks it)"
            )
        self.model = model
        self.max_grad_norm = float(max_grad_norm)
        self.layers = [_Layer(m) for m in model.modules() if _own_trainable(m)]
        self._by_module = {id(rec.module): rec for rec in self.layers}
        self._handles: list[Any] = []
        for rec in self.layers:
            self._handles.append(rec.module.register_forward_pre_hook(self._before))
            self._handles.append(rec.module.register_forward_hook(self._after))
        self.module = _DetachedForward(model, [p for rec in self.layers for p in rec.params])

    @staticmethod
    def _capturing(module: nn.Module) -> bool:
        return module.training and torch.is_grad_enabled()

    def _before(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        # The forward sees no trainable parameter, so a layer whose input needs no gradient (the first
        # one) would leave nothing upstream of the loss to differentiate: it keeps its parameters on.
        # Their unclipped gradient is overwritten by the clipped sum; it costs less than the input's.
        if self._capturing(module) and args and isinstance(args[0], torch.Tensor) and not args[0].requires_grad:
            for p in self._by_module[id(module)].params:
                p.requires_grad_(True)

    def _after(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if not self._capturing(module):
            return
        rec = self._by_module[id(module)]
        rec.calls += 1
        rec.a = args[0].detach()
        if isinstance(out, torch.Tensor) and out.requires_grad:

            def keep(grad: torch.Tensor) -> None:
                rec.b = grad

            out.register_hook(keep)  # type: ignore[no-untyped-call]

    def write_clipped_sum(self, params: Iterable[nn.Parameter]) -> None:
        """Set ``p.grad`` to the clipped sum over the batch of the last backward (zeros for an empty batch)."""
        seen = [r for r in self.layers if r.calls]
        for r in seen:
            if r.calls != 1:
                raise ConfigError(
                    f"layer {type(r.module).__name__} ran {r.calls} times in one forward; book-keeping clipping needs "
                    "each layer once per step: use grad_sample_mode 'ew'"
                )
        # a layer whose output never reached the loss has zero gradient for every sample
        with torch.no_grad():
            grads = self._clipped_sum([(r.module, r.a, r.b) for r in seen if r.a is not None and r.b is not None])
        covered = {id(p) for r in self.layers for p in r.params}
        for p in params:
            if id(p) not in covered:
                raise ConfigError("the optimizer holds a parameter outside the model given to book-keeping clipping")
            p.grad = grads.get(id(p), torch.zeros_like(p))
        for r in self.layers:
            r.reset()

    def _clipped_sum(self, seen: list[tuple[nn.Module, torch.Tensor, torch.Tensor]]) -> dict[int, torch.Tensor]:
        if not seen:
            return {}
        n = seen[0][1].shape[0]
        sq = torch.zeros(n, dtype=seen[0][2].dtype, device=seen[0][2].device)
        kept: list[Any] = []
        for m, a, b in seen:
            layer_sq, keep = self._norms(m, a, b)
            sq += layer_sq
            kept.append(keep)
        # The loss is a mean over the n samples, so a sample's own gradient is n times its share in b:
        # Opacus's factor min(1, C / (|g_i| + 1e-6)) on |g_i| = n |share_i|, times n for the sum.
        coef = (self.max_grad_norm / (n * sq.sqrt() + 1e-6)).clamp(max=1.0) * n
        out: dict[int, torch.Tensor] = {}
        for (m, a, b), keep in zip(seen, kept, strict=True):
            out.update(self._weighted(m, a, b, coef, keep))
        return out

    @staticmethod
    def _norms(m: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(per-sample squared gradient norms of this layer for b's share, what ``_weighted`` reuses)."""
        n = a.shape[0]
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
            has_bias = isinstance(m.bias, torch.Tensor) and m.bias.requires_grad
            if isinstance(m, nn.Linear):
                a3, b3 = a.reshape(n, -1, a.shape[-1]), b.reshape(n, -1, b.shape[-1])  # (n, T, features)
                patches: Callable[[], torch.Tensor] = lambda: a3  # noqa: E731
                gram = None
            else:
                b3 = b.reshape(n, b.shape[1], -1).transpose(1, 2)  # (n, T positions, out_channels)
                patches = lambda: _conv_positions(a, m)  # noqa: E731
                positions, length = b3.shape[1], a.shape[-1]
                gram = None
                if isinstance(m, nn.Conv1d) and length * length <= positions * m.weight[0].numel():
                    gram = lambda: _conv1d_gram(a, m, positions)  # noqa: E731 - smaller than the patches
            if not m.weight.requires_grad:  # only the bias trains
                return _bias_sums(m, b).pow(2).sum(1), None
            sq, per_sample = _sq_norms(b3, m.weight[0].numel(), patches, gram, bool(has_bias))
            return sq, per_sample
        from opacus.grad_sample import GradSampleModule  # GroupNorm, LayerNorm: Opacus's per-sample gradients

        sampled: dict[nn.Parameter, torch.Tensor] = GradSampleModule.GRAD_SAMPLERS[type(m)](m, [a], b)
        sq = torch.zeros(n, dtype=b.dtype, device=b.device)
        for g in sampled.values():
            sq = sq + g.reshape(n, -1).pow(2).sum(1)
        return sq, sampled

    @staticmethod
    def _weighted(m: nn.Module, a: torch.Tensor, b: torch.Tensor, coef: torch.Tensor, keep: Any) -> dict[int, torch.Tensor]:
        """sum_i coef_i g_i for each of the layer's trainable parameters."""
        n = coef.shape[0]
        if not isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
            return {id(p): torch.einsum("n,n...->...", coef, g) for p, g in keep.items()}
        has_bias = isinstance(m.bias, torch.Tensor) and m.bias.requires_grad
        out: dict[int, torch.Tensor] = {}
        if keep is not None:  # the per-sample gradient is at hand: (n, out, in [+ bias])
            summed = (coef @ keep.reshape(n, -1)).view(keep.shape[1:])
            out[id(m.weight)] = summed[:, : m.weight[0].numel()].reshape(m.weight.shape).contiguous()
            if has_bias:
                out[id(m.bias)] = summed[:, -1].contiguous()
            return out
        if not m.weight.requires_grad:
            out[id(m.bias)] = coef @ _bias_sums(m, b)
            return out
        if isinstance(m, nn.Linear):
            a3, b3 = a.reshape(n, -1, a.shape[-1]), b.reshape(n, -1, b.shape[-1])
            bw = b3 * coef[:, None, None]
            out[id(m.weight)] = bw.reshape(-1, bw.shape[-1]).t() @ a3.reshape(-1, a3.shape[-1])
            if has_bias:
                out[id(m.bias)] = bw.sum((0, 1))
            return out
        # A convolution: sum_i coef_i b_i (x) a_i is bilinear, so scale the smaller of the two and let
        # the convolution's own weight-gradient kernel (with its bias gradient) do the sum.
        shape = [-1] + [1] * (b.dim() - 1)
        scale_input = a.numel() < b.numel()
        grad_out = b if scale_input else b * coef.view(shape)
        grads = torch.ops.aten.convolution_backward(
            grad_out, a * coef.view(shape) if scale_input else a, m.weight.detach(), [m.out_channels],
            list(m.stride), list(m.padding), list(m.dilation), False, [0] * len(m.stride), m.groups,
            [False, True, has_bias and not scale_input],
        )
        out[id(m.weight)] = grads[1]
        if has_bias:
            out[id(m.bias)] = coef @ _bias_sums(m, b) if scale_input else grads[2]
        return out

    def close(self) -> None:
        """Remove every hook; the model is as it was."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for r in self.layers:
            r.reset()


class _DetachedForward(nn.Module):
    """Calls the model with its trainable parameters switched off for the forward only.

    The graph then holds no parameter, so the backward computes activation gradients alone, never the
    unclipped parameter gradients DP-SGD would throw away; the parameters are trainable again as soon
    as the forward returns (cheaper than ``torch.func.functional_call`` with detached copies).
    """

    def __init__(self, model: nn.Module, params: list[nn.Parameter]) -> None:
        super().__init__()
        self._module = model
        self._params = params

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        for p in self._params:
            p.requires_grad_(False)
        try:
            return self._module(*args, **kwargs)
        finally:
            for p in self._params:
                p.requires_grad_(True)


class BookKeepingDPOptimizer(DPOptimizerFastGradientClipping):  # type: ignore[misc]
    """Opacus's ghost-mode optimizer, fed by ``BookKeepingClipper``: noise, scaling and accounting are Opacus's."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, clipper: BookKeepingClipper, **kwargs: Any) -> None:
        super().__init__(optimizer, **kwargs)
        self.clipper = clipper

    def accumulate(self) -> None:
        # as Opacus's, with a clone instead of a deepcopy per parameter (Python overhead on small models)
        for p in self.params:
            if p.summed_grad is not None:
                p.summed_grad.add_(p.grad)
            else:
                p.summed_grad = p.grad.detach().clone()

    def pre_step(self, closure: Callable[[], float] | None = None) -> bool | None:
        self.clipper.write_clipped_sum(self.params)
        result: bool | None = super().pre_step(closure)
        return result


__all__ = ["BookKeepingClipper", "BookKeepingDPOptimizer", "unsupported_layers"]
