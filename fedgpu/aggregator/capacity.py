"""Measured capacity: what each node's completed tasks showed, on the aggregator's own clocks.

A node's record counts its completed tasks and missed deadlines and sums, per task, the time from
the offer to the first chunk received (training, on the aggregator's clock), from the offer to the
complete upload, and the upload's bytes and seconds. The node's own numbers (its reported training
time, its claimed device) are never an input; the device is shown beside the record, nothing more.
Records live in the store (``node_capacity``), so they survive restarts and span jobs.

``fedgpu nodes`` shows them signed by the aggregator's ledger key (:func:`fedgpu.capacity.sign_record`),
like a receipt: proof of work done, checkable by anyone with the aggregator's public key.

Selection also needs each node's record *in one job* (its time on this job's tasks, its misses,
its value estimates): :class:`CapacityBook` keeps those in memory and reads the values from the ledger.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fedgpu.aggregator.attempt import RoundState, TaskStatus
from fedgpu.aggregator.selection import NodeHistory
from fedgpu.aggregator.store import Store
from fedgpu.capacity import CapacityRecord

EWMA = 0.5  # weight of the latest task in a node's time for one job: a node that slows down is seen in a round or two


@dataclass
class _JobStats:
    tasks: int = 0
    seconds: float = 0.0
    misses: int = 0
    cut: int = 0


class CapacityBook:
    """Writes each closed round's measurements to the store, and keeps each job's per-node history for selection."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._jobs: dict[str, dict[str, _JobStats]] = {}

    def round_closed(self, rs: RoundState, samples: dict[str, int] | None = None) -> None:
        """Record every task of a closed attempt: completed ones measured, deadline misses counted."""
        stats = self._jobs.setdefault(rs.job_id, {})
        for ts in rs.tasks.values():
            st = stats.setdefault(ts.node_id, _JobStats())
            if ts.status is TaskStatus.COMPLETE:
                compute = max(ts.upload_started - ts.offered_at, 0.0)
                turnaround = compute + ts.upload_seconds
                st.seconds = turnaround if st.tasks == 0 else EWMA * turnaround + (1 - EWMA) * st.seconds
                st.tasks += 1
                self.store.add_capacity(
                    ts.node_id, tasks=1, samples=(samples or {}).get(ts.node_id, 0), compute_seconds=compute,
                    turnaround_seconds=turnaround, bytes_up=ts.bytes_up, upload_seconds=ts.upload_seconds,
                )
            elif ts.status is TaskStatus.FAILED and not ts.missed_deadline and ts.message.startswith("not needed"):
                # Cut by an over-selected round's early close: at least this slow. Without it a node that is
                # always cut would look untried forever and take an exploration slot every round.
                st.seconds = max(st.seconds, time.monotonic() - ts.offered_at)
                st.cut += 1
            elif ts.missed_deadline:
                st.misses += 1
                self.store.add_capacity(ts.node_id, misses=1)

    def history(self, job_id: str) -> dict[str, NodeHistory]:
        """Each node's record in this job: its time and misses (this process), its values (the ledger)."""
        stats = self._jobs.get(job_id, {})
        values = self.store.node_values(job_id)
        out = {n: NodeHistory(tasks=s.tasks, cut=s.cut, seconds=s.seconds, misses=s.misses, values=tuple(values.get(n, ()))) for n, s in stats.items()}
        for n, v in values.items():
            out.setdefault(n, NodeHistory(values=tuple(v)))
        return out

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def records(self, node_ids: list[str] | None = None) -> list[CapacityRecord]:
        """Every registered node's record (``node_ids``: only those), nodes that never worked with zeros."""
        measured = {r["node_id"]: r for r in self.store.capacity()}
        out = []
        for n in self.store.all_nodes():
            if node_ids and n["id"] not in node_ids:
                continue
            m = measured.get(n["id"], {})
            out.append(
                CapacityRecord(
                    node_id=n["id"], name=n["name"], device=str(n["capabilities"].get("device", "")),
                    tasks=int(m.get("tasks", 0)), misses=int(m.get("misses", 0)), samples=int(m.get("samples", 0)),
                    compute_seconds=float(m.get("compute_seconds", 0.0)), turnaround_seconds=float(m.get("turnaround_seconds", 0.0)),
                    bytes_up=int(m.get("bytes_up", 0)), upload_seconds=float(m.get("upload_seconds", 0.0)),
                    updated_at=float(m.get("updated_at", n["registered_at"])),
                )
            )
        return sorted(out, key=lambda r: (-r.tasks, r.name))


__all__ = [
    "CapacityBook",
    "EWMA",
]
