"""What report.json says of each round and of each node, built from the round's event, its sums and
its valuation: the driver's own account, which its state file carries across a resume."""

from __future__ import annotations

from typing import Any

from fedgpu.driver.sums import CohortSum, DroppedCohort
from fedgpu.driver.valuation import RoundValuation
from fedgpu.wire.records import JobEvent


def round_record(
    ev: JobEvent, accuracy: float, loss: float, driver_seconds: float, sums: list[CohortSum], dropped: list[DroppedCohort],
    valuation: RoundValuation | None, *, client_epsilon: float | None, model_bytes: int, server_momentum: float,
) -> dict[str, Any]:
    """The round's entry in report.json (cohort indices are the round's own, dropped cohorts included)."""
    dropped_at = {d.cohort for d in dropped}
    rec: dict[str, Any] = {
        "round": ev.round,
        "accuracy": accuracy,
        "loss": loss,
        "participants": list(ev.participants),
        "cohorts": [list(c) for c in ev.cohorts],
        "seconds": ev.seconds,
        "driver_seconds": driver_seconds,
        "bytes_up": int(ev.bytes_up),
        "bytes_down": int(ev.bytes_down),
        "bytes_up_by_node": dict(ev.bytes_up_by_node),
        "bytes_down_by_node": dict(ev.bytes_down_by_node),
        "train_seconds": dict(ev.train_seconds),
        "node_status": dict(ev.node_status),
        "epsilon": dict(ev.epsilon),
        "client_epsilon": client_epsilon,
        "model_bytes": model_bytes,
        "cohort_weights": [w for _, w in sorted([(s.cohort, s.weight) for s in sums] + [(d.cohort, d.weight) for d in dropped])],
        "excluded_cohorts": [  # not in the round's model: left out by the valuer, or dropped
            i for i in range(len(sums) + len(dropped)) if i in dropped_at or (valuation is not None and i not in valuation.kept)
        ],
        "dropped_cohorts": [d.to_dict() for d in dropped],
        "server_step": valuation.step if valuation is not None else 1.0,
        "server_momentum": valuation.momentum if valuation is not None else server_momentum,
        "node_names": dict(ev.node_names),
        "upload_seconds": dict(ev.upload_seconds),
        "aggregation_seconds": ev.aggregation_seconds,
        "encrypt_seconds": dict(ev.encrypt_seconds),
    }
    if valuation is not None:
        rec["valuation"] = {
            "cohort_values": valuation.cohort_values,
            "node_values": valuation.node_values,
            "rewards": valuation.rewards,
            "evaluations": valuation.evaluations,
            "noise_floor": valuation.floor,
            "seconds": valuation.seconds,
        }
    return rec


def tally_nodes(node_info: dict[str, dict[str, Any]], ev: JobEvent, valuation: RoundValuation | None) -> None:
    """Add the round to each node's running account: rounds taken part in, last epsilon, name, reward."""

    def info(node_id: str) -> dict[str, Any]:
        return node_info.setdefault(node_id, {"rounds": 0, "epsilon": None, "reward": None})

    for node_id in ev.participants:
        info(node_id)["rounds"] += 1
    for node_id, eps in ev.epsilon.items():
        info(node_id)["epsilon"] = eps
    for node_id, name in ev.node_names.items():
        if node_id in node_info:
            node_info[node_id]["name"] = name
    if valuation is not None:
        for node_id, r in valuation.rewards.items():
            info(node_id)["reward"] = (info(node_id)["reward"] or 0.0) + r


__all__ = ["round_record", "tally_nodes"]
