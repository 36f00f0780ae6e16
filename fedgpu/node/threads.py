"""Node agents as threads of one process, for benchmarks and tests that run a federation in process.

Each agent polls its aggregator on its own thread; leaving the ``with`` block stops every agent,
joins its thread and closes its channel, whatever raised inside, so no run leaks threads or sockets.
"""

from __future__ import annotations

import threading
from types import TracebackType

from fedgpu.node.agent import NodeAgent, NodeConfig


class NodeThreads:
    """``with NodeThreads() as nodes: agent = nodes.start(cfg)`` — the agents started, stopped on exit."""

    def __init__(self, join_seconds: float = 30.0) -> None:
        self.join_seconds = join_seconds
        self.agents: list[NodeAgent] = []
        self._threads: list[threading.Thread] = []

    def start(self, cfg: NodeConfig, name: str | None = None) -> NodeAgent:
        agent = NodeAgent(cfg)
        th = threading.Thread(target=agent.run, name=name or cfg.name or f"node{len(self.agents)}", daemon=True)
        th.start()
        self.agents.append(agent)
        self._threads.append(th)
        return agent

    def stop(self) -> None:
        """Stop, join and close every agent started so far (``agents`` still lists them afterwards)."""
        for agent in self.agents:
            agent.stop()
        for agent, th in zip(self.agents, self._threads, strict=True):
            th.join(self.join_seconds)
            agent.channel.close()

    def __enter__(self) -> NodeThreads:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["NodeThreads"]
