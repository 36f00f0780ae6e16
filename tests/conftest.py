"""Shared fixtures: a real aggregator on a real 127.0.0.1 socket, in a background thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Iterator

import pytest
import torch

torch.set_num_threads(1)


class AggregatorThread:
    """Runs ``build_server`` on its own event loop; ``stop`` shuts it down and joins the thread."""

    def __init__(self, db: str, spool: Path) -> None:
        self.db, self.spool = db, spool
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.address = ""
        self.agg = None
        self.error: BaseException | None = None

    def _main(self) -> None:
        from fedgpu.aggregator.server import build_server

        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.server, self.agg, port = await build_server("127.0.0.1:0", self.db, self.spool)
            self.address = f"127.0.0.1:{port}"

        try:
            self.loop.run_until_complete(start())
        except BaseException as exc:  # surface start-up errors to the test
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> "AggregatorThread":
        self.thread.start()
        self.ready.wait(30)
        if self.error:
            raise self.error
        return self

    def call(self, coro_fn, timeout: float = 30):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(timeout)

    def stop(self) -> None:
        async def shutdown() -> None:
            await self.agg.stop()
            await self.server.stop(grace=0.5)

        if self.agg is not None:
            self.call(shutdown)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.agg.store.engine.dispose()


@pytest.fixture
def aggregator(tmp_path: Path) -> Iterator[AggregatorThread]:
    a = AggregatorThread(str(tmp_path / "agg.db"), tmp_path / "spool").start()
    try:
        yield a
    finally:
        a.stop()
