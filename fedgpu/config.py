"""Job specs: typed, frozen, loaded from TOML and validated with errors that name the field.

A job file looks like ``examples/mnist1d.toml``::

    name = "mnist1d-demo"
    model = "cnn1d"
    dataset = "mnist1d"
    rounds = 15
    nodes_per_round = 5
    min_nodes = 3
    deadline_seconds = 60
    cohort_size = 1
    seed = 0

    [training]
    epochs = 2
    batch_size = 32
    lr = 0.05

    [privacy]         # optional; see docs/privacy.md
    epsilon = 8.0
    statistics_epsilon = 0.8  # with [data] standardize: the DP statistics round's own share (default 10 %)

    [encryption]      # optional; ckks is the default, bfv8 / bfv8-32 the 8-bit bandwidth modes
    scheme = "ckks"

    [aggregation]     # optional; fedavg is the default, see docs/robust.md
    rule = "median"   # fedavg | median | trimmed_mean | norm_bounded

    [schema]          # optional: the dataset's schema as data (examples/breast_cancer.toml), else a named default
    columns = ["mean radius", "mean texture"]   # or features = 30, or shape = [8, 8]
    classes = 2

    [data]            # optional
    standardize = true  # round 1 gathers encrypted per-feature sums; the model standardises with them

    [public_data]     # optional: train on the public dataset, sharded; see docs/verification.md
    replication = 0.1 # share of tasks also given to a second node and compared

    [selection]       # optional; uniform is the default, see docs/selection.md
    rule = "utility"  # uniform | utility
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgpu.aggregation import RuleParams, available_rules
from fedgpu.claims import DEFAULT_MAX_WEIGHT, MAX_MAX_WEIGHT, ClaimBounds
from fedgpu.datasets import Schema, get_schema, schema_from_dict, schema_to_dict
from fedgpu.errors import ConfigError


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    server_momentum: float = 0.0  # FedAvgM on the driver: the applied change is m <- beta m + average


@dataclass(frozen=True)
class PrivacyConfig:
    enabled: bool = False
    epsilon: float = 8.0       # target for the whole job, per data owner (record-level DP)
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    mode: str = "sample"       # "sample": DP-SGD on the node; "client": clip + noise each update
    client_clip: float = 1.0   # client mode only
    client_noise_multiplier: float = 1.0  # client mode only
    # With [data] standardize: the share of epsilon the statistics round's Gaussian mechanism is planned for
    # alone (0: 10 % of epsilon). The whole job, statistics and DP-SGD composed, still ends at epsilon.
    statistics_epsilon: float = 0.0


@dataclass(frozen=True)
class EncryptionConfig:
    scheme: str = "ckks"


@dataclass(frozen=True)
class AggregationConfig:
    """How the driver combines the round's cohort sums (fedgpu.aggregation; docs/robust.md). Valuation
    values each cohort in the game of this rule."""

    rule: str = "fedavg"  # fedavg | median | trimmed_mean | norm_bounded, or a name given to register_rule
    # trimmed_mean: the share of the round's cohorts cut from each end per coordinate, int(trim_fraction * n)
    # of n cohorts: with nodes_per_round // cohort_size = 3 it must be >= 1/3 to cut one. In [0, 0.5).
    trim_fraction: float = RuleParams.trim_fraction
    # norm_bounded: the largest L2 norm a cohort's mean update keeps; near an honest cohort's (far above it
    # the rule is FedAvg). A cohort's influence is then at most norm_bound x its share of the weight.
    norm_bound: float = RuleParams.norm_bound

    @property
    def params(self) -> RuleParams:
        return RuleParams(trim_fraction=self.trim_fraction, norm_bound=self.norm_bound)


# The default share of a DP job's epsilon its statistics round is planned for alone ([privacy] statistics_epsilon).
STATISTICS_SHARE = 0.1


# Largest relative L2 distance ||a - b|| / max(||a||, ||b||) between two honest replicas of a task
# (docs/verification.md). Calibrated on CPU by scripts/bench_verify.py: replicas of one task under
# different thread counts and encryption seeds differ by at most ~1e-6 (the CKKS noise), a node that skips
# half its steps by ~0.3 or more; 1e-3 sits far from both.
DEFAULT_REPLICA_TOLERANCE = 1e-3


@dataclass(frozen=True)
class PublicDataConfig:
    """A public-data job: every node builds the job's dataset itself and trains on the shard its task
    names, so a task can be re-executed by another node and the two updates compared (a ``[public_data]``
    table turns it on)."""

    enabled: bool = False
    samples: int = 0            # size of the generated dataset (mnist1d) or subset (digits); 0: the dataset's default
    data_seed: int = 0          # the generator's seed (mnist1d) or the permutation's (digits)
    shards: int = 0             # the training part is cut into this many shards; 0: nodes_per_round
    replication: float = 0.1    # share of tasks also given to a second node (spot checks); 0: none
    tolerance: float = DEFAULT_REPLICA_TOLERANCE
    # A node's rewards are held until one of its replicated tasks matches (then paid at once, and from
    # then on as earned); a node caught forfeits what it holds and is paid nothing more in the job.
    pay_after_check: bool = True


@dataclass(frozen=True)
class DataConfig:
    """What happens to the features before training (docs/tabular.md)."""

    # Federated standardisation: round 1 is a statistics round in which each node sends its per-feature
    # mean and mean of squares (weighted by its sample count) through the encrypted cohort sums; the
    # driver sets the model's feature_mean / feature_std from the totals and training starts in round 2.
    standardize: bool = False


@dataclass(frozen=True)
class SelectionConfig:
    """Which nodes the aggregator offers a round's tasks to (fedgpu.aggregator.selection; docs/selection.md)."""

    # uniform: at random among the eligible (the default); utility: measured value per second. utility is 2.5x
    # faster to 90 % with slow nodes at k = 1, but at k = 3 it paid free riders more (docs/selection.md).
    rule: str = "uniform"
    exploration: float = 0.2       # utility: share of the slots for nodes not tried yet, then tried ones at random
    over_select: float = 0.2       # utility: extra tasks offered, as a share of nodes_per_round
    # On a DP job over-selection is off unless the owner allows it: more tasks than planned must not be
    # what the job's epsilon was planned for.
    dp_over_selection: bool = False


