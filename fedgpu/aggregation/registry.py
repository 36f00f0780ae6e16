"""Rules by name: what the job file's ``[aggregation] rule`` picks (Opacus' accountant registry style).

    rule = get_rule("trimmed_mean", RuleParams(trim_fraction=0.34))
    register_rule("krum", lambda params: MyKrum(), force=False)

A rule is registered as a factory taking the job's :class:`RuleParams` (each rule reads the ones it
has), so the job file and the wire carry one small, fixed set of parameters. The built-ins are
``fedavg``, ``median``, ``trimmed_mean`` and ``norm_bounded``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fedgpu.aggregation.fedavg import FedAvg
from fedgpu.aggregation.interface import AggregationRule
from fedgpu.aggregation.robust import CoordinateMedian, NormBoundedMean, TrimmedMean
from fedgpu.errors import ConfigError


@dataclass(frozen=True)
class RuleParams:
    """The parameters a job gives its rule (``[aggregation]`` in the job file, ``AggregationPlan`` on the wire)."""

    # trimmed_mean: the share of the round's cohorts cut from each end, per coordinate: int(trim_fraction * n)
    # of n cohorts, so with 3 cohorts it must be at least 1/3 to cut anything. In [0, 0.5).
    trim_fraction: float = 0.2
    # norm_bounded: the largest L2 norm a cohort's mean update S / W keeps (longer ones are scaled down to it).
    # Set it near an honest cohort's norm: far above, nothing is clipped and the rule is FedAvg.
    norm_bound: float = 1.0


RuleFactory = Callable[[RuleParams], AggregationRule]
_REGISTRY: dict[str, RuleFactory] = {}


def register_rule(name: str, factory: RuleFactory, *, force: bool = False) -> None:
    """Make ``name`` a rule a job can pick; ``force=True`` replaces a rule already registered."""
    if not isinstance(name, str) or not name or name.strip() != name or len(name) > 200:
        raise ConfigError(f"aggregation.rule: a rule name must be a non-empty string without surrounding spaces, got {name!r}")
    if name in _REGISTRY and not force:
        raise ConfigError(f"aggregation.rule: {name!r} is already registered; pass force=True to replace it")
    _REGISTRY[name] = factory


def get_rule(name: str, params: RuleParams | None = None) -> AggregationRule:
    """The rule ``name`` with the job's parameters (their defaults without ``params``)."""
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ConfigError(f"aggregation.rule: allowed values are {', '.join(available_rules())}; got {name!r}")
    try:
        return factory(params if params is not None else RuleParams())
    except ConfigError as exc:
        raise ConfigError(f"aggregation.{exc}") from exc  # the rule names its parameter; the job file nests it


def available_rules() -> tuple[str, ...]:
    """Registered rule names, the built-ins first, in registration order."""
    return tuple(_REGISTRY)


register_rule("fedavg", lambda params: FedAvg())
register_rule("median", lambda params: CoordinateMedian())
register_rule("trimmed_mean", lambda params: TrimmedMean(params.trim_fraction))
register_rule("norm_bounded", lambda params: NormBoundedMean(params.norm_bound))


__all__ = ["RuleFactory", "RuleParams", "available_rules", "get_rule", "register_rule"]
