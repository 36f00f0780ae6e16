"""An aggregator on its own event loop in a background thread: for tests, benchmarks, simulations.

It is the real server (grpc.aio on a 127.0.0.1 socket, the real store); only the process is shared.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fedgpu.aggregator.admission import AdmissionPolicy
from fedgpu.aggregator.core import Aggregator
from fedgpu.wire.transport import TLSConfig


class LocalAggregator:
    def __init__(self, db: str, spool: Path, listen: str = "127.0.0.1:0", tls: TLSConfig | None = None, admission: AdmissionPolicy | None = None) -> None:
        self.db, self.spool, self.listen, self.tls, self.admission = db, spool, listen, tls or TLSConfig(), admission
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="aggregator", daemon=True)
        self.address = ""
        self.agg: Aggregator | None = None
        self._server: Any = None
        self._error: BaseException | None = None

    def _main(self) -> None:
        from fedgpu.aggregator.server import build_server

        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self._server, self.agg, port = await build_server(self.listen, self.db, self.spool, self.tls, self.admission)
            self.address = f"127.0.0.1:{port}"

        try:
            self.loop.run_until_complete(start())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> LocalAggregator:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        return self

    def call(self, coro_fn: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 30) -> Any:
        """Run a coroutine on the aggregator's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(timeout)

    def stop(self) -> None:
        if self.agg is not None:
            agg, server = self.agg, self._server

            async def shutdown() -> None:
                await agg.stop()
                await server.stop(grace=0.5)

            self.call(shutdown)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if self.agg is not None:
            self.agg.store.engine.dispose()

    def __enter__(self) -> LocalAggregator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LocalAggregator"]
