"""The round's game over cohorts: what a set of cohort sums is worth on the job driver's validation set.

Players are cohorts, never single nodes: the driver only holds decrypted sums ``S_c = sum w_i delta_i``
and weights ``W_c = sum w_i``. A coalition's model is built with the *same* rule as the real update
(weighted FedAvg by default), so a cohort is valued for what it does to the model actually shipped.

Utility is measured against the free step: with ``w`` the global weights and ``base`` the update the
driver gets for nothing (zeros, or the last global change times a momentum factor),

    u(S) = L_val(w + base) - L_val(w + agg(S))   for S non-empty,   u(empty) = 0.

A cohort that sends the free step (``S_c = W_c * base``, the "replay the last global change" free
rider) is then exactly what a zero update is when ``base = 0``: worth 0 alone, and with others it only
dilutes the average, a real harm that shows up as a value <= 0. (Adding ``base`` on top of ``agg(S)``
instead would pay that free rider for taking the momentum step twice.) Validation *loss* is used, not
accuracy: it moves smoothly under DP noise where accuracy moves in steps of 1/n.

With several ``step_sizes`` each coalition's model is the best of ``w + eta * agg(S)`` on the
validation set (the real update is chosen the same way): damping is then free for every coalition,
so a zero update, which only shrinks the average, stops looking like a contribution when the honest
step overshoots.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fedgpu.errors import ProtocolError
from fedgpu.rewards.shapley import Coalition

Aggregate = Callable[[Sequence[np.ndarray], Sequence[float]], np.ndarray]

# Per-sample cross-entropy is capped here: above it the true class has probability < e^-100, which says
# nothing more about usefulness, and the cap keeps a diverged (NaN/inf) coalition model finite so that
# it cannot wreck the Shapley arithmetic of every other cohort.
DEFAULT_MAX_SAMPLE_LOSS = 100.0


def fedavg(sums: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted FedAvg over cohorts: (sum of S_c) / (sum of W_c); zeros when the total weight is 0."""
    total = float(sum(weights))
    out = np.add.reduce([np.asarray(s, dtype=np.float64) for s in sums]) if sums else np.zeros(0)
    if total <= 0.0:
        return np.zeros_like(out)
    return out / total


def flatten_params(model: nn.Module) -> np.ndarray:
    """The model's parameters as one float64 vector, in ``model.parameters()`` order."""
    return torch.nn.utils.parameters_to_vector([p.detach() for p in model.parameters()]).cpu().double().numpy()


def load_flat(model: nn.Module, flat: np.ndarray) -> None:
    """Write a flat vector (``flatten_params`` order) into the model's parameters in place."""
    first = next(model.parameters())
    vec = torch.as_tensor(np.asarray(flat), dtype=first.dtype, device=first.device)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(vec, model.parameters())


