"""A round in flight: its tasks, and one running sum per (cohort, chunk) spooled to disk."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedgpu import crypto
from fedgpu.proto.fedgpu.v1 import node_pb2


@dataclass
class TaskState:
    task: node_pb2.Task
    node_id: str
    cohort: int
    status: str = "assigned"  # assigned | uploading | complete | declined | failed
    received: int = 0
    offsets: list[tuple[int, int]] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0
    train_seconds: float = 0.0
    epsilon: float | None = None
    message: str = ""


@dataclass
class RoundState:
    job_id: str
    round: int
    attempt: int
    attempt_id: str  # unique across restarts: names the attempt's spool folder
    scheme: str
    opened_at: float
    deadline: float
    adder: crypto.Adder
    cohorts: list[list[str]]
    tasks: dict[str, TaskState]
    num_chunks: int
    acc_dir: Path  # one .npy accumulator per (cohort, chunk): memory stays O(chunk) whatever the node count
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def acc_path(self, cohort: int, chunk: int) -> Path:
        return self.acc_dir / f"c{cohort}-{chunk}.npy"

    def accumulate(self, cohort: int, chunk: int, payload: bytes) -> None:
        """Add one verified chunk into its cohort's running sum on disk (atomic replace)."""
        p = self.acc_path(cohort, chunk)
        acc = np.load(p, allow_pickle=False) if p.exists() else self.adder.zero()
        acc = self.adder.add(acc, payload)
        tmp = p.with_suffix(".tmp.npy")
        np.save(tmp, acc, allow_pickle=False)
        tmp.replace(p)

    def check_done(self) -> None:
        if all(t.status in ("complete", "declined", "failed") for t in self.tasks.values()):
            self.done.set()
