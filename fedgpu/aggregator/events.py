"""Event fan-out: the queues of the drivers watching each job.

It owns only who is watching (one queue per open ``WatchJob`` stream) and hands each event to every
watcher of its job. It holds no job state: what a new watcher must hear first (the job's current
state) is computed by the caller, after the watcher's queue exists, so no event falls in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from fedgpu.wire.records import JobEvent


class Events:
    def __init__(self) -> None:
        self.watchers: dict[str, list[asyncio.Queue[JobEvent]]] = {}

    def attached(self, job_id: str) -> bool:
        """Whether a driver is watching the job right now."""
        return bool(self.watchers.get(job_id))

    def emit(self, job_id: str, ev: JobEvent) -> None:
        for q in self.watchers.get(job_id, []):
            q.put_nowait(ev)

    async def watch(
        self, job_id: str, backlog: Callable[[], tuple[list[JobEvent], bool]], detached: Callable[[], None]
    ) -> AsyncIterator[JobEvent]:
        """The job's events from now on, after ``backlog()``: (events to send first, whether they end
        the stream). ``detached`` runs once the watcher is gone, whichever way the stream ends."""
        q: asyncio.Queue[JobEvent] = asyncio.Queue()
        self.watchers.setdefault(job_id, []).append(q)
        try:
            first, ended = backlog()
            for ev in first:
                yield ev
            if ended:
                return
            while True:
                ev = await q.get()
                yield ev
                if ev.kind.ends_job:
                    return
        finally:
            self.watchers[job_id].remove(q)
            detached()


__all__ = [
    "Events",
]
