"""The same job on Flower 1.42's deployment path and on fedgpu, in one run.

Flower: a SuperLink, N SuperNodes (subprocess isolation: each launches its ClientApps as processes) and
the ServerApp of scripts/flower_bench_app (FedAvg), started by `flwr run`. fedgpu: an aggregator, N
`fedgpu node` processes and a job driver (TLS on, rewards on; `--rewards-off` adds runs without them),
with CKKS ("fedgpu-ckks") and without encryption ("fedgpu-none"). Same model and initial weights, same
IID split of MNIST-1D, the same local loop (fedgpu.node.training.train_local, 1 torch thread per node),
local epochs, batch size, learning rate and rounds; both evaluate the global model centrally on the same
test set after every round.

Prints one JSON object: {"runs": [{"framework", "model", "params", "nodes", "rewards", "round_s",
"time_to_final_round_s", "final_accuracy", "bytes_up_per_node", "peak_rss_mb_total", "peak_pss_mb_total",
"memory_by_role", "leftover_processes", ...}], "ratios": [...], "leftover_processes": 0, ...}

  round_s               median time between the ends of consecutive rounds, round 1 left out (it
                        carries the start-up)
  time_to_final_round_s from the start of the job (`flwr run` / the driver's submit) to the final round's end
  bytes_up_per_node     fedgpu: the bytes each node uploaded in a round, as the aggregator counted them
                        (median); Flower: the serialised arrays of one train reply (its ArrayRecord's
                        payload, without HTTP framing)
  peak_rss_mb_total     the peak, over samples every 0.25 s, of the summed RSS of every process of the run
                        (each run's processes carry a tag in their environment, so processes Flower starts
                        detached are counted too); the job driver counts for fedgpu, the CLI for Flower (not
                        the bench's launcher process). Shared library pages count once per process.
  peak_pss_mb_total     the same sum of PSS (every 0.5 s): a page shared by k processes counts 1/k in each.
                        Pages shared with processes outside the run (other users of the same venv) count
                        a share too, so on a busy machine PSS reads a little low for both frameworks.
  memory_by_role        per role (flower-superlink, flwr-clientapp, fedgpu-node, bench-child = fedgpu's
                        driver, ...): how many processes, and one process's largest peak RSS and PSS
  leftover_processes    tagged processes still alive after the run was stopped (must be 0). Every process
                        runs in its own session; SIGTERM/SIGINT/SIGHUP, exceptions and atexit all end in
                        killing every process carrying the run's tag (only those: other users run Flower
                        too), and a run's child kills its tree if the bench dies, even by SIGKILL.
  flower_token_failures ClientApp/ServerApp processes refused with "401 Runtime task-token authentication
                        failed": each came up after its task's claim expired, and Flower started another
                        (see --flower-heartbeat and scripts/flower_bench_site/sitecustomize.py)

Usage: python scripts/bench_vs_flower.py [--nodes 2,10] [--models cnn,mlp] [--frameworks flower,fedgpu-ckks,fedgpu-none]
       [--rounds 5] [--rewards-off] [--flower-heartbeat 120]
Needs `pip install "fedgpu[flower-bench]"` (Flower >= 1.42: the SuperLink/SuperNode over HTTP it measures).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "scripts" / "flower_bench_app"
BIN = Path(sys.executable).parent
SITE = ROOT / "scripts" / "flower_bench_site"
MODELS = {"cnn": "cnn1d", "mlp": "mlp_1m"}
TAG = "FEDGPU_BENCH_RUN"
HEARTBEAT_ENV = "FEDGPU_BENCH_FLWR_HEARTBEAT"
TOKEN_FAILURE = "task-token authentication failed"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


# ---- processes: every one a run starts carries its tag, and dies on every exit path -----------------
def _tag_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:  # gone, or not ours
        return None
    prefix = f"{TAG}=".encode()
    return next((e[len(prefix):].decode() for e in env if e.startswith(prefix)), None)


def _age_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19]) / TICKS
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) - start
    except (OSError, IndexError, ValueError):
        return 0.0


class TagScanner:
    """The live processes carrying a tag. A process's environment changes only at exec, which follows its fork
    within milliseconds, so an untagged process is remembered once it is 2 s old (the machine runs hundreds
    of other processes; rereading all their environments every tick would cost a good part of a core)."""

    def __init__(self) -> None:
        self._untagged: set[int] = set()

    def pids(self, tag: str) -> list[int]:
        live = {int(e) for e in os.listdir("/proc") if e.isdigit()}
        self._untagged &= live
        found = []
        for pid in sorted(live - self._untagged):
            t = _tag_of(pid)  # reread each time: a zombie's environment is empty
            if t == tag:
                found.append(pid)
            elif t is None and _age_s(pid) > 2.0:
                self._untagged.add(pid)
        return found


def tagged_pids(tag: str) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and _tag_of(int(e)) == tag]


def kill_tagged(tag: str, grace: float = 5.0, limit: float = 60.0) -> int:
    """Stop what is left of a run: only processes this benchmark started (they carry its tag). SIGTERM, then
    SIGKILL to the rest after ``grace`` s, again and again (a SuperExec may start a ClientApp meanwhile);
    returns how many are still alive after ``limit`` s (0 unless something cannot be killed)."""
    me = os.getpid()

    def alive() -> list[int]:
        return [p for p in tagged_pids(tag) if p != me]

    for pid in alive():
        with contextlib.suppress(OSError):  # already gone
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace
    while alive() and time.monotonic() < end:
        time.sleep(0.2)
    end = time.monotonic() + limit
    while (pids := alive()) and time.monotonic() < end:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    return len(alive())


LIVE_TAGS: set[str] = set()  # runs whose processes may still be alive: killed at exit, however the bench exits


def kill_live() -> None:
    for tag in list(LIVE_TAGS):
        if kill_tagged(tag) == 0:
            LIVE_TAGS.discard(tag)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally, then atexit


def install_exit_handlers() -> None:
    """SIGTERM, SIGINT and SIGHUP exit through the finally blocks and atexit, which kill every tagged process."""
    atexit.register(kill_live)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)


def watch_parent(tag: str) -> None:
    """In a run's child: when the bench dies (even by SIGKILL, which no handler sees), kill the run's tree and exit."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        kill_tagged(tag, grace=2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


