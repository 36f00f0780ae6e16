"""A round attempt in flight: its tasks, and one running sum per (cohort, chunk) spooled to disk.

The state of one attempt and nothing else, shared by the two parts that change it: ``uploads``
(a task's upload, folded into its cohort's sum) and ``rounds`` (opening and closing the attempt).
It exists only inside the process that opened it: a restart redoes the round from nothing.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedgpu import crypto
from fedgpu.aggregator.replication import ReplicaPlan
from fedgpu.wire.records import Task


class TaskStatus(enum.Enum):
    ASSIGNED = "assigned"
    UPLOADING = "uploading"
    COMPLETE = "complete"
    DECLINED = "declined"
    FAILED = "failed"

    @property
    def open(self) -> bool:
        """Still expecting the node's update."""
        return self in (TaskStatus.ASSIGNED, TaskStatus.UPLOADING)


@dataclass
class TaskState:
    task: Task
    node_id: str
    cohort: int
    status: TaskStatus = TaskStatus.ASSIGNED
    received: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    train_seconds: float = 0.0
    encrypt_seconds: float = 0.0
    epsilon: float | None = None
    message: str = ""
    upload_started: float = 0.0   # monotonic time of the first chunk
    upload_seconds: float = 0.0   # first chunk received .. update added into its cohort's sum
    fold_seconds: float = 0.0     # adding the update into its cohort's sum
    offered_at: float = field(default_factory=time.monotonic)  # when the task was put in front of its node
    missed_deadline: bool = False  # failed at the deadline (a round closed early with enough updates is not a miss)


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
    acc_dir: Path  # one .raw update or .npy accumulator per (cohort, chunk): memory stays O(chunk) whatever the node count
    done: asyncio.Event = field(default_factory=asyncio.Event)
    replicas: ReplicaPlan | None = None  # public-data jobs: the task each member runs (fedgpu.aggregator.replication)
    enough: int = 0  # the attempt may close once this many updates are in (over-selection); 0: when every task ended

    def acc_path(self, cohort: int, chunk: int) -> Path:
        return self.acc_dir / f"c{cohort}-{chunk}.npy"

    def raw_path(self, cohort: int, chunk: int) -> Path:
        return self.acc_dir / f"c{cohort}-{chunk}.raw"

    def accumulate(self, cohort: int, chunk: int, spooled: Path) -> Path | None:
        """Add one verified, spooled chunk into its cohort's running sum on disk.

        The first update's file moves in as it came (``.raw``, a rename): a cohort of one, the default
        (k = 1), is then released without a copy or a decode. The second turns it into an accumulator
        (``.npy``, atomic replace); later ones add into that in place through a memory map, so an
        update costs its own bytes and not a load and a save of the whole sum. No crash safety is
        lost: a restart redoes the attempt from nothing. Returns the moved file, if it was moved.
        """
        p, raw = self.acc_path(cohort, chunk), self.raw_path(cohort, chunk)
        if not p.exists() and not raw.exists():
            spooled.replace(raw)
            return raw
        payload = spooled.read_bytes()
        if not p.exists():
            tmp = p.with_suffix(".tmp.npy")
            np.save(tmp, self.adder.add(self.adder.add(self.adder.zero(), raw.read_bytes()), payload), allow_pickle=False)
            tmp.replace(p)
            raw.unlink()
            return None
        acc = np.load(p, mmap_mode="r+", allow_pickle=False)
        try:
            out = self.adder.add(acc, payload)
            if out is not acc:  # a scheme that returns a new array: write it back
                acc[...] = out
        finally:
            del acc  # unmapped: what it wrote is in the page cache, which the next reader sees
        return None

    def cohort_sum(self, cohort: int, chunk: int) -> np.ndarray | Path | None:
        """The cohort's running sum of one chunk: an accumulator, the file of its only update, or None (no update)."""
        p, raw = self.acc_path(cohort, chunk), self.raw_path(cohort, chunk)
        if p.exists():
            acc: np.ndarray = np.load(p, allow_pickle=False)
            return acc
        return raw if raw.exists() else None

    def check_done(self) -> None:
        complete = sum(t.status is TaskStatus.COMPLETE for t in self.tasks.values())
        if not any(t.status.open for t in self.tasks.values()) or (self.enough and complete >= self.enough):
            self.done.set()


__all__ = [
    "RoundState",
    "TaskState",
    "TaskStatus",
]
