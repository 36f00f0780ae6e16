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

The noise multiplier is searched with a cheap RDP guess and confirmed by the job's own accountant,
so the plan's epsilon is always the accountant's figure (the ledger's), never above the target;
plans are cached in the process and, given a ``PlanCache``, on the node's disk.

Randomness: the Poisson sampling and the Gaussian noise come from generators seeded from the OS
(``secrets``), never from the job's seed, which the aggregator knows: a noise seed anyone else knows
voids the guarantee. They are PyTorch PRNGs, not a CSPRNG (Opacus ``secure_mode`` needs torchcsprng;
see Mironov, CCS 2012, on floating-point noise): good against the aggregator, not against an
adversary with the generator's state.
"""

from __future__ import annotations

import math
import secrets
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
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
from fedgpu.privacy.plan_cache import NoisePlan, PlanCache, PlanKey


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
    return float(make_accountant(accountant, history).get_epsilon(delta=delta))


# The search for sigma. Opacus's ``get_noise_multiplier`` bisects over the accountant from [0, 20],
# and each PRV evaluation spends most of its time in two RDP computations over 150 orders: seconds
# per node. fedgpu guesses sigma with a cheap RDP (integer orders only), then runs the job's own
# accountant only to confirm or correct the guess, in a few evaluations (docs/privacy.md). The
# returned sigma's epsilon is always one the accountant computed itself, exactly as the ledger
# will (``epsilon_of`` on the job's one segment).
PLANNER_VERSION = 2  # part of every cached plan's key: bump when the search changes
MAX_SIGMA = 1e6  # as Opacus: a target that needs more noise than this is refused
# sigma_PRV / sigma_RDP as measured at fedgpu's settings (docs/privacy.md): only where the search
# starts; a wrong value costs an evaluation, never a wrong plan.
_PRV_OVER_RDP = 0.935
_PROXY_ORDERS = [float(a) for a in range(2, 65)] + [80.0, 96.0, 128.0, 192.0, 256.0, 512.0]


class _OutOfReach(ValueError):
    """The target needs a noise multiplier above MAX_SIGMA."""


def _proxy_epsilon(sigma: float, sample_rate: float, steps: int, delta: float) -> float:
    """RDP over integer orders only: a few ms, a little looser than Opacus's RDP. Only ever a guess."""
    from opacus.accountants.analysis import rdp as rdp_analysis

    rdp = rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=sigma, steps=steps, orders=_PROXY_ORDERS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha": fine for a guess
        eps, _ = rdp_analysis.get_privacy_spent(orders=_PROXY_ORDERS, rdp=rdp, delta=delta)
    return float(eps)


def _find_sigma(
    epsilon_at: Callable[[float], float],
    low: float,
    high: float,
    guess: float,
    second_guess: Callable[[float, float], float] | None = None,
    max_evaluations: int = 80,
) -> tuple[float, float, int]:
    """(sigma, epsilon_at(sigma), evaluations) with ``low <= epsilon_at(sigma) <= high``; epsilon decreases in sigma.

    log(epsilon) is nearly linear in log(sigma), so secant steps in those coordinates converge in a
    few evaluations. They are kept inside the bracket once one side of the window lies on each side
    (bisection otherwise, and after three steps that do not shrink the bracket); until then, steps
    of at most x4 towards the window. ``second_guess(sigma, epsilon)`` may supply the second point.
    """
    aim = math.log((low + high) / 2)
    u = math.log(guess)
    u_lo: float | None = None  # log sigma known to give epsilon > high (too little noise)
    u_hi: float | None = None  # log sigma known to give epsilon < low (more noise than needed)
    last: tuple[float, float] | None = None  # previous (u, log epsilon - aim)
    stale = 0
    for n in range(1, max_evaluations + 1):
        sigma = math.exp(u)
        if sigma > MAX_SIGMA:
            raise _OutOfReach(sigma)
        eps = epsilon_at(sigma)
        if low <= eps <= high:
            return sigma, eps, n
        finite = math.isfinite(eps) and eps > 0
        h = math.log(eps) - aim if finite else math.inf
        width = (u_hi - u_lo) if u_lo is not None and u_hi is not None else math.inf
        if not finite or eps > high:  # an accountant that fails counts as too little noise
            u_lo = u if u_lo is None else max(u_lo, u)
        else:
            u_hi = u if u_hi is None else min(u_hi, u)
        new_width = (u_hi - u_lo) if u_lo is not None and u_hi is not None else math.inf
        stale = stale + 1 if new_width > 0.5 * width else 0
        step: float | None = None
        if n == 1 and second_guess is not None:
            step = math.log(second_guess(sigma, eps)) - u
        elif last is not None and math.isfinite(h) and math.isfinite(last[1]) and h != last[1]:
            step = -h * (u - last[0]) / (h - last[1])
        last = (u, h)
        if u_lo is not None and u_hi is not None:
            nxt = u + step if step is not None else math.nan
            if not (u_lo < nxt < u_hi) or stale >= 3:
                nxt, stale = (u_lo + u_hi) / 2, 0
        else:
            direction = 1.0 if not finite or eps > high else -1.0  # more noise, or less
            if step is None or step * direction <= 0:
                step = direction * math.log(2)
            elif direction > 0 and u + step > math.log(MAX_SIGMA):
                # epsilon flattens out as sigma grows (RDP's has a floor), so the straight line is the
                # most optimistic estimate: the target is out of reach
                raise _OutOfReach(math.exp(u + step))
            nxt = u + direction * min(abs(step), math.log(4))
        u = nxt
    raise ConfigError(f"no noise multiplier found in {max_evaluations} evaluations of the accountant")  # pragma: no cover


def plan_key(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: Accountant, tolerance: float) -> PlanKey:
    """The cache key of a plan: its inputs, the planner's version and the versions that compute epsilon."""
    return PlanKey(float(epsilon), float(delta), float(sample_rate), int(steps), accountant.value, float(tolerance), PLANNER_VERSION, _engine())


@lru_cache(maxsize=1)
def _engine() -> str:
    from importlib.metadata import version

    return ", ".join(f"{lib} {version(lib)}" for lib in ("opacus", "numpy", "scipy"))


@lru_cache(maxsize=256)
def _search(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: Accountant, tolerance: float) -> NoisePlan:
    t0 = time.perf_counter()

    def proxy(sigma: float) -> float:
        return _proxy_epsilon(sigma, sample_rate, steps, delta)

    def exact(sigma: float) -> float:
        return epsilon_of([(sigma, sample_rate, steps)], delta, accountant)

    def ratio_step(sigma: float, eps: float) -> float:
        # the accountant's epsilon over the proxy's changes slowly with sigma: keep it, re-solve the proxy
        ratio = eps / proxy(sigma)
        return _find_sigma(lambda s: ratio * proxy(s), aim * (1 - 1e-5), aim * (1 + 1e-5), sigma)[0]

    low, aim = epsilon - tolerance, epsilon - tolerance / 2
    try:
        sigma_proxy, _, _ = _find_sigma(proxy, epsilon * (1 - 1e-4), epsilon * (1 + 1e-4), 1.0)
        guess = sigma_proxy * (_PRV_OVER_RDP if accountant is Accountant.PRV else 1.0)
        sigma, eps, evaluations = _find_sigma(exact, low, epsilon, guess, ratio_step)
    except _OutOfReach as exc:
        raise ConfigError(
            f"epsilon = {epsilon} at delta = {delta} is too small for {steps} steps at q = {sample_rate:.4g}: "
            "raise epsilon, or lower rounds, epochs or the sample rate (larger data or smaller batches)"
        ) from exc
    return NoisePlan(sigma, eps, evaluations, time.perf_counter() - t0)


def noise_plan(
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str | Accountant = Accountant.PRV,
    tolerance: float | None = None,
    cache: PlanCache | None = None,
) -> NoisePlan:
    """The plan of ``plan_noise``, with the epsilon it reaches; from ``cache`` (the node's file) when it has it."""
    check_epsilon_delta(epsilon, delta)
    if not (0 < sample_rate <= 1):
        raise ConfigError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    tol = float(tolerance) if tolerance is not None else 1e-3 * epsilon
    if not (math.isfinite(tol) and 0 < tol < epsilon):
        raise ConfigError(f"tolerance must lie in (0, epsilon), got {tolerance}")
    acc = parse_accountant(accountant)
    key = plan_key(epsilon, delta, sample_rate, steps, acc, tol)
    if cache is not None:
        t0 = time.perf_counter()
        hit = cache.get(key)
        if hit is not None:
            return NoisePlan(hit.noise_multiplier, hit.epsilon, 0, time.perf_counter() - t0)
    plan = _search(key.epsilon, key.delta, key.sample_rate, key.steps, acc, key.tolerance)
    if cache is not None:
        cache.put(key, plan)
    return plan


def plan_noise(
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str | Accountant = Accountant.PRV,
    tolerance: float | None = None,
) -> float:
    """A noise multiplier whose ``steps`` steps at ``sample_rate`` spend at most ``epsilon``, by at most ``tolerance`` less.

    The default tolerance is 0.1 % of the target, so a job ends within 0.1 % under its epsilon, never
    over: the epsilon checked is the accountant's own on the job's segment, as the ledger computes it.
    Cached within the process; ``noise_plan`` also reads and fills the node's file cache.
    """
    return noise_plan(epsilon, delta, sample_rate, steps, accountant, tolerance).noise_multiplier


def noise_for_job(
    epsilon: float,
    delta: float,
    num_samples: int,
    batch_size: int,
    epochs: int,
    rounds: int,
    accountant: str | Accountant = Accountant.PRV,
    tolerance: float | None = None,
    cache: PlanCache | None = None,
) -> tuple[float, float, int]:
    """(noise_multiplier, sample_rate, steps_per_round) for one node of a job.

    Each node knows its own n, so each node plans its own sigma such that all ``rounds`` rounds of
    ``epochs`` local epochs together reach the job's epsilon, within ``tolerance`` below it (see
    ``plan_noise``). Cached within the process and, with ``cache``, on the node's disk; a search
    takes a fraction of a second (docs/privacy.md).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive integer, got {rounds!r}")
    q, per_round = planned_steps(num_samples, batch_size, epochs)
    plan = noise_plan(float(epsilon), float(delta), q, rounds * per_round, accountant, tolerance, cache)
    return plan.noise_multiplier, q, per_round


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
    "MAX_SIGMA",
    "PLANNER_VERSION",
    "PrivateRound",
    "check_epsilon_delta",
    "check_module",
    "epsilon_of",
    "make_accountant",
    "noise_for_job",
    "noise_plan",
    "parse_accountant",
    "parse_grad_sample_mode",
    "plan_key",
    "plan_noise",
    "planned_steps",
    "private_round",
    "resolve_grad_sample_mode",
    "secret_generator",
    "zero_grad_sample",
]
