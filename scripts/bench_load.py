"""Load: 1,000 lightweight nodes against one aggregator process while a job trains on a few real nodes.

Prints one JSON object. The lightweight nodes are grpc.aio clients in a few processes, each its own
Ed25519 identity and its own connection: they register through the admission policy set for the
bench (an allow-list of every key, registration limits raised to let 1,000 in at once from
127.0.0.1), then heartbeat every 10 s and long-poll back to back, as an idle fedgpu node does, for
``--seconds``. They say they hold another dataset than the job's, so the aggregator tracks their
liveness and scans them when it picks nodes but never offers them a task. The job (``--real-nodes``
``fedgpu node`` processes, MNIST-1D, ``cnn1d``) runs once without the swarm (the baseline) and once
with it, on the same aggregator.

    .venv/bin/python scripts/bench_load.py                       # 1,000 nodes, 60 s, 10 real nodes
    .venv/bin/python scripts/bench_load.py --nodes 200 --seconds 20 --real-nodes 3 --rounds 4

Keys:
  nodes                   lightweight nodes registered and served
  errors                  failed RPCs of the swarm and of the job, by method and status (target 0)
  latency_ms              per RPC of the swarm: p50, p99 (PullTask: how long past its wait_seconds it answered)
  aggregator_cpu_s        CPU seconds of the aggregator process over the loaded window (and the baseline job's)
  aggregator_peak_rss_mb  VmHWM of the aggregator process at the end
  round_s_loaded          median time between consecutive rounds as the driver sees them, with the swarm
                          (the rounds that reached the driver within the window)
  round_s_baseline        the same job, the same real nodes, no swarm
The traffic is cleartext on 127.0.0.1 (no TLS), and the machine's load average is printed with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

SWARM_CAPS = {"models": ["cnn1d"], "datasets": ["digits"]}  # the job trains on mnist1d: never offered a task
POLL_S = 20  # what an idle fedgpu node asks for (NodeConfig.poll_seconds)
HEARTBEAT_S = 10.0


# ---- the swarm: one process, many lightweight nodes --------------------------------------------
async def swarm(address: str, seeds: list[bytes], seconds: float, out: Path) -> None:
    import grpc
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fedgpu.proto.fedgpu.v1 import node_pb2, node_pb2_grpc
    from fedgpu.wire import PROTOCOL_VERSION
    from fedgpu.wire.auth import Identity
    from fedgpu.wire.transport import CHANNEL_OPTIONS

    ids = [Identity(Ed25519PrivateKey.from_private_bytes(s)) for s in seeds]
    channels = [grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) for _ in ids]
    stubs = [node_pb2_grpc.NodeServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
    latency: dict[str, list[float]] = {"Register": [], "Heartbeat": [], "PullTask": []}
    errors: Counter[str] = Counter()

    async def call(method: str, i: int, req: Any, timeout: float, over: float = 0.0) -> bool:
        ids[i].sign(method, req)
        t0 = time.perf_counter()
        try:
            await getattr(stubs[i], method)(req, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            errors[f"{method}: {exc.code().name}"] += 1
            return False
        latency[method].append((time.perf_counter() - t0) * 1000 - over * 1000)
        return True

    caps = node_pb2.Capabilities(models=SWARM_CAPS["models"], datasets=SWARM_CAPS["datasets"], device="cpu")
    t0 = time.monotonic()
    ok = await asyncio.gather(*(
        call("Register", i, node_pb2.RegisterRequest(public_key=ids[i].public_key, name=f"light{i}", capabilities=caps, protocol_version=PROTOCOL_VERSION), 60)
        for i in range(len(ids))
    ))
    print(json.dumps({"registered": sum(ok), "seconds": time.monotonic() - t0}), flush=True)
    end = time.monotonic() + seconds

    async def pulls(i: int) -> None:
        first = random.randint(1, POLL_S)  # nodes that joined at one moment do not stay in step (the first pull is shorter)
        while (left := end - time.monotonic()) > 1:
            wait, first = min(first, POLL_S, int(left)), POLL_S
            if not await call("PullTask", i, node_pb2.PullTaskRequest(wait_seconds=wait), wait + 10, over=wait):
                await asyncio.sleep(1.0)

    async def beats(i: int) -> None:
        await asyncio.sleep(random.uniform(0, HEARTBEAT_S))
        while time.monotonic() < end:
            await call("Heartbeat", i, node_pb2.HeartbeatRequest(), 10)
            await asyncio.sleep(HEARTBEAT_S)

    await asyncio.gather(*(pulls(i) for i in range(len(ids))), *(beats(i) for i in range(len(ids))))
    for c in channels:
        await c.close()
    out.write_text(json.dumps({"latency": latency, "errors": dict(errors), "nodes": sum(ok)}))


# ---- the aggregator's process ------------------------------------------------------------------
def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def run_job(address: str, job: Any, out: Path, validation: Any) -> tuple[list[float], dict[str, Any]]:
    """The job through the real driver; returns when each round reached the driver, and the report."""
    from fedgpu.driver.driver import JobDriver

    times: list[float] = []

    def progress(ev: dict[str, Any]) -> None:
        if ev["event"] == "round":
            times.append(time.monotonic())
            print(f"  {out.name} round {ev['round']}: {ev['seconds']:.2f} s in the aggregator", file=sys.stderr, flush=True)

    report = JobDriver(address, job, out, validation=validation, progress=progress).run()
    return times, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000, help="lightweight nodes (default %(default)s)")
    ap.add_argument("--processes", type=int, default=4, help="processes the lightweight nodes are spread over (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the swarm heartbeats and long-polls (default %(default)s)")
    ap.add_argument("--real-nodes", type=int, default=10, help="fedgpu node processes training the job (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=80, help="rounds of the job, enough to outlast the window (default %(default)s)")
    ap.add_argument("--scheme", default="none", help="the job's encryption (default %(default)s: the RPC path, not CKKS, is measured)")
    ap.add_argument("--swarm", nargs=4, metavar=("ADDRESS", "SEEDS", "SECONDS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.swarm:
        address, seeds, seconds, out = args.swarm
        asyncio.run(swarm(address, [bytes.fromhex(s) for s in Path(seeds).read_text().split()], float(seconds), Path(out)))
        return

    import numpy as np

    from fedgpu.config import EncryptionConfig, JobConfig, RewardsConfig, TrainingConfig
    from fedgpu.datasets import partition_iid, public_split, save_npz
    from fedgpu.wire.auth import Identity

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="fedgpu-load-") as tmp:
        work = Path(tmp)
        try:
            # Identities first: the bench's admission policy is an allow-list of every key.
            seeds = [os.urandom(32) for _ in range(args.nodes)]
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            keys = [Identity(Ed25519PrivateKey.from_private_bytes(s)).public_key for s in seeds]
            homes = [work / f"real{i}" for i in range(args.real_nodes)]
            keys += [Identity.load_or_create(h / "identity.pem").public_key for h in homes]
            (work / "allow.txt").write_text("".join(k.hex() + "\n" for k in keys))
            ready = work / "agg.addr"
            agg = subprocess.Popen(
                [sys.executable, "-m", "fedgpu", "aggregator", "--listen", "127.0.0.1:0", "--db", str(work / "agg.db"), "--ready-file", str(ready),
                 "--admission", "allowlist", "--allow", str(work / "allow.txt"),
                 "--register-limit", "1000:5000", "--register-limit-total", "1000:5000", "--max-unproven", "5000"],
                stdout=(work / "agg.log").open("wb"), stderr=subprocess.STDOUT, env=env,
            )
            procs.append(agg)
            while not ready.exists():
                if agg.poll() is not None:
                    raise SystemExit((work / "agg.log").read_text()[-2000:])
                time.sleep(0.05)
            address = ready.read_text().strip()

            train, test = public_split("mnist1d", num_samples=int(400 * args.real_nodes / 0.8) + 10, seed=0)
            for home, idx in zip(homes, partition_iid(len(train), args.real_nodes, 0), strict=True):
                save_npz(home / "d.npz", train.subset(idx))
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "fedgpu", "node", "--aggregator", address, "--data", f"mnist1d={home / 'd.npz'}", "--home", str(home)],
                    stdout=(home / "log").open("wb"), stderr=subprocess.STDOUT, env=env,
                ))
            job = JobConfig(
                name="load", model="cnn1d", dataset="mnist1d", rounds=args.rounds, nodes_per_round=args.real_nodes, min_nodes=args.real_nodes,
                deadline_seconds=120, training=TrainingConfig(epochs=1, batch_size=32, lr=0.05), encryption=EncryptionConfig(args.scheme),
                rewards=RewardsConfig(pool_per_round=0.0),
            ).validate()
            validation = test.subset(np.arange(min(1000, len(test))))

            # Baseline: the job alone (its first round also waits for the node processes to start).
            cpu0 = proc_cpu_s(agg.pid)
            t0 = time.monotonic()
            base_times, base = run_job(address, job, work / "baseline", validation)
            base_wall, base_cpu = time.monotonic() - t0, proc_cpu_s(agg.pid) - cpu0

            # Loaded: the swarm registers, then heartbeats and long-polls while the same job runs again.
            per = -(-args.nodes // args.processes)
            swarm_procs = []
            for p in range(args.processes):
                part = seeds[p * per : (p + 1) * per]
                if not part:
                    continue
                (work / f"seeds{p}").write_text("".join(s.hex() + "\n" for s in part))
                swarm_procs.append(subprocess.Popen(
                    [sys.executable, __file__, "--swarm", address, str(work / f"seeds{p}"), str(args.seconds), str(work / f"swarm{p}.json")],
                    stdout=subprocess.PIPE, stderr=(work / f"swarm{p}.log").open("wb"), env=env,
                ))
            procs += swarm_procs
            registered, reg_seconds = 0, 0.0
            for sp in swarm_procs:
                assert sp.stdout is not None
                line = sp.stdout.readline()
                if not line:
                    raise SystemExit((work / "swarm0.log").read_text()[-2000:])
                info = json.loads(line)
                registered += info["registered"]
                reg_seconds = max(reg_seconds, info["seconds"])
            cpu1 = proc_cpu_s(agg.pid)
            window: dict[str, float] = {}

            def end_of_window() -> None:
                window["cpu"] = proc_cpu_s(agg.pid) - cpu1
                window["end"] = time.monotonic()

            timer = threading.Timer(args.seconds, end_of_window)
            timer.start()
            job_errors = ""
            try:
                load_times, loaded = run_job(address, job, work / "loaded", validation)
            except Exception as exc:  # reported, not raised: the JSON says what failed
                load_times, loaded, job_errors = [], {"rounds": []}, f"{type(exc).__name__}: {exc}"
            for sp in swarm_procs:
                sp.wait(args.seconds + 120)
            timer.join()
            rss = peak_rss_mb(agg.pid)
            lat: dict[str, list[float]] = {"Register": [], "Heartbeat": [], "PullTask": []}
            errors: Counter[str] = Counter()
            for p in range(len(swarm_procs)):
                data = json.loads((work / f"swarm{p}.json").read_text())
                for k, v in data["latency"].items():
                    lat[k] += v
                errors.update(data["errors"])
            if job_errors:
                errors[f"job: {job_errors}"] += 1
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()

    def round_s(times: list[float]) -> float | None:
        gaps = list(np.diff(times))  # round 1 of the baseline includes the nodes' start: between rounds only
        return round(statistics.median(gaps), 3) if gaps else None

    in_window = [t for t in load_times if t <= window.get("end", float("inf"))]
    print(json.dumps({
        "nodes": registered,
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "latency_ms": {
            "Register": {"p50": pct(lat["Register"], 0.5), "p99": pct(lat["Register"], 0.99), "calls": len(lat["Register"])},
            "Heartbeat": {"p50": pct(lat["Heartbeat"], 0.5), "p99": pct(lat["Heartbeat"], 0.99), "calls": len(lat["Heartbeat"])},
            "PullTask_over_wait": {"p50": pct(lat["PullTask"], 0.5), "p99": pct(lat["PullTask"], 0.99), "calls": len(lat["PullTask"])},
        },
        "registration_s": round(reg_seconds, 2),
        "aggregator_cpu_s": round(window.get("cpu", float("nan")), 2),
        "window_s": args.seconds,
        "aggregator_cpu_s_baseline_job": round(base_cpu, 2),
        "baseline_job_s": round(base_wall, 1),
        "aggregator_peak_rss_mb": round(rss, 1),
        "round_s_loaded": round_s(in_window),
        "round_s_baseline": round_s(base_times),
        "rounds_loaded_in_window": len(in_window),
        "round_open_to_close_s_loaded": round(statistics.median(r["seconds"] for r in loaded["rounds"]), 3) if loaded["rounds"] else None,
        "round_open_to_close_s_baseline": round(statistics.median(r["seconds"] for r in base["rounds"][1:]), 3) if len(base["rounds"]) > 1 else None,
        "real_nodes": args.real_nodes,
        "job": {"model": "cnn1d", "dataset": "mnist1d", "encryption": args.scheme, "rounds": args.rounds, "final_accuracy_loaded": loaded.get("final_accuracy")},
        "machine": f"{os.cpu_count()} cores",
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - t_start, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
