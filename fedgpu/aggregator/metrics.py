"""The aggregator's counters in Prometheus' text format, on an optional ``--metrics HOST:PORT``.

A plain ``http.server`` in a daemon thread answers ``GET /metrics``. The numbers themselves live on
the aggregator's event loop: the handler asks the loop for a snapshot (``run_coroutine_threadsafe``)
instead of reading dictionaries the loop is changing, and a loop that does not answer within 5 s
gets a 503, so a scrape can never stall the server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fedgpu.errors import ConfigError
from fedgpu.wire.transport import parse_address

log = logging.getLogger("fedgpu.aggregator")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Counters:
    """What the aggregator counts since its process started (Prometheus counters restart with it)."""

    registrations: int = 0
    uploads_accepted: int = 0   # updates that arrived complete and were added into their cohort's sum
    uploads_refused: int = 0    # upload streams refused with a reason (bad chunk, wrong task, deadline, ...)
    bytes_in: int = 0           # bytes of update chunks received, accepted or not


@dataclass(frozen=True)
class Snapshot:
    nodes_registered: int
    nodes_live: int
    rounds_closed: int
    counters: Counters


SnapshotFn = Callable[[], Snapshot]

_METRICS: tuple[tuple[str, str, str, Callable[[Snapshot], int]], ...] = (
    # name, type, help, how to read it off a snapshot
    ("fedgpu_nodes_registered", "gauge", "Nodes known to this aggregator (its database).", lambda s: s.nodes_registered),
    ("fedgpu_nodes_live", "gauge", "Nodes seen within the liveness timeout.", lambda s: s.nodes_live),
    ("fedgpu_registrations_total", "counter", "Register calls accepted.", lambda s: s.counters.registrations),
    ("fedgpu_rounds_closed_total", "counter", "Round attempts closed with their sums released to the driver.", lambda s: s.rounds_closed),
    ("fedgpu_uploads_accepted_total", "counter", "Updates received complete and added into a cohort sum.", lambda s: s.counters.uploads_accepted),
    ("fedgpu_uploads_refused_total", "counter", "Upload streams refused with a reason.", lambda s: s.counters.uploads_refused),
    ("fedgpu_bytes_in_total", "counter", "Bytes of update chunks received.", lambda s: s.counters.bytes_in),
)


def render(snapshot: Snapshot) -> str:
    """The Prometheus text exposition of ``snapshot``."""
    lines = []
    for name, kind, text, value in _METRICS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value(snapshot)}"]
    return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` on ``listen``, rendered from ``snapshot()`` run on ``loop``."""

    def __init__(self, listen: str, loop: asyncio.AbstractEventLoop, snapshot: SnapshotFn) -> None:
        host, port = parse_address(listen, "--metrics")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served here")
                    return
                try:
                    body = render(asyncio.run_coroutine_threadsafe(outer._snapshot(), loop).result(5)).encode()
                except Exception as exc:  # a stopped or stalled loop: say so, never hang the scraper
                    self.send_error(503, f"the aggregator did not answer: {type(exc).__name__}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics: " + format, *args)

        self._snapshot_fn = snapshot
        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigError(f"--metrics {listen}: cannot listen there ({exc.strerror}); pick another HOST:PORT") from exc
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    async def _snapshot(self) -> Snapshot:
        return self._snapshot_fn()

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


__all__ = [
    "CONTENT_TYPE",
    "Counters",
    "MetricsServer",
    "Snapshot",
    "SnapshotFn",
    "render",
]