class CohortGame:
    """u(S) over cohorts 0..C-1, one forward pass over the validation set per distinct coalition.

    Call the instance with a ``frozenset`` of cohort indices; it is a ready ``Utility`` for
    :func:`fedgpu.rewards.shapley.shapley`. ``global_params`` and ``baseline_delta`` are flat vectors
    in ``flatten_params`` order. Models with floating-point buffers (BatchNorm statistics) are refused:
    a flat parameter vector would silently leave those at their initial values.
    """

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        global_params: np.ndarray,
        baseline_delta: np.ndarray | None,
        cohort_sums: Sequence[np.ndarray],
        cohort_weights: Sequence[float],
        val_x: np.ndarray,
        val_y: np.ndarray,
        aggregate: Aggregate = fedavg,
        *,
        batch_size: int = 4096,
        max_sample_loss: float = DEFAULT_MAX_SAMPLE_LOSS,
        step_sizes: Sequence[float] = (1.0,),
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model_factory().to(self.device).eval()
        if any(b.is_floating_point() for b in self.model.buffers()):
            raise ValueError("CohortGame needs a model without floating-point buffers (use GroupNorm, not BatchNorm)")
        num_params = sum(p.numel() for p in self.model.parameters())
        self.global_params = _flat(global_params, num_params, "global_params")
        self.baseline_delta = np.zeros(num_params) if baseline_delta is None else _flat(baseline_delta, num_params, "baseline_delta")
        if len(cohort_sums) != len(cohort_weights):
            raise ValueError(f"{len(cohort_sums)} cohort sums but {len(cohort_weights)} cohort weights")
        self.cohort_sums = [_cohort_sum(s, num_params, c) for c, s in enumerate(cohort_sums)]
        self.cohort_weights = [_cohort_weight(w, c) for c, w in enumerate(cohort_weights)]
        if len(val_x) != len(val_y) or len(val_y) == 0:
            raise ValueError(f"validation set needs matching, non-empty x and y; got {len(val_x)} and {len(val_y)}")
        self.aggregate = aggregate
        if not step_sizes or any(not (math.isfinite(e) and e > 0) for e in step_sizes):
            raise ValueError(f"step_sizes must be finite and > 0, got {list(step_sizes)}")
        self.step_sizes = tuple(float(e) for e in step_sizes)
        self._steps: dict[Coalition, float] = {}
        self.batch_size = batch_size
        self.max_sample_loss = max_sample_loss
        self._x = torch.as_tensor(np.ascontiguousarray(val_x), dtype=torch.float32, device=self.device)
        self._y = torch.as_tensor(np.asarray(val_y), dtype=torch.int64, device=self.device)
        self._cache: dict[Coalition, float] = {}
        self._kept_losses: dict[Coalition, np.ndarray] = {}
        self.forward_passes = 0

    @property
    def num_cohorts(self) -> int:
        return len(self.cohort_sums)

    def coalition_delta(self, coalition: Coalition) -> np.ndarray:
        """The update this coalition's model would apply: agg(S), or the free step when S is empty."""
        members = sorted(coalition)
        if any(not 0 <= c < self.num_cohorts for c in members):
            raise ValueError(f"coalition {members} names cohorts outside 0..{self.num_cohorts - 1}")
        if not members:
            return self.baseline_delta
        delta = np.asarray(self.aggregate([self.cohort_sums[c] for c in members], [self.cohort_weights[c] for c in members]), dtype=np.float64)
        if delta.shape != self.global_params.shape:
            raise ValueError(f"aggregate returned shape {delta.shape}, expected {self.global_params.shape}")
        return delta

    def sample_losses(self, coalition: Coalition) -> np.ndarray:
        """Per-sample validation loss of the coalition's model (capped; never NaN).

        Kept for the reference model and the grand coalition only (the noise floor needs both again);
        other coalitions keep just their mean in the utility cache.
        """
        coalition = frozenset(coalition)
        kept = self._kept_losses.get(coalition)
        if kept is not None:
            return kept
        delta = self.coalition_delta(coalition)
        if not coalition or len(self.step_sizes) == 1:
            losses = self._losses_of(self.global_params + self.step_sizes[0] * delta if coalition else self.global_params + delta)
            self._steps[coalition] = self.step_sizes[0] if coalition else 1.0
        else:
            # The server's step along agg(S) is chosen on the validation set, for every coalition alike:
            # so a member that only shrinks the step (a zero update diluting the average) adds nothing
            # that the step search does not already give for free.
            tried = [(self._losses_of(self.global_params + eta * delta), eta) for eta in self.step_sizes]
            losses, eta = min(tried, key=lambda t: float(t[0].mean()))
            self._steps[coalition] = eta
        if len(coalition) in (0, self.num_cohorts):
            self._kept_losses[coalition] = losses
        return losses

    def step_size(self, coalition: Coalition) -> float:
        """The server step chosen for this coalition's update (evaluates it if needed)."""
        coalition = frozenset(coalition)
        if coalition not in self._steps:
            self.sample_losses(coalition)
        return self._steps[coalition]

    def __call__(self, coalition: Coalition) -> float:
        coalition = frozenset(coalition)
        hit = self._cache.get(coalition)
        if hit is not None:
            return hit
        value = 0.0 if not coalition else float(self.sample_losses(frozenset()).mean() - self.sample_losses(coalition).mean())
        self._cache[coalition] = value
        return value

    @torch.no_grad()
    def _losses_of(self, params: np.ndarray) -> np.ndarray:
        load_flat(self.model, params)
        self.forward_passes += 1
        out = []
        for i in range(0, len(self._y), self.batch_size):
            logits = self.model(self._x[i : i + self.batch_size])
            out.append(nn.functional.cross_entropy(logits, self._y[i : i + self.batch_size], reduction="none"))
        losses = torch.cat(out).double().cpu().numpy()
        return np.minimum(np.nan_to_num(losses, nan=self.max_sample_loss, posinf=self.max_sample_loss), self.max_sample_loss)


def noise_floor(
    game: CohortGame,
    coalition: Coalition | None = None,
    resamples: int = 200,
    rng: np.random.Generator | None = None,
) -> float:
    """Bootstrap std of u(coalition) (default: all cohorts) over resamples of the validation set.

    The loss *difference* is resampled pairwise, so the shared per-sample difficulty cancels and the
    floor measures only how much the utility would move with another draw of validation data. Values
    with |value| below it are indistinguishable from 0 and should be paid as 0 for the round; it is
    also the natural ``truncation_tol`` of the sampled Shapley estimator.
    """
    if resamples < 2:
        raise ValueError(f"resamples must be >= 2, got {resamples}")
    target = frozenset(range(game.num_cohorts)) if coalition is None else frozenset(coalition)
    diff = game.sample_losses(frozenset()) - game.sample_losses(target)
    rng = rng if rng is not None else np.random.default_rng(0)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    return float(diff[idx].mean(axis=1).std(ddof=1))


def zero_below_floor(values: np.ndarray, floor: float) -> np.ndarray:
    """Values whose magnitude is under the evaluation noise floor, set to exactly 0."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.abs(values) < floor, 0.0, values)


def _flat(vec: np.ndarray, num_params: int, name: str) -> np.ndarray:
    arr = np.asarray(vec, dtype=np.float64)
    if arr.shape != (num_params,):
        raise ValueError(f"{name} has shape {arr.shape}, the model has {num_params} parameters")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def _cohort_sum(vec: np.ndarray, num_params: int, cohort: int) -> np.ndarray:
    """Decrypted sums come from untrusted nodes: a wrong size or a NaN is the senders' fault."""
    arr = np.asarray(vec, dtype=np.float64)
    if arr.shape != (num_params,):
        raise ProtocolError(f"cohort {cohort}: sum has shape {arr.shape}, the model has {num_params} parameters")
    if not np.isfinite(arr).all():
        raise ProtocolError(f"cohort {cohort}: sum holds NaN or infinite values; drop the cohort before valuation")
    return arr


def _cohort_weight(weight: float, cohort: int) -> float:
    w = float(weight)
    if not math.isfinite(w) or w < 0.0:
        raise ProtocolError(f"cohort {cohort}: weight {weight!r} is not a finite number >= 0")
    return w


__all__ = [
    "Aggregate",
    "CohortGame",
    "DEFAULT_MAX_SAMPLE_LOSS",
    "fedavg",
    "flatten_params",
    "load_flat",
    "noise_floor",
    "zero_below_floor",
]
