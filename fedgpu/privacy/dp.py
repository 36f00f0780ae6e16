"""Record-level DP-SGD on the node with Opacus: plan the noise for a job, and privatise one round.

fedgpu's guarantee is (epsilon, delta)-DP per data owner, enforced on the node that holds the data.
The job names the target epsilon for the whole job; every node derives its own noise multiplier from
its own sample rate and the total number of steps it will take over all rounds (``noise_for_job``),
so the job ends exactly at the target on every node whatever its data size.

Two Opacus details this module exists to get right:

* Opacus accounts a Poisson-sampled epoch as ``len(data_loader)`` steps at ``q = 1/len(data_loader)``,
  i.e. ``q = 1/ceil(n/B)``, not ``B/n`` (planning with ``B/n`` gives a sigma for the wrong q).
  ``planned_steps`` is that formula, and ``private_round`` builds the Poisson loader from it, so
  the node, the driver and the ledger agree on q and the step count to the last bit. (Opacus's own
  ``DPDataLoader.from_data_loader`` rounds ``int(1/(1/k))``, which is ``k - 1`` for k = 93, 99, ...)
* A module must not be privatised twice (meta-pytorch/opacus#608): each round wraps the plain model
  in a fresh ``GradSampleModule`` (or book-keeping hooks, ``fedgpu.privacy.clipping``) and unwraps it
  on exit, so the caller's model is trained in place and its ``state_dict`` keys never carry the
  ``_module.`` prefix (#435).

The noise multiplier for a job is planned in :mod:`fedgpu.privacy.planning` (an RDP guess confirmed
by the job's own accountant, so the plan's epsilon is the ledger's figure, never above the target).

Randomness: the Poisson sampling and the Gaussian noise come from generators seeded from the OS
(``secrets``), never from the job's seed, which the aggregator knows: a noise seed anyone else knows
voids the guarantee. They are PyTorch PRNGs, not a CSPRNG (Opacus ``secure_mode`` needs torchcsprng;
see Mironov, CCS 2012, on floating-point noise): good against the aggregator, not against an
adversary with the generator's state.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from opacus import PrivacyEngine
from opacus.accountants import IAccountant, create_accountant
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from opacus.utils.batch_memory_manager import BatchMemoryManager
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedgpu.errors import ConfigError


class Accountant(str, Enum):  # noqa: UP042 - not StrEnum: str() of a member stays "Accountant.PRV"
    """Opacus accountants fedgpu accepts. GDP is left out: it raises when sigma or q change, as they do across jobs."""

    PRV = "prv"  # Gopi et al., NeurIPS 2021: tight numerical composition; Opacus's default
    RDP = "rdp"  # Renyi DP: looser (docs/privacy.md) but cheap on long, mixed histories


class GradSampleMode(str, Enum):  # noqa: UP042 - as Accountant
    """How DP-SGD gets its clipped per-sample gradients; the noise and the accounting are Opacus's in every mode."""

    AUTO = "auto"  # bk where the model allows it, else ew
    BK = "bk"  # fedgpu.privacy.clipping: one backward pass, no per-sample gradients (fastest, docs/privacy.md)
    EW = "ew"  # Opacus with torch ExpandedWeights: the fastest of Opacus's modes on CPU for fedgpu's CNNs
    HOOKS = "hooks"
    FUNCTORCH = "functorch"


def resolve_grad_sample_mode(model: nn.Module, mode: str | GradSampleMode) -> GradSampleMode:
    """``auto`` -> ``bk`` when every trainable layer of ``model`` has a book-keeping rule, else ``ew``."""
    chosen = parse_grad_sample_mode(mode)
    if chosen is GradSampleMode.AUTO:
        from fedgpu.privacy.clipping import unsupported_layers

        return GradSampleMode.EW if unsupported_layers(model) else GradSampleMode.BK
    return chosen


def parse_accountant(value: str | Accountant) -> Accountant:
    try:
        return Accountant(value)
    except ValueError:
        raise ConfigError(
            f"accountant = {value!r}: allowed values are {', '.join(a.value for a in Accountant)}"
        ) from None


def parse_grad_sample_mode(value: str | GradSampleMode) -> GradSampleMode:
    try:
        return GradSampleMode(value)
    except ValueError:
        raise ConfigError(
            f"grad_sample_mode = {value!r}: allowed values are {', '.join(m.value for m in GradSampleMode)}"
        ) from None


