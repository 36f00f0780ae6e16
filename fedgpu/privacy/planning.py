"""Planning a job's noise: the noise multiplier that brings a node's whole job to exactly its epsilon.

Every node derives its own sigma from its own sample rate and the steps it will take over all of the
job's rounds, so the job ends at the target on every node whatever its data size. The search guesses
sigma with a cheap RDP bound and confirms it with the job's own accountant (PRV by default), so the
plan's epsilon is the ledger's figure, never above the target; plans are cached in the process and,
given a ``PlanCache``, on the node's disk (docs/privacy.md).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from functools import lru_cache

from fedgpu.errors import ConfigError
from fedgpu.privacy.dp import Accountant, check_epsilon_delta, epsilon_of, parse_accountant, planned_steps
from fedgpu.privacy.plan_cache import NoisePlan, PlanCache, PlanKey

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


_Before = tuple[tuple[float, float, int], ...]  # segments a job runs before its DP-SGD steps (the statistics round)


def _proxy_epsilon(sigma: float, sample_rate: float, steps: int, delta: float, before: _Before = ()) -> float:
    """RDP over integer orders only: a few ms, a little looser than Opacus's RDP. Only ever a guess."""
    from opacus.accountants.analysis import rdp as rdp_analysis

    rdp = rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=sigma, steps=steps, orders=_PROXY_ORDERS)
    for z, q, n in before:
        rdp = rdp + rdp_analysis.compute_rdp(q=q, noise_multiplier=z, steps=n, orders=_PROXY_ORDERS)
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


def plan_key(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: Accountant, tolerance: float, before: _Before = ()) -> PlanKey:
    """The cache key of a plan: its inputs, the planner's version and the versions that compute epsilon."""
    prefix = tuple((float(z), float(q), int(n)) for z, q, n in before)
    return PlanKey(float(epsilon), float(delta), float(sample_rate), int(steps), accountant.value, float(tolerance), PLANNER_VERSION, _engine(), prefix)


@lru_cache(maxsize=1)
def _engine() -> str:
    from importlib.metadata import version

    return ", ".join(f"{lib} {version(lib)}" for lib in ("opacus", "numpy", "scipy"))


@lru_cache(maxsize=256)
def _search(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: Accountant, tolerance: float, before: _Before = ()) -> NoisePlan:
    t0 = time.perf_counter()
    if before and epsilon_of(list(before), delta, accountant) >= epsilon - tolerance:
        raise ConfigError(
            f"the job's statistics round alone spends epsilon {epsilon_of(list(before), delta, accountant):.4g} of its {epsilon:g}: "
            "nothing is left for training; lower privacy.statistics_epsilon or raise privacy.epsilon"
        )

    def proxy(sigma: float) -> float:
        return _proxy_epsilon(sigma, sample_rate, steps, delta, before)

    def exact(sigma: float) -> float:
        return epsilon_of([*before, (sigma, sample_rate, steps)], delta, accountant)

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
    before: _Before = (),
) -> NoisePlan:
    """The plan of ``plan_noise``, with the epsilon it reaches; from ``cache`` (the node's file) when it has it.
    ``before``: segments the job runs first (its statistics round); the plan's epsilon is that of them and the steps composed."""
    check_epsilon_delta(epsilon, delta)
    if not (0 < sample_rate <= 1):
        raise ConfigError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    tol = float(tolerance) if tolerance is not None else 1e-3 * epsilon
    if not (math.isfinite(tol) and 0 < tol < epsilon):
        raise ConfigError(f"tolerance must lie in (0, epsilon), got {tolerance}")
    acc = parse_accountant(accountant)
    key = plan_key(epsilon, delta, sample_rate, steps, acc, tol, before)
    if cache is not None:
        t0 = time.perf_counter()
        hit = cache.get(key)
        if hit is not None:
            return NoisePlan(hit.noise_multiplier, hit.epsilon, 0, time.perf_counter() - t0)
    plan = _search(key.epsilon, key.delta, key.sample_rate, key.steps, acc, key.tolerance, key.before)
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
    before: _Before = (),
) -> tuple[float, float, int]:
    """(noise_multiplier, sample_rate, steps_per_round) for one node of a job.

    Each node knows its own n, so each node plans its own sigma such that all ``rounds`` rounds of
    ``epochs`` local epochs together reach the job's epsilon, within ``tolerance`` below it (see
    ``plan_noise``). ``before``: the job's segments ahead of its DP-SGD rounds (the statistics round,
    ``statistics_noise``): the rounds get what is left, the whole job ends at ``epsilon``. Cached within
    the process and, with ``cache``, on the node's disk; a search takes a fraction of a second (docs/privacy.md).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive integer, got {rounds!r}")
    q, per_round = planned_steps(num_samples, batch_size, epochs)
    plan = noise_plan(float(epsilon), float(delta), q, rounds * per_round, accountant, tolerance, cache, before)
    return plan.noise_multiplier, q, per_round


def statistics_noise(epsilon: float, delta: float, accountant: str | Accountant = Accountant.PRV, cache: PlanCache | None = None) -> float:
    """The noise multiplier of a DP statistics round: one Gaussian release (sample rate 1, one step) at ``epsilon``.

    It depends on the job's settings only, not on a node's data size, so the driver derives the same
    figure as every node. Its ledger segment is ``(noise_multiplier, 1.0, 1)``.
    """
    return noise_plan(float(epsilon), float(delta), 1.0, 1, accountant, None, cache).noise_multiplier


__all__ = [
    "MAX_SIGMA",
    "PLANNER_VERSION",
    "noise_for_job",
    "noise_plan",
    "plan_key",
    "plan_noise",
    "statistics_noise",
]