@dataclass(frozen=True)
class RewardsConfig:
    pool_per_round: float = 100.0   # abstract credits shared by positive contributions each round
    budget: int = 256               # utility evaluations per round for the Shapley estimate
    # Multiples of the server's learning rate (on FedAvg of the kept cohorts; 1 in round 1, then the
    # multiple that worked last round) the shipped model and the robust rule try on a quarter of the
    # validation set. Every coalition in the game takes the server's own rate: nothing is its choice.
    step_sizes: tuple[float, ...] = (0.5, 1.0, 2.0)
    # Server momentum (the share of the last global change added; the cohorts' own component along
    # that change is dropped): valuation gives every coalition the one the server shipped last round
    # (in round 1 the free step's best), so replaying the last change earns nothing; the shipped model
    # takes its own best step and momentum of these grids.
    # With rewards on it replaces training.server_momentum, which must then be one of these.
    momentum_steps: tuple[float, ...] = (0.0, 0.5, 1.0)
    # In cohorts of k > 1 pools are paid at the job's last round: each node max(estimate - confidence *
    # standard error, 0) times the kept cohorts it was in. Higher pays free riders less often and fewer
    # honest nodes (docs/selection.md).
    confidence: float = 1.0
    # Validation samples a round is valued on, drawn afresh each round (0: all of them): a round's
    # valuation is tens of forward passes, so its cost follows this, not the held-out set's size. The
    # reported accuracy is always on the whole set. 512: what the robust rule's figures were measured
    # at (docs/robust.md), and 2x the noise floor of 2,000 samples (docs/protocol.md, "Valuation cost").
    valuation_samples: int = 512


