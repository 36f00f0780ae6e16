"""A job's per-round figures, flat: what metrics.csv holds and report.html draws.

Everything here reads the report dict the driver writes (report.json) and nothing else, so a report
from an earlier run, or one whose job failed half-way, renders the same way.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# How a round's wall-clock time splits up. Nodes work in parallel, so training and upload are the
# slowest node's; "other" is the rest of the aggregator's round time (waiting for nodes to pull,
# model downloads, planning the DP noise and encrypting on the nodes).
TIME_PARTS = ("training", "upload", "aggregation", "driver", "other")

COLUMNS = (
    "round", "accuracy", "loss", "participants", "cohorts", "bytes_up", "bytes_down", "round_seconds",
    *(f"{part}_seconds" for part in TIME_PARTS), "epsilon_max", "rewards_paid", "server_step", "server_momentum", "excluded_cohorts",
)


def _max(values: Mapping[str, float] | None) -> float:
    return max((float(v) for v in (values or {}).values()), default=0.0)


def time_split(rec: Mapping[str, Any]) -> dict[str, float]:
    """Seconds of one round per part of :data:`TIME_PARTS`."""
    training = _max(rec.get("train_seconds"))
    upload = _max(rec.get("upload_seconds"))
    aggregation = float(rec.get("aggregation_seconds") or 0.0)
    driver = float(rec.get("driver_seconds") or 0.0) + float(rec.get("publish_seconds") or 0.0)
    other = max(0.0, float(rec.get("seconds") or 0.0) - training - upload - aggregation)
    return {"training": training, "upload": upload, "aggregation": aggregation, "driver": driver, "other": other}


def round_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per applied round, with the columns of :data:`COLUMNS`."""
    rows = []
    for rec in report.get("rounds") or []:
        split = time_split(rec)
        rewards = (rec.get("valuation") or {}).get("rewards") or {}
        rows.append({
            "round": rec["round"],
            "accuracy": rec.get("accuracy"),
            "loss": rec.get("loss"),
            "participants": len(rec.get("participants") or []),
            "cohorts": len(rec.get("cohorts") or []),
            "bytes_up": rec.get("bytes_up", 0),
            "bytes_down": rec.get("bytes_down", 0),
            "round_seconds": float(rec.get("seconds") or 0.0) + split["driver"],
            **{f"{part}_seconds": split[part] for part in TIME_PARTS},
            "epsilon_max": _max(rec.get("epsilon")) if rec.get("epsilon") else None,
            "rewards_paid": sum(float(v) for v in rewards.values()),
            "server_step": rec.get("server_step"),
            "server_momentum": rec.get("server_momentum"),
            "excluded_cohorts": len(rec.get("excluded_cohorts") or []),
        })
    return rows


def node_label(report: Mapping[str, Any], node_id: str) -> str:
    """What people call a node: the name it registered with (--name), else its id."""
    name = ((report.get("nodes") or {}).get(node_id) or {}).get("name")
    return str(name) if name else node_id


def write_csv(path: Path, report: Mapping[str, Any]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for row in round_rows(report):
            w.writerow({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


__all__ = [
    "COLUMNS",
    "TIME_PARTS",
    "node_label",
    "round_rows",
    "time_split",
    "write_csv",
]
