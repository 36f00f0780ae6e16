"""The aggregator's CPU per update on the upload path alone: receive (TLS), check, spool, fold.

A real aggregator (``build_server``, TLS on 127.0.0.1) in a child process is offered one task per
node of a 1 M-parameter CKKS round directly (no job, no training), and this process uploads every
node's 14 chunks, signed beforehand, one update after another. The figure is the child's CPU
(utime + stime from /proc) from the first chunk until the round has all its updates, per update:
far less noisy than bench_round's per-round figure, which also holds the round's polls, the model
downloads, the close and the publish. Payloads are well-formed but random (the aggregator adds
them without a key either way).

``--concurrent N`` sends N updates at a time, each over its own connection (as N nodes do in a round);
``--load N`` keeps N other processes busy meanwhile (a memory-bound numpy loop each, as training and
encrypting nodes keep a shared machine busy): together they tell the upload path's own cost from what
concurrency and a loaded machine add to it in bench_round's whole-round figure.

Prints one JSON object: {"updates", "concurrent", "load", "bytes_per_update", "aggregator_cpu_s_per_update", "wall_s_per_update"}.
Usage: python scripts/bench_upload.py [--updates 20] [--concurrent 10] [--load 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fedgpu import crypto
from fedgpu.crypto.ckks_format import CkksParams, encode_payload
from fedgpu.crypto.scheme import ChunkLayout
from fedgpu.proto.fedgpu.v1 import node_pb2, node_pb2_grpc
from fedgpu.wire import PROTOCOL_VERSION, chunks
from fedgpu.wire.auth import Identity
from fedgpu.wire.certs import write_certs
from fedgpu.wire.records import EncryptionContext, PrivacyPlan, Task, TrainingPlan
from fedgpu.wire.transport import TLSConfig, open_channel

PARAMS = 1_000_000


def serve(work: Path, n: int) -> None:
    """The child: an aggregator that offers a task to each of the first ``n`` nodes to register."""
    from fedgpu.aggregator.attempt import RoundState, TaskState
    from fedgpu.aggregator.server import build_server

    try:  # as the aggregator's serve() does; a tree from before it has none, and is measured as it is
        from fedgpu.aggregator.memory import reuse_large_buffers

        reuse_large_buffers()
    except ImportError:
        pass

    async def main() -> None:
        _, agg, port = await build_server("127.0.0.1:0", str(work / "a.db"), work / "spool", TLSConfig(cert=work / "tls/server.pem", key=work / "tls/server.key"))
        (work / "port").write_text(str(port))
        while len(agg.registry.pubkeys) < n:
            await asyncio.sleep(0.05)
        params, now = CkksParams(), time.time()
        nodes = sorted(agg.registry.pubkeys)
        layout = ChunkLayout(PARAMS, params.values_per_chunk)
        rs = RoundState("job-b", 1, 1, "att", "ckks", now, now + 3600, crypto.adder("ckks", params.to_bytes()), [[x] for x in nodes], {}, layout.num_chunks, work / "acc")
        rs.acc_dir.mkdir()
        context = EncryptionContext("ckks", params.to_bytes(), b"", "fp", params.values_per_chunk)
        plan, privacy = TrainingPlan(1, 16, 0.05, 0.0, 1), PrivacyPlan(False, 0.0, 0.0, 0.0, 0, "rdp", "sample", 0.0, 0.0, 0)
        tasks = {}
        for i, node in enumerate(nodes):
            task = Task(f"t{i}", "job-b", 1, 0, "mlp", "d", plan, privacy, context, int(now * 1000) + 3_600_000, PARAMS, layout.num_chunks)
            agg.uploads.offer(rs, TaskState(task=task, node_id=node, cohort=i))
            tasks[node] = task.task_id
        (work / "tasks.json").write_text(json.dumps(tasks))
        await rs.done.wait()
        (work / "done").write_text("")
        await asyncio.Event().wait()  # until killed

    asyncio.run(main())


def wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"the aggregator exited ({proc.returncode})")
        time.sleep(0.01)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def payloads() -> list[bytes]:
    p, rng = CkksParams(), np.random.default_rng(0)
    layout = ChunkLayout(PARAMS, p.values_per_chunk)
    out = []
    for i in range(layout.num_chunks):
        values = layout.chunk_values(i)
        count = -(-values // p.poly_modulus_degree) * p.poly_modulus_degree
        out.append(encode_payload(p, values, rng.integers(0, 2**p.c0_bits, count, dtype=np.uint64), rng.integers(0, 2**p.c1_bits, count, dtype=np.uint64)))
    return out


LOAD = "import numpy as np\na = np.random.rand(4_000_000)\nwhile True:\n    a *= 1.0000001"


def run(n: int, concurrent: int = 1, load: int = 0) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="fedgpu-bench-upload-"))
    certs = write_certs(work / "tls", ["127.0.0.1", "localhost"])
    loaders: list[subprocess.Popen[bytes]] = []
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(work), "--updates", str(n)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_for(work / "port", child)
        channel = open_channel(f"127.0.0.1:{(work / 'port').read_text()}", TLSConfig(ca=certs.ca))
        stub = node_pb2_grpc.NodeServiceStub(channel)
        ids = [Identity.generate() for _ in range(n)]
        for me in ids:
            req = node_pb2.RegisterRequest(public_key=me.public_key, name="bench", protocol_version=PROTOCOL_VERSION)
            me.sign("Register", req)
            stub.Register(req)
        wait_for(work / "tasks.json", child)
        tasks = json.loads((work / "tasks.json").read_text())
        parts = payloads()
        streams = []
        for me in ids:  # signed beforehand: this process's work stays out of the measured window
            msgs = []
            for i, part in enumerate(parts):
                msg = node_pb2.UpdateChunk(task_id=tasks[me.node_id], fingerprint="fp", chunk=chunks.make_chunk(i, len(parts), part), train_seconds=1.0)
                me.sign("UploadUpdate", msg)
                msgs.append(msg)
            streams.append(msgs)
        # one connection per concurrent sender, as separate nodes have
        channels = [open_channel(f"127.0.0.1:{(work / 'port').read_text()}", TLSConfig(ca=certs.ca)) for _ in range(concurrent)]
        stubs = [node_pb2_grpc.NodeServiceStub(c) for c in channels]

        def send(i: int) -> None:
            if not stubs[i % concurrent].UploadUpdate(iter(streams[i])).complete:
                raise SystemExit("an upload was not taken whole")

        loaders.extend(subprocess.Popen([sys.executable, "-c", LOAD]) for _ in range(load))
        time.sleep(1.0)  # the registrations' writes settle (and the load starts)
        c0, t0 = cpu_s(child.pid), time.perf_counter()
        with ThreadPoolExecutor(concurrent) as pool:
            list(pool.map(send, range(n)))
        wait_for(work / "done", child)
        c1, t1 = cpu_s(child.pid), time.perf_counter()
        for c in [channel, *channels]:
            c.close()
        return {"updates": n, "concurrent": concurrent, "load": load, "bytes_per_update": sum(m.ByteSize() for m in streams[0]),
                "aggregator_cpu_s_per_update": round((c1 - c0) / n, 4), "wall_s_per_update": round((t1 - t0) / n, 4)}
    finally:
        for proc in loaders:
            proc.kill()
            proc.wait()
        child.kill()
        child.wait()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=1, help="updates sent at a time, each over its own connection (default %(default)s)")
    ap.add_argument("--load", type=int, default=0, help="other busy processes while measuring (default %(default)s)")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.serve, args.updates)
        return
    print(json.dumps(run(args.updates, args.concurrent, args.load), indent=2))


if __name__ == "__main__":
    main()
