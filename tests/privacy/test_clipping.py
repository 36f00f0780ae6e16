"""Book-keeping clipping computes exactly DP-SGD's clipped sum, and a bk round is an ew round: same steps, same accounting."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from fedgpu.errors import ConfigError
from fedgpu.models import ModelSpec, build_model
from fedgpu.privacy.clipping import BookKeepingClipper, unsupported_layers
from fedgpu.privacy.dp import GradSampleMode, private_round, resolve_grad_sample_mode, zero_grad_sample


class Mixed(nn.Module):
    """Every rule at once: dilation, no bias, stride > kernel, an in-place ReLU on a hooked output, LayerNorm, Linear over positions."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 8, 3, stride=1, padding=2, dilation=2, bias=False)
        self.c2 = nn.Conv1d(8, 6, 4, stride=3)
        self.ln = nn.LayerNorm(6)
        self.per_position = nn.Linear(6, 5)
        self.head = nn.Linear(30, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c1(x), inplace=True)
        h = torch.relu_(self.c2(h))  # (n, 6, 6)
        h = self.per_position(self.ln(h.transpose(1, 2)))  # (n, 6, 5)
        out: torch.Tensor = self.head(h.flatten(1))
        return out


class Image(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, stride=2, padding=1)
        self.gn = nn.GroupNorm(2, 6)
        self.c2 = nn.Conv2d(6, 4, 2, dilation=2)
        self.head = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(torch.tanh(self.gn(self.c1(x.unsqueeze(1)))))
        out: torch.Tensor = self.head(h.flatten(1))
        return out


class Frozen(nn.Module):
    """A bias-only layer, a frozen bias, and a convolution whose input is smaller than its output gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Conv1d(2, 32, 3, padding=1)  # ghost norm, the input scaled for the sum
        self.frozen_bias = nn.Conv1d(32, 4, 3, stride=2)
        self.frozen_bias.bias.requires_grad_(False)
        self.bias_only = nn.Linear(4 * 2, 6)
        self.bias_only.weight.requires_grad_(False)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.frozen_bias(torch.tanh(self.wide(x)))
        out: torch.Tensor = self.head(torch.tanh(self.bias_only(h.flatten(1))))
        return out


CASES = {
    "cnn1d_dp": (lambda: build_model("cnn1d_dp", ModelSpec((40,), 10), seed=0), (40,), 10),
    "digits_cnn": (lambda: build_model("digits_cnn", ModelSpec((8, 8), 10), seed=0), (8, 8), 10),
    "mlp": (lambda: build_model("mlp", ModelSpec((40,), 10), seed=0), (40,), 10),
    "mixed": (Mixed, (2, 20), 4),
    "image": (Image, (9, 9), 3),
    "frozen": (Frozen, (2, 6), 3),
}


def per_sample_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float) -> dict[str, torch.Tensor]:
    """DP-SGD's definition, one sample at a time: sum_i min(1, C / (|g_i| + 1e-6)) g_i."""
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        norm = torch.sqrt(sum((g**2).sum() for g in grads.values()))
        for n, g in grads.items():
            total[n] += (clip / (norm + 1e-6)).clamp(max=1.0) * g
    model.zero_grad(set_to_none=True)
    return total


@pytest.mark.parametrize("clip", [0.05, 1e3])  # every sample clipped / none
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_clipped_sum_is_dp_sgds(case: str, clip: float) -> None:
    make, shape, classes = CASES[case]
    model = make()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(13, *shape, generator=gen), torch.randint(0, classes, (13,), generator=gen)
    expected = per_sample_reference(model, x, y, clip)
    trainable = [p for p in model.parameters() if p.requires_grad]
    clipper = BookKeepingClipper(model, clip)
    F.cross_entropy(clipper.module(x), y).backward()
    clipper.write_clipped_sum(trainable)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None
            torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
        else:
            assert p.grad is None
    clipper.close()
    assert [p for p in model.parameters() if p.requires_grad] == trainable


def test_one_sample_moves_the_sum_by_at_most_the_clip() -> None:
    model = build_model("cnn1d_dp", ModelSpec((40,), 10), seed=0)
    clipper = BookKeepingClipper(model, 0.01)
    for i in range(5):
        x = torch.randn(1, 40) * 100
        F.cross_entropy(clipper.module(x), torch.tensor([i])).backward()
        clipper.write_clipped_sum(list(model.parameters()))
        norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))  # type: ignore[operator]
        assert norm <= 0.01 * (1 + 1e-5)