@dataclass(frozen=True)
class JobConfig:
    model: str
    dataset: str
    name: str = "job"
    rounds: int = 10
    nodes_per_round: int = 5
    min_nodes: int = 1
    deadline_seconds: float = 120.0
    cohort_size: int = 1          # k: the driver never sees a sum of fewer than k nodes (a job file's default: 3, public data 1)
    seed: int = 0
    validation_samples: int = 0   # 0: the whole held-out split of the public dataset
    # The aggregator cancels the job when no driver has been attached for this long (nothing is paid
    # for rounds that were never published); `fedgpu train --resume` must come back within it.
    driver_lease_seconds: float = 600.0
    # Bounded claims (fedgpu.claims, docs/protocol.md): the largest FedAvg weight a node may claim (an
    # honest node claims 1e-3 per sample, so 10 is 10,000 samples) and the largest L2 norm of its change
    # (0: privacy.client_clip under client-level DP, else 100; inf: no bound). Honest nodes clamp to
    # both; the driver drops a cohort whose sum its members could not have sent within them.
    max_weight: float = DEFAULT_MAX_WEIGHT
    update_norm_bound: float = 0.0
    training: TrainingConfig = field(default_factory=TrainingConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    schema: Schema | None = None  # declared in the job file's [schema]; None: the named default `dataset`
    public_data: PublicDataConfig = field(default_factory=PublicDataConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    @property
    def dataset_schema(self) -> Schema:
        """The schema the job's data must fit: the declared one, else the named default (ConfigError if none)."""
        return get_schema(self.dataset, self.schema)

    @property
    def statistics_epsilon(self) -> float:
        """The epsilon the DP statistics round is planned for alone; 0 when the job has none (no DP or no standardize)."""
        p = self.privacy
        if not (p.enabled and self.data.standardize):
            return 0.0
        return p.statistics_epsilon or STATISTICS_SHARE * p.epsilon

    @property
    def claim_bounds(self) -> ClaimBounds:
        """The cap and B this job enforces, defaults filled in."""
        p = self.privacy
        return ClaimBounds.declared(self.max_weight, self.update_norm_bound, p.client_clip if p.enabled and p.mode == "client" else None)

    def _check_ckks_headroom(self, need: Callable[[bool, str, str], None]) -> None:
        """Every summand of a cohort sum is ``weight x change`` with weight <= max_weight and ||change|| <= B,
        so no coordinate of it exceeds max_weight x B; the largest sum must still decrypt (a wrapped sum is
        garbage that costs its honest members their round)."""
        from fedgpu.aggregator.cohorts import max_sum_members
        from fedgpu.crypto.ckks_format import CkksParams

        b = self.claim_bounds
        if not math.isfinite(b.update_norm_bound):
            return  # no bound declared: nodes check each value against the headroom, nothing more is known
        members = max_sum_members(self.cohort_size, self.nodes_per_round)
        worst, headroom = members * b.max_weight * b.update_norm_bound, CkksParams().max_abs_sum
        need(
            worst <= headroom, "max_weight",
            f"a cohort sum of up to {members} updates, each up to max_weight {b.max_weight:g} x update_norm_bound {b.update_norm_bound:g}, "
            f"can reach {worst:.3g}, past ckks's headroom {headroom:.3g}: lower max_weight or update_norm_bound, or cohort_size",
        )

    def validate(self, check_registry: bool = True) -> JobConfig:
        """Check every field; ``check_registry=False`` skips the model registry (the aggregator has none)."""
        from fedgpu.crypto import SCHEMES, max_summands
        from fedgpu.datasets import SCHEMAS, available_schemas

        def need(cond: bool, fld: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{fld}: {msg}")

        if check_registry:
            from fedgpu.models import available_models

            need(self.model in available_models(), "model", f"{self.model!r} is unknown; allowed: {', '.join(available_models())}")
        else:
            need(bool(self.model) and len(self.model) <= 200, "model", "must be a model name")
        if self.schema is not None:
            need(self.schema.name == self.dataset, "schema.name", f"{self.schema.name!r} must be the job's dataset {self.dataset!r}")
        elif check_registry:
            known = available_schemas()
            need(self.dataset in known, "dataset", f"{self.dataset!r} is unknown; allowed: {', '.join(sorted(known))}, or declare it in a [schema] table")
        else:
            need(self.dataset in SCHEMAS, "dataset", f"{self.dataset!r} is not a built-in schema; the job spec must carry its schema")
        if self.data.standardize:
            if self.privacy.enabled:  # the statistics round is a Gaussian mechanism on each node (docs/tabular.md)
                need(
                    self.privacy.mode == "sample", "data.standardize",
                    "the DP statistics round protects records (privacy.mode = \"sample\"), not whole nodes, whose sums have no bound: "
                    "use mode = \"sample\", or standardise the features before the job and set standardize = false",
                )
                need(
                    bool(self.dataset_schema.ranges), "data.standardize",
                    "a DP statistics round needs every feature's public range to bound what one record adds to the sums: "
                    "declare ranges = [[low, high], ...] in the job's [schema] (or turn standardize off)",
                )
            need(self.rounds >= 2, "data.standardize", f"round 1 is the statistics round: rounds must be >= 2, got {self.rounds}")
            need(
                self.encryption.scheme in ("ckks", "none"), "data.standardize",
                f"encryption.scheme = {self.encryption.scheme!r} clips values to its 8-bit range, which would spoil the feature statistics; use ckks",
            )
        need(1 <= self.rounds <= 100_000, "rounds", f"must be in 1..100000, got {self.rounds}")
        need(1 <= self.nodes_per_round <= 100_000, "nodes_per_round", f"must be >= 1, got {self.nodes_per_round}")
        need(1 <= self.min_nodes <= self.nodes_per_round, "min_nodes", f"must be in 1..nodes_per_round ({self.nodes_per_round}), got {self.min_nodes}")
        need(1 <= self.cohort_size <= self.min_nodes, "cohort_size", f"must be in 1..min_nodes ({self.min_nodes}), got {self.cohort_size}")
        need(0 < self.deadline_seconds <= 86_400, "deadline_seconds", f"must be in (0, 86400], got {self.deadline_seconds}")
        need(1 <= self.driver_lease_seconds <= 30 * 86_400, "driver_lease_seconds", f"must be in [1, 2592000], got {self.driver_lease_seconds}")
        need(
            math.isfinite(self.max_weight) and 0 < self.max_weight <= MAX_MAX_WEIGHT, "max_weight",
            f"must be in (0, {MAX_MAX_WEIGHT:g}], got {self.max_weight}",
        )
        need(
            self.update_norm_bound >= 0, "update_norm_bound",
            f"must be > 0 (inf: no bound), or 0 for the default (privacy.client_clip under client-level DP, else 100); got {self.update_norm_bound}",
        )
        t = self.training
        need(1 <= t.epochs <= 1000, "training.epochs", f"must be in 1..1000, got {t.epochs}")
        need(1 <= t.batch_size <= 1_000_000, "training.batch_size", f"must be >= 1, got {t.batch_size}")
        need(math.isfinite(t.lr) and 0 < t.lr <= 100, "training.lr", f"must be in (0, 100], got {t.lr}")
        need(0 <= t.momentum < 1, "training.momentum", f"must be in [0, 1), got {t.momentum}")
        p = self.privacy
        if p.enabled:
            need(0 < p.epsilon <= 100, "privacy.epsilon", f"must be in (0, 100], got {p.epsilon}")
            need(0 < p.delta < 1e-2, "privacy.delta", f"must be in (0, 0.01), got {p.delta}")
            need(p.max_grad_norm > 0, "privacy.max_grad_norm", f"must be > 0, got {p.max_grad_norm}")
            need(p.accountant in ("prv", "rdp"), "privacy.accountant", f"allowed values are prv, rdp; got {p.accountant!r}")
            need(p.mode in ("sample", "client"), "privacy.mode", f"allowed values are sample, client; got {p.mode!r}")
            need(
                math.isfinite(p.statistics_epsilon) and 0 <= p.statistics_epsilon < p.epsilon, "privacy.statistics_epsilon",
                f"must be in [0, epsilon = {p.epsilon:g}) (0: {STATISTICS_SHARE:.0%} of epsilon), got {p.statistics_epsilon}",
            )
            need(
                p.statistics_epsilon == 0 or self.data.standardize, "privacy.statistics_epsilon",
                "only a job with [data] standardize = true has a statistics round: remove it, or turn standardize on",
            )
        need(self.encryption.scheme in SCHEMES, "encryption.scheme", f"allowed values are {', '.join(SCHEMES)}; got {self.encryption.scheme!r}")
        limit = max_summands(self.encryption.scheme)
        need(
            limit is None or self.nodes_per_round <= limit, "nodes_per_round",
            f"encryption.scheme = {self.encryption.scheme!r} adds at most {limit} updates into one sum; lower it to {limit} or use ckks",
        )
        if self.encryption.scheme == "ckks":
            self._check_ckks_headroom(need)
        need(0 <= self.training.server_momentum < 1, "training.server_momentum", f"must be in [0, 1), got {self.training.server_momentum}")
        need(self.rewards.pool_per_round >= 0, "rewards.pool_per_round", "must be >= 0")
        need(
            len(self.rewards.step_sizes) >= 1 and all(isinstance(e, (int, float)) and 0 < e <= 10 for e in self.rewards.step_sizes),
            "rewards.step_sizes", f"must be a non-empty list of numbers in (0, 10], got {list(self.rewards.step_sizes)}",
        )
        need(
            len(self.rewards.momentum_steps) >= 1 and all(isinstance(b, (int, float)) and 0 <= b <= 1 for b in self.rewards.momentum_steps),
            "rewards.momentum_steps", f"must be a non-empty list of numbers in [0, 1], got {list(self.rewards.momentum_steps)}",
        )
        if self.rewards.pool_per_round > 0 and self.training.server_momentum > 0:
            need(
                self.training.server_momentum in self.rewards.momentum_steps, "training.server_momentum",
                f"with rewards on, the server momentum is chosen each round from rewards.momentum_steps "
                f"{list(self.rewards.momentum_steps)}; add {self.training.server_momentum} there or set server_momentum to 0",
            )
        need(1 <= self.rewards.budget <= 100_000, "rewards.budget", "must be in 1..100000")
        need(self.rewards.valuation_samples == 0 or self.rewards.valuation_samples >= 2, "rewards.valuation_samples", "must be 0 (all) or >= 2")
        need(0 <= self.rewards.confidence <= 10, "rewards.confidence", f"must be in [0, 10], got {self.rewards.confidence}")
        a = self.aggregation
        if check_registry:
            need(a.rule in available_rules(), "aggregation.rule", f"allowed values are {', '.join(available_rules())}; got {a.rule!r}")
        else:
            need(bool(a.rule) and len(a.rule) <= 200, "aggregation.rule", "must be a rule name")
        need(math.isfinite(a.trim_fraction) and 0 <= a.trim_fraction < 0.5, "aggregation.trim_fraction", f"must be in [0, 0.5), got {a.trim_fraction}")
        need(math.isfinite(a.norm_bound) and a.norm_bound > 0, "aggregation.norm_bound", f"must be a finite number > 0, got {a.norm_bound}")
        if a.rule == "trimmed_mean":
            most = self.nodes_per_round // self.cohort_size  # the most cohorts a round has
            need(most >= 3, "aggregation.rule", f"trimmed_mean needs at least 3 cohorts a round, nodes_per_round // cohort_size is {most}; use median or more nodes")
            need(
                int(a.trim_fraction * most) >= 1, "aggregation.trim_fraction",
                f"{a.trim_fraction} of at most {most} cohorts a round cuts none (int({a.trim_fraction} x {most}) = 0): raise it to at least 1/{most}",
            )
        d = self.public_data
        if d.enabled:
            need(0 <= d.samples <= 10_000_000, "public_data.samples", f"must be in 0..10000000 (0: the dataset's default), got {d.samples}")
            need(0 <= d.data_seed < 2**63, "public_data.data_seed", f"must be in 0..2**63-1, got {d.data_seed}")
            need(0 <= d.shards <= 100_000, "public_data.shards", f"must be in 0..100000 (0: nodes_per_round), got {d.shards}")
            need(math.isfinite(d.replication) and 0 <= d.replication <= 1, "public_data.replication", f"must be in [0, 1], got {d.replication}")
            need(math.isfinite(d.tolerance) and 0 < d.tolerance < 1, "public_data.tolerance", f"must be in (0, 1), got {d.tolerance}")
            need(
                not self.privacy.enabled, "public_data",
                "a public-data job trains on published data, which needs no DP (and DP noise would make replicas differ): remove [privacy]",
            )
            need(
                self.cohort_size == 1, "cohort_size",
                f"a public-data job's updates reveal nothing private, so the driver compares single updates: set cohort_size = 1 (got {self.cohort_size})",
            )
        sel = self.selection
        need(sel.rule in ("utility", "uniform"), "selection.rule", f"allowed values are utility, uniform; got {sel.rule!r}")
        need(0 <= sel.exploration <= 1, "selection.exploration", f"must be in [0, 1], got {sel.exploration}")
        need(0 <= sel.over_select <= 1, "selection.over_select", f"must be in [0, 1], got {sel.over_select}")
        return self


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'job'}: expected a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown field; allowed: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = fields[name]
        fname = f"{where}.{name}" if where else name
        sub = {
            "training": TrainingConfig, "privacy": PrivacyConfig, "encryption": EncryptionConfig, "rewards": RewardsConfig,
            "aggregation": AggregationConfig, "data": DataConfig, "public_data": PublicDataConfig, "selection": SelectionConfig,
        }
        if cls is JobConfig and name == "schema":
            value = schema_from_dict(value, str(data.get("dataset", "")))
        elif cls is JobConfig and name in sub:
            value = _build(sub[name], value, name)
            if name in ("privacy", "public_data") and "enabled" not in data[name]:
                value = dataclasses.replace(value, enabled=True)  # a [privacy] table turns DP on, a [public_data] table public data
        else:
            kinds: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "str": str, "bool": bool}
            want = kinds.get(str(f.type))
            if want is not None and (not isinstance(value, want) or (str(f.type) != "bool" and isinstance(value, bool))):
                raise ConfigError(f"{fname}: expected {f.type}, got {value!r}")
            if str(f.type) == "float":
                value = float(value)
            elif str(f.type).startswith("tuple") and isinstance(value, list):
                value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or 'job'}: {exc}") from exc


