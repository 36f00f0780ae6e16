"""Rewards by measured utility: Shapley over cohorts, per-node estimates, payouts and the ledger's rules.

A leaf package: it imports torch, numpy, cryptography and the other leaves (the aggregation rules, the
flat-vector order of fedgpu.models), never a role (aggregator, node, driver).

* :mod:`~fedgpu.rewards.shapley` — exact and sampled Shapley values of a small game;
* :mod:`~fedgpu.rewards.utility` — the round's game: cohort sums valued on the driver's validation set;
* :mod:`~fedgpu.rewards.estimate` — per-node values across rounds, cohort splits, reputation;
* :mod:`~fedgpu.rewards.payout` — a pool shared by positive value;
* :mod:`~fedgpu.rewards.chain` — the hash-chained ledger rows, signed heads and receipts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedgpu.rewards.chain import (
    GENESIS,
    LedgerEntry,
    LedgerRow,
    Receipt,
    build_rows,
    canonical_json,
    digest,
    entry_hash,
    head_of,
    issue_receipt,
    public_key_bytes,
    sign_head,
    verify_chain,
    verify_head,
    verify_ledger,
)
from fedgpu.rewards.estimate import (
    NodeValueEstimator,
    Observation,
    Reputation,
    proven_credit,
    round_observations,
    split_cohort_value,
)
from fedgpu.rewards.payout import payout, payout_units
from fedgpu.rewards.shapley import (
    ShapleyResult,
    decode_utilities,
    encode_utilities,
    shapley,
    shapley_exact,
    shapley_sampled,
)

# The game needs torch; the ledger rules (used by the aggregator, which never imports torch) do not.
_LAZY = {"CohortGame", "flatten_params", "load_flat", "noise_floor", "zero_below_floor"}
if TYPE_CHECKING:  # what __getattr__ hands out, for the type checker
    from fedgpu.rewards.utility import CohortGame, flatten_params, load_flat, noise_floor, zero_below_floor


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from fedgpu.rewards import utility

        return getattr(utility, name)
    raise AttributeError(f"module 'fedgpu.rewards' has no attribute {name!r}")


__all__ = [
    "CohortGame",
    "GENESIS",
    "LedgerEntry",
    "LedgerRow",
    "NodeValueEstimator",
    "Observation",
    "Receipt",
    "Reputation",
    "ShapleyResult",
    "build_rows",
    "canonical_json",
    "decode_utilities",
    "digest",
    "encode_utilities",
    "entry_hash",
    "flatten_params",
    "head_of",
    "issue_receipt",
    "load_flat",
    "noise_floor",
    "payout",
    "payout_units",
    "proven_credit",
    "public_key_bytes",
    "round_observations",
    "shapley",
    "shapley_exact",
    "shapley_sampled",
    "sign_head",
    "split_cohort_value",
    "verify_chain",
    "verify_head",
    "verify_ledger",
    "zero_below_floor",
]