def test_no_batch_is_a_zero_sum() -> None:
    model = build_model("mlp", ModelSpec((40,), 10), seed=0)
    clipper = BookKeepingClipper(model, 1.0)
    clipper.write_clipped_sum(list(model.parameters()))  # no forward: an empty Poisson batch
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def _train(mode: str, physical: int | None) -> tuple[nn.Module, list[tuple[float, float, int]], int]:
    torch.manual_seed(0)
    model = build_model("cnn1d_dp", ModelSpec((40,), 10), seed=0)
    rng = np.random.default_rng(0)
    ds = TensorDataset(torch.from_numpy(rng.normal(size=(600, 40)).astype(np.float32)), torch.from_numpy(rng.integers(0, 10, 600)))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
    with private_round(
        model, opt, ds, batch_size=100, noise_multiplier=1.1, max_grad_norm=0.7,
        grad_sample_mode=mode, max_physical_batch_size=physical, seed=123,
    ) as rnd:
        for _ in range(2):
            for xb, yb in rnd.loader:
                rnd.optimizer.zero_grad(set_to_none=True)
                if len(yb) == 0:
                    zero_grad_sample(rnd.optimizer)
                else:
                    F.cross_entropy(rnd.module(xb), yb).backward()
                rnd.optimizer.step()
        history, steps = list(rnd.accountant.history), rnd.steps_taken()
    return model, history, steps


@pytest.mark.parametrize("physical", [None, 40])  # one physical batch per step, or split by Opacus's BatchMemoryManager
def test_a_bk_round_is_an_ew_round(physical: int | None) -> None:
    """Same sampling and noise seeds: the same steps, the same accountant history, the same weights."""
    ew_model, ew_history, ew_steps = _train("ew", physical)
    bk_model, bk_history, bk_steps = _train("bk", physical)
    assert bk_steps == ew_steps == 12
    assert bk_history == ew_history == [(1.1, 1 / 6, 12)]
    for (name, a), b in zip(ew_model.state_dict().items(), bk_model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    for m in bk_model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    for p in bk_model.parameters():
        assert p.requires_grad and not hasattr(p, "grad_sample") and not hasattr(p, "summed_grad")


def test_auto_takes_bk_where_every_layer_has_a_rule() -> None:
    assert resolve_grad_sample_mode(build_model("cnn1d_dp", ModelSpec((40,), 10)), "auto") is GradSampleMode.BK
    assert resolve_grad_sample_mode(build_model("digits_cnn", ModelSpec((8, 8), 10)), "auto") is GradSampleMode.BK
    emb = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2))
    assert resolve_grad_sample_mode(emb, "auto") is GradSampleMode.EW
    assert resolve_grad_sample_mode(emb, "hooks") is GradSampleMode.HOOKS


@pytest.mark.parametrize(
    "model, problem",
    [
        (nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2)), r"0 \(Embedding\): no book-keeping rule"),
        (nn.Sequential(nn.Conv1d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2)), r"0 \(Conv1d\): only one group"),
        (nn.Sequential(nn.Conv1d(2, 4, 3, padding="same"), nn.Flatten(), nn.Linear(4, 2)), "numeric zero padding"),
        (nn.Sequential(nn.Conv1d(2, 4, 3, padding=1, padding_mode="reflect"), nn.Flatten(), nn.Linear(4, 2)), "numeric zero padding"),
    ],
)
def test_bk_names_the_layers_it_cannot_train(model: nn.Module, problem: str) -> None:
    assert unsupported_layers(model)
    with pytest.raises(ConfigError, match=problem):
        BookKeepingClipper(model, 1.0)


def test_shared_weights_and_reused_layers_are_refused() -> None:
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    assert any("shares a parameter" in p for p in unsupported_layers(tied))

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.lin(torch.relu(self.lin(x)))
            return out

    model = Twice()
    clipper = BookKeepingClipper(model, 1.0)
    F.cross_entropy(clipper.module(torch.randn(3, 4)), torch.tensor([0, 1, 2])).backward()
    with pytest.raises(ConfigError, match="ran 2 times"):
        clipper.write_clipped_sum(list(model.parameters()))


def test_evaluation_inside_a_round_is_not_captured() -> None:
    model = build_model("mlp", ModelSpec((40,), 10), seed=0)
    reference = copy.deepcopy(model)
    x, y = torch.randn(8, 40), torch.randint(0, 10, (8,))
    clipper = BookKeepingClipper(model, 1.0)
    F.cross_entropy(clipper.module(x), y).backward()
    with torch.no_grad():
        clipper.module(torch.randn(5, 40))  # e.g. a progress check: must not replace the batch's records
    clipper.write_clipped_sum(list(model.parameters()))
    expected = per_sample_reference(reference, x, y, 1.0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6)
