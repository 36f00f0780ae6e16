"""The node's cache of noise plans: a job's sigma is searched once per machine, not once per process.

Planning sigma runs the accountant a few times (``fedgpu.privacy.dp.plan_noise``); a node process that
restarts, or a second job with the same settings, would pay it again on its first task. The cache is
a small JSON file next to the owner's privacy ledger (``privacy.db`` -> ``privacy.plans.json``).

It can only ever save time, never change a guarantee:

* the key is every input of the search (epsilon, delta, sample rate, steps, accountant, tolerance)
  plus the planner's version and the versions of the libraries that compute epsilon, so any change
  is a miss;
* an entry stores its inputs again, the sigma and the epsilon the accountant gave for it, and a
  sha256 over all of that; an entry whose digest, inputs or epsilon (above the target, or more than
  the tolerance below it) do not check out is ignored, so a damaged file costs a search, not a
  wrong sigma;
* a file that cannot be read or parsed is ignored whole and rewritten on the next plan; a file that
  cannot be written is logged and skipped (the plan is still used).

The digest guards against damage, not against the owner: whoever can edit this file can edit the
ledger next to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedgpu.errors import StorageError
from fedgpu.files import write_atomic

log = logging.getLogger("fedgpu.privacy")

FORMAT = 1
MAX_ENTRIES = 256  # a node sees a handful of job settings; the oldest go first


@dataclass(frozen=True)
class PlanKey:
    """Everything a plan depends on; ``engine`` names the library versions that compute epsilon."""

    epsilon: float
    delta: float
    sample_rate: float
    steps: int
    accountant: str
    tolerance: float
    planner: int
    engine: str
    # the job's segments before its DP-SGD steps (the statistics round's Gaussian): the plan composes with them
    before: tuple[tuple[float, float, int], ...] = ()

    def text(self) -> str:
        # json writes floats with repr, which reads back to the same float: the key is exact
        fields: list[object] = [self.epsilon, self.delta, self.sample_rate, self.steps, self.accountant, self.tolerance, self.planner, self.engine]
        if self.before:  # keys of plans without a prefix read as before
            fields.append([list(s) for s in self.before])
        return json.dumps(fields)


@dataclass(frozen=True)
class NoisePlan:
    """A planned noise multiplier and the epsilon the accountant gives its whole job."""

    noise_multiplier: float
    epsilon: float  # the accountant's figure for (noise_multiplier, sample_rate, steps): what the ledger will compute
    evaluations: int = 0  # accountant evaluations the search took (0: read from the cache)
    seconds: float = 0.0  # time the search (or the cache lookup) took


def _digest(key: PlanKey, noise_multiplier: float, epsilon: float) -> str:
    body = json.dumps({"key": key.text(), "noise_multiplier": noise_multiplier, "epsilon": epsilon}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def plan_is_valid(key: PlanKey, noise_multiplier: float, epsilon: float) -> bool:
    """What any plan must satisfy: a positive finite sigma whose epsilon lies in [target - tolerance, target]."""
    return (
        math.isfinite(noise_multiplier)
        and noise_multiplier > 0
        and math.isfinite(epsilon)
        and key.epsilon - key.tolerance <= epsilon <= key.epsilon
    )


class PlanCache:
    """Noise plans persisted in one JSON file; read once, rewritten whole (atomically) on each new plan."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, dict[str, Any]] | None = None

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            self._entries = {}
            try:
                raw = json.loads(self.path.read_text())
            except FileNotFoundError:
                return self._entries
            except (OSError, ValueError) as exc:  # unreadable or not JSON: start afresh, rewrite on the next put
                log.warning("ignoring the noise-plan cache %s (%s); it will be rewritten", self.path, exc)
                return self._entries
            plans = raw.get("plans") if isinstance(raw, dict) and raw.get("format") == FORMAT else None
            if isinstance(plans, dict):
                self._entries = {k: v for k, v in plans.items() if isinstance(k, str) and isinstance(v, dict)}
            else:
                log.warning("ignoring the noise-plan cache %s (unknown format); it will be rewritten", self.path)
        return self._entries

    def get(self, key: PlanKey) -> NoisePlan | None:
        """The stored plan for ``key``, or None when there is none or it does not check out."""
        entry = self._load().get(key.text())
        if entry is None:
            return None
        sigma, epsilon = entry.get("noise_multiplier"), entry.get("epsilon")
        if (
            isinstance(sigma, float)
            and isinstance(epsilon, float)
            and entry.get("digest") == _digest(key, sigma, epsilon)
            and plan_is_valid(key, sigma, epsilon)
        ):
            return NoisePlan(sigma, epsilon)
        log.warning("ignoring a damaged entry of the noise-plan cache %s; planning again", self.path)
        return None

    def put(self, key: PlanKey, plan: NoisePlan) -> None:
        """Store ``plan`` (it must satisfy ``plan_is_valid``); a file that cannot be written is only logged."""
        if not plan_is_valid(key, plan.noise_multiplier, plan.epsilon):
            raise ValueError(f"refusing to cache a plan outside its target: {plan} for {key}")
        entries = self._load()
        entries.pop(key.text(), None)
        entries[key.text()] = {
            **asdict(key),
            "noise_multiplier": plan.noise_multiplier,
            "epsilon": plan.epsilon,
            "digest": _digest(key, plan.noise_multiplier, plan.epsilon),
        }
        while len(entries) > MAX_ENTRIES:
            del entries[next(iter(entries))]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"format": FORMAT, "plans": entries}, indent=1).encode(), mode=0o600)
        except (OSError, StorageError) as exc:
            log.warning("cannot write the noise-plan cache %s (%s); the plan is used but not kept", self.path, exc)


__all__ = ["FORMAT", "MAX_ENTRIES", "NoisePlan", "PlanCache", "PlanKey", "plan_is_valid"]