@dataclass(frozen=True)
class DPConfig:
    """A job's privacy settings. ``epsilon`` is the target for the whole job, per data owner."""

    epsilon: float
    delta: float = 1e-5  # keep <= 1/(10 n) for the smallest owner
    max_grad_norm: float = 1.0  # per-sample clipping bound C
    accountant: Accountant = Accountant.PRV
    # Poisson sampling is what the accountants analyse; without it the reported epsilon is only a
    # heuristic (shuffled fixed-size batches are not covered by the subsampled-Gaussian analysis).
    poisson_sampling: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "accountant", parse_accountant(self.accountant))
        check_epsilon_delta(self.epsilon, self.delta)
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ConfigError(f"max_grad_norm must be a positive number, got {self.max_grad_norm}")


def check_epsilon_delta(epsilon: float, delta: float) -> None:
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ConfigError(f"epsilon must be a positive number, got {epsilon}")
    if not (0 < delta < 1):
        raise ConfigError(f"delta must lie in (0, 1), got {delta}")


def planned_steps(num_samples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """(sample_rate, steps per round) exactly as Opacus accounts them: q = 1/ceil(n/B), epochs*ceil(n/B) steps."""
    for name, v in (("num_samples", num_samples), ("batch_size", batch_size), ("epochs", epochs)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    batches = -(-num_samples // batch_size)
    return 1.0 / batches, epochs * batches


def make_accountant(mechanism: str | Accountant, history: list[tuple[float, float, int]] | None = None) -> IAccountant:
    """A fresh Opacus accountant holding ``history`` = [(noise_multiplier, sample_rate, steps)]."""
    acc = create_accountant(mechanism=parse_accountant(mechanism).value)
    acc.history = list(history or [])
    return acc


def epsilon_of(history: list[tuple[float, float, int]], delta: float, accountant: str | Accountant = Accountant.PRV) -> float:
    """Epsilon of a composition, computed by Opacus; 0 for an empty history."""
    if not history:
        return 0.0
    import numpy as np

    with np.errstate(divide="ignore"):  # PRV at sample rate 1 (the statistics round) takes log(1 - q) = log 0: handled by Opacus
        return float(make_accountant(accountant, history).get_epsilon(delta=delta))


def check_module(model: nn.Module) -> None:
    """Refuse a model DP-SGD cannot train, naming the layers.

    BatchNorm mixes the samples of a batch, so per-sample gradients do not exist. Opacus can swap it
    for GroupNorm (``ModuleValidator.fix``), but that changes the architecture: the node's update would
    no longer match the global model. So fedgpu refuses and the job's model must use GroupNorm.
    Frozen BatchNorm is refused too: in training mode it still normalises with batch statistics.
    """
    bn = [name or "<root>" for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn:
        raise ConfigError(
            f"model has BatchNorm layers ({', '.join(bn)}), which mix samples within a batch and rule out "
            "DP-SGD; define the model with GroupNorm instead (e.g. nn.GroupNorm(min(32, C), C)). fedgpu does "
            "not swap layers itself, since the update would then not match the global model"
        )
    was_training = model.training
    model.train()
    try:
        errors = ModuleValidator.validate(model, strict=False)
    finally:
        model.train(was_training)
    if errors:
        raise ConfigError(
            "model cannot be trained with DP-SGD: "
            + "; ".join(str(e) for e in errors)
            + ". Replace these layers with Opacus-compatible ones (opacus.validators.ModuleValidator.fix shows which)"
        )


def secret_generator(device: torch.device | str = "cpu", seed: int | None = None) -> torch.Generator:
    """A generator seeded from the OS; ``seed`` is for tests and benchmarks only (a known seed voids DP)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(secrets.randbits(63) if seed is None else seed)
    return gen


@dataclass
class PrivateRound:
    """What one privatised round hands the training loop."""

    module: nn.Module  # the GradSampleModule wrapper: call it for the forward pass
    optimizer: DPOptimizer
    loader: DataLoader[Any]  # logical (Poisson) batches, split into physical ones when needed
    sample_rate: float
    steps_per_epoch: int
    accountant: IAccountant  # this round's steps only; the owner's ledger holds the whole history

    def steps_taken(self) -> int:
        return sum(int(s) for _, _, s in self.accountant.history)


@contextmanager
def private_round(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: Dataset[Any],
    *,
    batch_size: int,
    noise_multiplier: float,
    max_grad_norm: float,
    poisson_sampling: bool = True,
    grad_sample_mode: str | GradSampleMode = GradSampleMode.AUTO,
    max_physical_batch_size: int | None = None,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> Iterator[PrivateRound]:
    """Wrap ``model``/``optimizer`` for one round of DP-SGD and unwrap on exit, whatever happens.

    ``model`` is trained in place; on exit no hook or per-sample attribute is left on it, so the next
    round can privatise it again (#608) and its state_dict has the plain keys.
    """
    check_module(model)
    mode = resolve_grad_sample_mode(model, grad_sample_mode)
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"noise_multiplier must be a positive number, got {noise_multiplier}")
    if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        raise ConfigError(f"max_grad_norm must be a positive number, got {max_grad_norm}")
    n = len(dataset)  # type: ignore[arg-type]
    sample_rate, steps_per_epoch = planned_steps(n, batch_size, 1)
    sampling_gen = secret_generator("cpu", seed)
    noise_gen = secret_generator(device, None if seed is None else seed + 1)
    if poisson_sampling:
        # Built here rather than by make_private so that q is exactly 1/ceil(n/B) (see module doc).
        loader: DataLoader[Any] = DPDataLoader(dataset, sample_rate=sample_rate, generator=sampling_gen)
        loader.batch_sampler.steps = steps_per_epoch  # type: ignore[union-attr]
    else:
        warnings.warn(
            "DP-SGD without Poisson sampling: the accountant's epsilon assumes Poisson sampling and is only "
            "a heuristic for shuffled fixed-size batches",
            stacklevel=3,
        )
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=sampling_gen)
    if len(loader) != steps_per_epoch:  # pragma: no cover - guards the accounting invariant above
        raise ConfigError(f"loader has {len(loader)} batches, the plan says {steps_per_epoch}")
    if mode is GradSampleMode.BK:
        from fedgpu.privacy.clipping import BookKeepingClipper, BookKeepingDPOptimizer

        clipper = BookKeepingClipper(model, max_grad_norm)
        accountant = create_accountant(mechanism="prv")
        dp_opt: DPOptimizer = BookKeepingDPOptimizer(
            optimizer,
            clipper=clipper,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=int(n * sample_rate),  # as make_private: the mean's denominator
            loss_reduction="mean",
            generator=noise_gen,
        )
        dp_opt.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
        dp_model: nn.Module = clipper.module
        dp_loader = loader
        close: Callable[[], None] = clipper.close
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")  # said once, in the module doc
            engine = PrivacyEngine(accountant="prv")
            dp_model, dp_opt, dp_loader = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=noise_multiplier,
                max_grad_norm=max_grad_norm,
                poisson_sampling=False,  # the loader above already samples (or deliberately does not)
                grad_sample_mode=mode.value,
                noise_generator=noise_gen,
            )
        accountant = engine.accountant
        close = dp_model._close  # type: ignore[assignment] # removes hooks and grad_sample attributes from `model`
    if len(dp_loader) != steps_per_epoch:  # pragma: no cover
        raise ConfigError("Opacus changed the number of steps per epoch")
    try:
        if max_physical_batch_size is not None and max_physical_batch_size < batch_size:
            with BatchMemoryManager(
                data_loader=dp_loader, max_physical_batch_size=max_physical_batch_size, optimizer=dp_opt
            ) as split_loader:
                yield PrivateRound(dp_model, dp_opt, split_loader, sample_rate, steps_per_epoch, accountant)
        else:
            yield PrivateRound(dp_model, dp_opt, dp_loader, sample_rate, steps_per_epoch, accountant)
    finally:
        dp_opt.zero_grad(set_to_none=True)
        close()
        for p in model.parameters():
            for attr in ("grad_sample", "summed_grad", "_processed"):
                if hasattr(p, attr):
                    delattr(p, attr)


def zero_grad_sample(optimizer: DPOptimizer) -> None:
    """Mark an empty Poisson batch: clipped sum zero, so the step adds noise only, as the analysis needs."""
    for p in optimizer.params:
        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)


__all__ = [
    "Accountant",
    "DPConfig",
    "GradSampleMode",
    "PrivateRound",
    "check_epsilon_delta",
    "check_module",
    "epsilon_of",
    "make_accountant",
    "parse_accountant",
    "parse_grad_sample_mode",
    "planned_steps",
    "private_round",
    "resolve_grad_sample_mode",
    "secret_generator",
    "zero_grad_sample",
]