# ---- memory: the summed RSS and PSS of every process carrying the run's tag ----------------------
def role_of(pid: int) -> str:
    """What a process is, from its command line: flower-superlink, flwr-clientapp, ..., fedgpu-node, fedgpu-aggregator."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "gone"
    if not argv:
        return "unknown"
    if "--child" in argv:
        return "bench-child"
    if len(argv) > 2 and argv[1] == "-m" and argv[2] != "fedgpu":
        return argv[2]
    names = [Path(a).name for a in argv[:2]]
    flower = next((n for n in names if n.startswith(("flower-", "flwr"))), None)
    if flower is not None:
        return flower
    if "fedgpu" in argv:
        rest = [a for a in argv[argv.index("fedgpu") + 1:] if not a.startswith("-")]
        return f"fedgpu-{rest[0]}" if rest else "fedgpu"
    return names[0]


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return None


def _pss_mb(pid: int) -> float | None:
    """Proportional set size: each shared page counted once across the processes that map it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        return None
    return None


class MemorySampler:
    """Peaks of the summed RSS (every 0.25 s) and PSS (every 0.5 s: smaps_rollup walks page tables) of a run's
    processes, and each process's own peaks by role. ``skip`` roles (the launcher of a Flower run) are not summed."""

    def __init__(self, tag: str, skip: tuple[str, ...] = ()) -> None:
        self.tag, self.skip = tag, skip
        self.peak_rss = self.peak_pss = 0.0
        self.procs: dict[int, dict[str, Any]] = {}
        self._scanner, self._stop = TagScanner(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, with_pss: bool) -> None:
        rss_total = pss_total = 0.0
        for pid in self._scanner.pids(self.tag):
            proc = self.procs.setdefault(pid, {"role": "unknown", "rss": 0.0, "pss": 0.0})
            if (role := role_of(pid)) not in ("gone", "unknown"):  # a zombie has no command line left
                proc["role"] = role  # read again each time: a fork keeps its parent's command line until it execs
            rss = _rss_mb(pid)
            if rss is None:
                continue
            proc["rss"] = max(proc["rss"], rss)
            counted = proc["role"] not in self.skip
            rss_total += rss if counted else 0.0
            if with_pss and (pss := _pss_mb(pid)) is not None:
                proc["pss"] = max(proc["pss"], pss)
                pss_total += pss if counted else 0.0
        self.peak_rss = max(self.peak_rss, rss_total)
        if with_pss:
            self.peak_pss = max(self.peak_pss, pss_total)

    def _run(self) -> None:
        for tick in itertools.count():
            if self._stop.is_set():
                return
            self._sample(with_pss=tick % 2 == 0)
            self._stop.wait(0.25)

    def by_role(self) -> dict[str, dict[str, float]]:
        """Per role: how many processes, and the largest peak RSS and PSS of one of them (MB)."""
        out: dict[str, dict[str, float]] = {}
        for proc in self.procs.values():
            r = out.setdefault(proc["role"], {"processes": 0, "max_rss_mb": 0.0, "max_pss_mb": 0.0})
            r["processes"] += 1
            r["max_rss_mb"] = round(max(r["max_rss_mb"], proc["rss"]), 1)
            r["max_pss_mb"] = round(max(r["max_pss_mb"], proc["pss"]), 1)
        return dict(sorted(out.items()))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}; see {log}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port} after {timeout:.0f} s; see {log}")


