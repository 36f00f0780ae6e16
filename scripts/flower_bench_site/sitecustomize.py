"""Flower's heartbeat interval for scripts/bench_vs_flower.py: this folder leads the PYTHONPATH of the bench's
Flower processes only (SuperLink, SuperNodes, SuperExecs, ClientApps, ServerApp, `flwr`).

Why: a SuperExec claims a task, then starts its app process, which must send its first heartbeat within
HEARTBEAT_DEFAULT_INTERVAL (30 s) of the claim. On a loaded machine starting that process (importing
flwr) takes longer: the claim expires, the task goes back to pending, another process is started for it
and the first is refused with "401 Runtime task-token authentication failed" (Flower 1.42,
flwr/supercore/corestate/in_memory_corestate.py: claim_task, _cleanup_expired_task_tokens_locked).
Flower has no setting for it; the constant is read when its state modules are imported, so it is set
here, before. It changes nothing else a round does: heartbeats only prove liveness.
"""

import os

_interval = os.environ.get("FEDGPU_BENCH_FLWR_HEARTBEAT")
if _interval:
    import flwr.common.constant

    flwr.common.constant.HEARTBEAT_DEFAULT_INTERVAL = int(float(_interval))
