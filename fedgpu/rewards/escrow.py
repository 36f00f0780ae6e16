"""Paying a cohort's members only for what the evidence attributes to them.

Under encryption a round values cohorts, not nodes. Splitting a cohort's reward equally until the
per-node estimates separate the members pays free riders for the rounds before they are found out.
So a cohort's reward is held here, and each member is paid its part (the split by the *current*
estimates) in the first round in which it takes part and its estimate's lower bound is above 0.
What is attributed to members that never prove a positive value is never paid. A cohort of one is
its own evidence and is paid at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping, Sequence


@dataclass
class Credit:
    round: int
    members: tuple[str, ...]
    amount: float
    left: float
    paid: set[str] = field(default_factory=set)


class Escrow:
    def __init__(self) -> None:
        self.credits: list[Credit] = []

    def add(self, round: int, members: Sequence[str], amount: float) -> None:
        if not (math.isfinite(amount) and amount >= 0):
            raise ValueError(f"a credit must be finite and >= 0, got {amount}")
        if amount > 0:
            self.credits.append(Credit(int(round), tuple(members), float(amount), float(amount)))

    def release(self, estimates: Mapping[str, float], lower: Mapping[str, float], present: Collection[str]) -> dict[str, float]:
        """Pay every present member whose lower bound is > 0 its current share of each credit it is owed."""
        out: dict[str, float] = {}
        for c in self.credits:
            if c.left <= 0:
                continue
            weights = {m: max(estimates.get(m, 0.0), 0.0) for m in c.members}
            total = math.fsum(weights.values())
            for m in c.members:
                if m in c.paid or m not in present:
                    continue
                if len(c.members) == 1:
                    share = c.left
                elif lower.get(m, -math.inf) > 0 and total > 0:
                    share = min(c.amount * weights[m] / total, c.left)
                else:
                    continue
                c.paid.add(m)
                c.left -= share
                out[m] = out.get(m, 0.0) + share
        self.credits = [c for c in self.credits if c.left > 1e-12 and len(c.paid) < len(c.members)]
        return out

    @property
    def held(self) -> float:
        return math.fsum(c.left for c in self.credits)

    def state(self) -> list[dict[str, Any]]:
        return [{"round": c.round, "members": list(c.members), "amount": c.amount, "left": c.left, "paid": sorted(c.paid)} for c in self.credits]


__all__ = ["Credit", "Escrow"]