# ---- data: one split for both frameworks ---------------------------------------------------------
def write_data(work: Path, nodes: int, samples: int) -> None:
    import numpy as np

    from fedgpu.datasets import partition_iid, public_split, save_npz

    train, test = public_split("mnist1d", num_samples=samples, seed=0)
    for i, idx in enumerate(partition_iid(len(train), nodes, 0)):
        save_npz(work / f"node{i}.npz", train.subset(idx))
    save_npz(work / "test.npz", test)
    np.save(work / "sizes.npy", np.array([len(train), len(test)]))


def round_stats(ends: list[float], start: float) -> dict[str, float]:
    gaps = [b - a for a, b in itertools.pairwise(ends)]
    return {"round_s": round(statistics.median(gaps), 3) if gaps else float("nan"), "time_to_final_round_s": round(ends[-1] - start, 2), "first_round_s": round(ends[0] - start, 2)}


# ---- Flower: SuperLink + SuperNodes + `flwr run` -------------------------------------------------
def run_flower(work: Path, model: str, nodes: int, a: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    home = work / "flwr_home"
    home.mkdir()
    port = free_port()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    env = {**env, "FLWR_HOME": str(home), "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")])}  # it starts flower-superexec etc. by name
    if a.flower_heartbeat > 0:  # scripts/flower_bench_site/sitecustomize.py sets Flower's heartbeat interval in each Flower process
        env = {**env, HEARTBEAT_ENV: str(a.flower_heartbeat), "PYTHONPATH": os.pathsep.join([str(SITE), env.get("PYTHONPATH", "")])}
    logs: list[Any] = []

    def start(cmd: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (work / name).open("wb")
        logs.append(log)
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True)

    procs = [start([str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port)], "superlink.log")]
    try:
        wait_port(port, procs[0], work / "superlink.log")
        for i in range(nodes):
            procs.append(start([
                str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}", "--port", str(free_port()),
                "--node-config", f"partition-id={i} num-partitions={nodes}",
            ], f"supernode{i}.log"))
        run_config = (
            f"num-server-rounds={a.rounds} num-nodes={nodes} model='{model}' local-epochs={a.epochs} batch-size={a.batch_size} "
            f"lr={a.lr} momentum={a.momentum} seed=0 data-dir='{work}'"
        )
        app = work / "app"
        shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
        start_t = time.time()
        cli = start([str(BIN / "flwr"), "run", str(app), "bench", "--run-config", run_config, "--stream"], "flwr-run.log")
        result, rounds_log = work / "flower_result.json", work / "flower_rounds.jsonl"
        end = time.monotonic() + a.timeout
        while not result.exists():
            if time.monotonic() > end:
                raise RuntimeError(f"the Flower run did not finish in {a.timeout:.0f} s; see {work}/*.log ({token_failures(work)} task-token failures)")
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a Flower process exited; see {work}/*.log ({token_failures(work)} task-token failures)")
            time.sleep(0.25)
        cli.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()
    rows = [json.loads(line) for line in rounds_log.read_text().splitlines()]
    ends = [r["t"] for r in rows if r["round"] >= 1]
    train = json.loads(result.read_text())["train_metrics"]
    last = train[str(a.rounds)]
    return {
        **round_stats(ends, start_t), "final_accuracy": rows[-1]["accuracy"], "bytes_up_per_node": int(last["bytes-up"]), "train_s": round(float(last["train-s"]), 3),
        "flower_token_failures": token_failures(work),
    }


def token_failures(work: Path) -> int:
    """How often a Flower app process came up after its task's claim had expired (its token refused with 401):
    each time, the SuperExec started another process for the task."""
    return sum(log.read_text(errors="replace").count(TOKEN_FAILURE) for log in work.glob("*.log"))


# ---- fedgpu: aggregator + nodes (processes) + the driver (this process) ---------------------------
def run_fedgpu(work: Path, model: str, nodes: int, scheme: str, rewards: bool, a: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    import numpy as np

    from fedgpu.config import EncryptionConfig, JobConfig, RewardsConfig, TrainingConfig
    from fedgpu.datasets import ArrayDataset
    from fedgpu.demo import Cluster
    from fedgpu.driver.driver import JobDriver

    with np.load(work / "test.npz") as f:
        test = ArrayDataset(f["x"], f["y"])
    from fedgpu.config import PRIVATE_COHORT_SIZE

    job = JobConfig(  # k as a job file on private data defaults to it (1 where there are fewer nodes)
        name=f"vs-flower-{model}", model=model, dataset="mnist1d", rounds=a.rounds, nodes_per_round=nodes, min_nodes=nodes,
        cohort_size=PRIVATE_COHORT_SIZE if nodes >= PRIVATE_COHORT_SIZE else 1,
        deadline_seconds=a.timeout, seed=0, training=TrainingConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, momentum=a.momentum),
        encryption=EncryptionConfig(scheme), rewards=RewardsConfig() if rewards else RewardsConfig(pool_per_round=0.0),
    ).validate()
    cluster = Cluster(work, env)
    ends: list[float] = []
    try:
        address = cluster.start_aggregator()
        for i in range(nodes):
            home = work / f"home{i}"
            home.mkdir()
            cluster.spawn(["-m", "fedgpu", "node", "--aggregator", address, *cluster.client_args, "--data", f"mnist1d={work / f'node{i}.npz'}", "--home", str(home), "--threads", "1"], f"fnode{i}.log")

        def progress(ev: dict[str, Any]) -> None:
            if ev["event"] == "round":
                ends.append(time.time())

        start_t = time.time()
        report = JobDriver(address, job, work / "job", validation=test, progress=progress, tls=cluster.tls).run()
    finally:
        cluster.close()
    rounds = report["rounds"]
    up = [b for r in rounds[1:] or rounds for b in r["bytes_up_by_node"].values()]
    train = [statistics.median(r["train_seconds"].values()) for r in rounds if r["train_seconds"]]
    return {
        **round_stats(ends, start_t), "final_accuracy": report["final_accuracy"], "bytes_up_per_node": int(statistics.median(up)),
        "train_s": round(statistics.median(train), 3) if train else None, "driver_s": round(statistics.median(r["driver_seconds"] for r in rounds), 3),
    }


# ---- one run per child process, measured from the parent ------------------------------------------
def child(spec: dict[str, Any], a: argparse.Namespace) -> None:
    tag = os.environ[TAG]
    install_exit_handlers()
    LIVE_TAGS.add(tag)  # at exit, whatever the path, the processes this run started die with it (not this one)
    watch_parent(tag)
    work = Path(spec["work"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if spec["framework"] == "flower":
        out = run_flower(work, spec["model"], spec["nodes"], a, env)
    else:
        out = run_fedgpu(work, spec["model"], spec["nodes"], spec["framework"].removeprefix("fedgpu-"), spec["rewards"], a, env)
    (work / "out.json").write_text(json.dumps(out))


def measure(spec: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    work = Path(spec["work"])
    env = {**os.environ, TAG: tag, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    t0 = time.perf_counter()
    LIVE_TAGS.add(tag)
    skip = ("bench-child",) if spec["framework"] == "flower" else ()  # Flower's run: the launcher is not Flower; fedgpu's: it is the driver
    with MemorySampler(tag, skip) as sampler, (work / "child.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, __file__, *argv, "--child", json.dumps(spec)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait()
        finally:
            left = kill_tagged(tag)
            if left == 0:
                LIVE_TAGS.discard(tag)
    row = {k: spec[k] for k in ("framework", "model", "params", "nodes", "rewards")}
    memory = {
        "peak_rss_mb_total": round(sampler.peak_rss, 1), "peak_pss_mb_total": round(sampler.peak_pss, 1), "memory_by_role": sampler.by_role(),
        "leftover_processes": left, "wall_s": round(time.perf_counter() - t0, 1),
    }
    if proc.returncode != 0 or not (work / "out.json").exists():
        tail = (work / "child.log").read_text(errors="replace")[-1500:]
        return {**row, "error": f"exit {proc.returncode}: {tail}", **memory}
    return {**row, **json.loads((work / "out.json").read_text()), **memory}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="2,10", help="comma-separated node counts (default %(default)s)")
    ap.add_argument("--models", default="cnn,mlp", help="cnn (cnn1d, ~28 k parameters) and/or mlp (mlp_1m, ~1 M) (default %(default)s)")
    ap.add_argument("--frameworks", default="flower,fedgpu-ckks,fedgpu-none", help="default %(default)s")
    ap.add_argument("--rewards-off", action="store_true", help="also run each fedgpu configuration with rewards off")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--samples", type=int, default=10_000, help="MNIST-1D samples generated (80 %% split between the nodes, 20 %% test)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one run may take")
    ap.add_argument("--keep", type=Path, default=None, help="keep the runs' folders (logs) here")
    ap.add_argument(
        "--flower-heartbeat", type=float, default=120.0,
        help="Flower's heartbeat interval in s (its HEARTBEAT_DEFAULT_INTERVAL, 30): a claimed task's app process must send its first "
        "heartbeat within it, or its token expires (401) and the task is started again; 0 keeps Flower's (default %(default)s)",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        child(json.loads(a.child), a)
        return
    install_exit_handlers()
    if not (BIN / "flower-superlink").exists():
        sys.exit(f'no flower-superlink beside {sys.executable}: pip install "fedgpu[flower-bench]" (Flower 1.42\'s deployment runtime)')
    from fedgpu.models import ModelSpec, build_model, count_params

    argv = [f"--rounds={a.rounds}", f"--epochs={a.epochs}", f"--batch-size={a.batch_size}", f"--lr={a.lr}", f"--momentum={a.momentum}", f"--timeout={a.timeout}", f"--flower-heartbeat={a.flower_heartbeat}"]
    root = Path(tempfile.mkdtemp(prefix="fedgpu-vs-flower-")) if a.keep is None else a.keep
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    try:
        for nodes in (int(n) for n in a.nodes.split(",")):
            for key in a.models.split(","):
                model = MODELS[key]
                params = count_params(build_model(model, ModelSpec((40,), 10)))
                frameworks = a.frameworks.split(",")
                configs = [(f, True) for f in frameworks] + ([(f, False) for f in frameworks if f.startswith("fedgpu")] if a.rewards_off else [])
                for framework, rewards in configs:
                    work = root / f"{framework}-{key}-{nodes}{'' if rewards else '-norewards'}"
                    work.mkdir(parents=True)
                    write_data(work, nodes, a.samples)
                    spec = {"framework": framework, "model": model, "params": params, "nodes": nodes, "rewards": rewards if framework != "flower" else None, "work": str(work)}
                    print(f"{framework} {model} x{nodes}{'' if rewards else ' (rewards off)'} ...", file=sys.stderr, flush=True)
                    runs.append(measure(spec, argv))
                    print(f"  {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    ratios = []
    for r in runs:
        if r["framework"] == "fedgpu-ckks" and r.get("rewards") and "error" not in r:
            fl = next((f for f in runs if f["framework"] == "flower" and f["model"] == r["model"] and f["nodes"] == r["nodes"] and "error" not in f), None)
            if fl is not None:
                ratios.append({
                    "model": r["model"], "nodes": r["nodes"], "flower_over_fedgpu_ckks_round_s": round(fl["round_s"] / r["round_s"], 2),
                    "fedgpu_ckks_over_flower_rss": round(r["peak_rss_mb_total"] / fl["peak_rss_mb_total"], 3),
                    "fedgpu_ckks_over_flower_pss": round(r["peak_pss_mb_total"] / fl["peak_pss_mb_total"], 3),
                    "accuracy_points_fedgpu_minus_flower": round(100 * (r["final_accuracy"] - fl["final_accuracy"]), 2),
                })
    out = {
        "runs": runs, "ratios": ratios, "leftover_processes": sum(r["leftover_processes"] for r in runs), "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end (shared: figures under load)",
        "settings": {"rounds": a.rounds, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr, "samples": a.samples, "torch_threads_per_node": 1,
            "flower_heartbeat_s": a.flower_heartbeat or 30.0,
        },
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
