"""Client-level DP (DP-FedAvg, McMahan et al., ICLR 2018) with distributed noise, for large cohorts only.

Here the unit of privacy is a whole node's update, not a record: each node clips its update to
``clip_norm`` and adds a *share* of the Gaussian noise before encrypting it, so that the sum of any
``k`` or more shares carries the full N(0, (z C)^2) the mechanism needs, and no party ever sees an
un-noised sum (distributed DP; Kairouz, Liu, Steinke, ICML 2021). The driver accounts the rounds as
a subsampled Gaussian with the cohort sampling rate.

It is useful only with many nodes per round: the noise on the *mean* update is z C / m per
coordinate, so with m = 10 it swamps the signal (MNIST-1D collapses to chance, see
docs/privacy.md), while with m >= ~1000 it costs little. Record-level DP-SGD on each node
(``fedgpu.privacy.dp``) is fedgpu's default. Two caveats: shares from nodes that drop out are lost,
so size ``k`` for the minimum number of survivors, not the cohort; and CKKS approximation error is
not DP noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from fedgpu.errors import ConfigError
from fedgpu.privacy.dp import Accountant, check_epsilon_delta, epsilon_of

# A model delta: the flat float vector the node uploads (``fedgpu.wire.tensors.flatten``), or a
# state-dict-shaped mapping. Every function returns the type it was given.
Update = np.ndarray | Mapping[str, torch.Tensor]
Rng = np.random.Generator | torch.Generator


def update_norm(update: Update) -> float:
    """L2 norm of the whole update (all floating-point tensors together: the sensitivity is joint)."""
    if isinstance(update, np.ndarray):
        return float(np.linalg.norm(update.astype(np.float64, copy=False).ravel()))
    sq = sum(float(torch.sum(v.detach().double() ** 2)) for v in update.values() if torch.is_floating_point(v))
    return math.sqrt(sq)


def clip_update(update: Update, clip_norm: float) -> tuple[Update, float]:
    """(update scaled by min(1, C/||update||), the original norm). Integer tensors pass unchanged."""
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"clip_norm must be a positive number, got {clip_norm}")
    norm = update_norm(update)
    if not math.isfinite(norm):
        raise ConfigError("update holds NaN or infinite values; it cannot be clipped")
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    if isinstance(update, np.ndarray):
        return (update * scale).astype(update.dtype, copy=False), norm
    return {k: (v * scale if torch.is_floating_point(v) else v.clone()) for k, v in update.items()}, norm


def noise_share_std(clip_norm: float, noise_multiplier: float, k: int) -> float:
    """Per-coordinate std of one node's share: z C / sqrt(k), so k shares sum to std z C."""
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"clip_norm must be a positive number, got {clip_norm}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ConfigError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k (the minimum number of noise shares summed) must be a positive integer, got {k!r}")
    return noise_multiplier * clip_norm / math.sqrt(k)


def _gaussian(shape: tuple[int, ...], std: float, rng: Rng) -> np.ndarray:
    if isinstance(rng, np.random.Generator):
        return rng.normal(0.0, std, size=shape)
    if isinstance(rng, torch.Generator):
        return torch.normal(0.0, std, size=shape, generator=rng, dtype=torch.float64, device=rng.device).cpu().numpy()
    raise ConfigError(f"rng must be a numpy Generator or a torch Generator, got {type(rng).__name__}")


def add_share_of_noise(update: Update, clip_norm: float, noise_multiplier: float, k: int, rng: Rng) -> Update:
    """The update plus N(0, (z C)^2 / k) per coordinate: a sum of >= k such shares has the full noise.

    ``rng`` must be seeded from the OS on the node (``np.random.default_rng()`` or
    ``fedgpu.privacy.dp.secret_generator``): a seed the aggregator knows lets it subtract the noise.
    Clip first (``clip_update``). The noise is drawn in float64, then cast to the update's dtype.
    """
    std = noise_share_std(clip_norm, noise_multiplier, k)
    if isinstance(update, np.ndarray):
        if not np.issubdtype(update.dtype, np.floating):
            raise ConfigError(f"update must be a floating-point array, got {update.dtype}")
        noised: np.ndarray = (update.astype(np.float64) + _gaussian(update.shape, std, rng)).astype(update.dtype)
        return noised
    out: dict[str, torch.Tensor] = {}
    for name, v in update.items():
        if torch.is_floating_point(v):
            noise = torch.from_numpy(_gaussian(tuple(v.shape), std, rng)).to(v.device)
            out[name] = (v.double() + noise).to(v.dtype)
        else:
            out[name] = v.clone()
    return out


def client_level_epsilon(
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    delta: float,
    accountant: str | Accountant = Accountant.RDP,
) -> float:
    """Epsilon of ``rounds`` rounds of DP-FedAvg sampling nodes at ``sample_rate`` (m/N), per node.

    Amplification by sampling holds only if the cohort is drawn at random and kept secret from the
    nodes' adversary; with every node in every round, pass ``sample_rate=1``.
    """
    check_epsilon_delta(1.0, delta)
    if not (0 < sample_rate <= 1):
        raise ConfigError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive integer, got {rounds!r}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    return epsilon_of([(noise_multiplier, sample_rate, rounds)], delta, accountant)


__all__ = [
    "Rng",
    "Update",
    "add_share_of_noise",
    "client_level_epsilon",
    "clip_update",
    "noise_share_std",
    "update_norm",
]