# A job file without cohort_size gets k by the kind of data: private data is only ever seen by the driver
# in sums of PRIVATE_COHORT_SIZE nodes; public-data updates reveal nothing private, and spot checks compare
# single updates. min_nodes, when absent too, is raised to k so that the default is a valid job.
PRIVATE_COHORT_SIZE = 3
PUBLIC_COHORT_SIZE = 1


def job_from_dict(data: dict[str, Any], check_registry: bool = True) -> JobConfig:
    job: JobConfig = _build(JobConfig, data, "")
    if "cohort_size" not in data:
        k = PUBLIC_COHORT_SIZE if job.public_data.enabled else PRIVATE_COHORT_SIZE
        if k > job.nodes_per_round:
            raise ConfigError(
                f"cohort_size: a private-data job defaults to cohort_size = {k}, more than nodes_per_round = {job.nodes_per_round}; "
                f"raise nodes_per_round to >= {k}, or set cohort_size = 1 if the job's owner accepts that the driver sees single updates"
            )
        if "min_nodes" in data and job.min_nodes < k:
            raise ConfigError(
                f"min_nodes: a private-data job defaults to cohort_size = {k}, so min_nodes must be >= {k} (got {job.min_nodes}); "
                "raise it, or set cohort_size explicitly"
            )
        job = dataclasses.replace(job, cohort_size=k, min_nodes=max(job.min_nodes, k))
    return job.validate(check_registry)


def job_to_dict(job: JobConfig) -> dict[str, Any]:
    """The plain-data form ``job_from_dict`` reads back (what a driver keeps to resume its job)."""
    out = dataclasses.asdict(job)
    if job.schema is None:
        del out["schema"]
    else:
        out["schema"] = schema_to_dict(job.schema)
    return out


def load_job(path: str | Path) -> JobConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"job file {p} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from exc
    return job_from_dict(data)


__all__ = [
    "AggregationConfig",
    "DEFAULT_REPLICA_TOLERANCE",
    "DataConfig",
    "EncryptionConfig",
    "JobConfig",
    "PRIVATE_COHORT_SIZE",
    "PUBLIC_COHORT_SIZE",
    "PrivacyConfig",
    "PublicDataConfig",
    "RewardsConfig",
    "STATISTICS_SHARE",
    "SelectionConfig",
    "TrainingConfig",
    "job_from_dict",
    "job_to_dict",
    "load_job",
]
