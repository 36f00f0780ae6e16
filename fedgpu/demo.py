"""``fedgpu demo``: an aggregator, N node processes and a job driver on 127.0.0.1, in one command.

Everything is real: separate processes, gRPC with TLS over loopback sockets (a throwaway CA made
in the work folder), a SQLite database file, CKKS ciphertexts by default. The public dataset is
generated locally and split between the nodes, each of which sees only its own file; with ``public``
the job is a public-data job instead: no files, each node builds the shard its task names, and a share
of the tasks is replicated and compared (docs/verification.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgpu.config import (
    PRIVATE_COHORT_SIZE,
    PUBLIC_COHORT_SIZE,
    EncryptionConfig,
    JobConfig,
    PrivacyConfig,
    PublicDataConfig,
    RewardsConfig,
    SelectionConfig,
    TrainingConfig,
)
from fedgpu.datasets import partition_dirichlet, partition_iid, public_split, save_npz
from fedgpu.errors import ConfigError, FedgpuError
from fedgpu.report import FILES as REPORT_FILES
from fedgpu.report import write_report
from fedgpu.wire.auth import Identity
from fedgpu.wire.certs import CertFiles, write_certs
from fedgpu.wire.transport import TLSConfig

# Embedded defaults per dataset: chosen so the demo reaches its accuracy target in well under 3 min on 2 CPU cores.
# Exact Shapley up to 4 cohorts; past that the cohorts are valued from one gradient (second-order
# Shapley, fedgpu.driver.valuation), so that the driver's round costs no more than the nodes' training.
DEMO_SHAPLEY_BUDGET = 16
DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist1d": {"model": "cnn1d", "samples": 10_000, "rounds": 12, "training": TrainingConfig(epochs=2, batch_size=32, lr=0.05)},
    "digits": {"model": "digits_cnn", "samples": 0, "rounds": 10, "training": TrainingConfig(epochs=2, batch_size=16, lr=0.05)},
}
# With --epsilon: DP-SGD wants more records per node, large batches, one epoch and a large lr with
# momentum, on inputs standardised per sample (the recipe scripts/bench_dp.py measures; docs/privacy.md).
DP_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist1d": {"model": "cnn1d_dp", "samples": 30_000, "rounds": 15, "training": TrainingConfig(epochs=1, batch_size=480, lr=2.0, momentum=0.9, server_momentum=0.5)},
    "digits": {"samples": 0, "rounds": 10, "training": TrainingConfig(epochs=1, batch_size=128, lr=2.0, momentum=0.9)},
}


def defaults(cfg: DemoConfig) -> dict[str, Any]:
    if cfg.dataset not in DEFAULTS:
        raise ConfigError(f"--dataset {cfg.dataset!r}: allowed values are {', '.join(DEFAULTS)}")
    return {**DEFAULTS[cfg.dataset], **(DP_DEFAULTS[cfg.dataset] if cfg.epsilon is not None else {})}


@dataclass
class DemoConfig:
    nodes: int = 9               # three cohorts of 3 at the default k
    rounds: int | None = None
    dataset: str = "mnist1d"
    model: str | None = None
    samples: int | None = None
    seed: int = 0
    out: Path | None = None
    partition: str = "iid"
    alpha: float = 0.5
    encryption: str = "ckks"
    cohort_size: int | None = None  # k; None: 3 (private data, PRIVATE_COHORT_SIZE), 1 with public=True
    epsilon: float | None = None
    epsilon_cap: float | None = None
    free_riders: int = 0
    poisoners: int = 0
    lazy_nodes: int = 0          # nodes that skip half their local steps (fedgpu.adversaries "lazy")
    public: bool = False         # a public-data job: nodes build their shards, tasks are spot-checked
    replication: float = PublicDataConfig.replication
    slow_nodes: int = 0         # honest nodes whose tasks take slow_factor x as long (fedgpu.adversaries "slow")
    slow_factor: float = 4.0
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    deadline_seconds: float = 120.0
    keep: bool = False
    flower_client: str | None = None  # --flower-client MODULE:ATTR: the first flower_nodes nodes train with it (docs/flower.md)
    flower_nodes: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)


def _roles(cfg: DemoConfig) -> list[str]:
    kinds = ["zeros", "noise", "replay"]
    poison = ["signflip", "labelflip"]
    roles = ["honest"] * cfg.nodes
    for i in range(cfg.free_riders):
        roles[cfg.nodes - 1 - i] = kinds[i % 3]
    for j in range(cfg.poisoners):
        roles[cfg.nodes - 1 - cfg.free_riders - j] = poison[j % 2]
    for j in range(cfg.lazy_nodes):
        roles[cfg.nodes - 1 - cfg.free_riders - cfg.poisoners - j] = "lazy"
    for i in range(cfg.slow_nodes):  # from the front: the adversaries sit at the back
        roles[i] = "slow"
    for f in range(cfg.flower_nodes):  # after the slow ones
        roles[cfg.slow_nodes + f] = "flower"
    return roles


def demo_cohort_size(cfg: DemoConfig) -> int:
    """The demo's k: the one asked for, else the job files' default for its kind of data."""
    if cfg.cohort_size is not None:
        return cfg.cohort_size
    return PUBLIC_COHORT_SIZE if cfg.public else PRIVATE_COHORT_SIZE


def build_job(cfg: DemoConfig) -> JobConfig:
    d = defaults(cfg)
    k = demo_cohort_size(cfg)
    t: TrainingConfig = d["training"]
    training = TrainingConfig(epochs=cfg.epochs or t.epochs, batch_size=cfg.batch_size or t.batch_size, lr=cfg.lr or t.lr, momentum=t.momentum, server_momentum=t.server_momentum)
    privacy = PrivacyConfig(enabled=cfg.epsilon is not None, epsilon=cfg.epsilon or 8.0)
    return JobConfig(
        name=f"demo-{cfg.dataset}",
        model=cfg.model or d["model"],
        dataset=cfg.dataset,
        rounds=cfg.rounds or d["rounds"],
        # Slow nodes: a round wants the others' updates and offers the slow ones too (over-selection), so it
        # closes when enough are in; measured-speed selection learns who is slow.
        nodes_per_round=max(1, cfg.nodes - cfg.slow_nodes),
        min_nodes=max(1, min(cfg.nodes - cfg.slow_nodes, max(k, (cfg.nodes + 1) // 2))),
        deadline_seconds=cfg.deadline_seconds,
        cohort_size=k,
        seed=cfg.seed,
        training=training,
        privacy=privacy,
        encryption=EncryptionConfig(scheme=cfg.encryption),
        rewards=RewardsConfig(budget=DEMO_SHAPLEY_BUDGET),
        public_data=PublicDataConfig(
            enabled=cfg.public, samples=cfg.samples if cfg.samples is not None else d["samples"], data_seed=cfg.seed, replication=cfg.replication,
        ),
        selection=SelectionConfig(rule="utility", over_select=min(1.0, cfg.slow_nodes / max(1, cfg.nodes - cfg.slow_nodes))) if cfg.slow_nodes else SelectionConfig(),
    ).validate()


def _terminate_as_interrupt() -> Any:
    """Make SIGTERM unwind like Ctrl-C, so the demo's processes are stopped; returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, on_term)


def _die_with_parent() -> None:
    """In a child, before exec: the kernel sends SIGTERM when the demo dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: close() is the only cleanup


class Cluster:
    """The processes of a demo; ``close`` stops every one of them.

    The aggregator serves TLS with a certificate from a throwaway CA in ``work/tls``: nodes get
    ``client_args`` (``--tls-ca``), an in-process driver gets ``tls``.
    """

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.certs: CertFiles = write_certs(work / "tls", ["127.0.0.1", "localhost"])
        self.tls = TLSConfig(ca=self.certs.ca)
        self.client_args = ["--tls-ca", str(self.certs.ca)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.address = ""
        self.closed = False

    def spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``python ARGS`` (``-m fedgpu ...`` or ``-m fedgpu.adversaries ...``), logging to ``log_name``."""
        log = (self.work / log_name).open("wb")
        proc = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env={**self.env, **(env or {})}, start_new_session=True, preexec_fn=_die_with_parent)
        self.procs.append(proc)
        return proc

    def start_aggregator(self, timeout: float = 60.0) -> str:
        ready = self.work / "aggregator.addr"
        ready.unlink(missing_ok=True)
        args = ["-m", "fedgpu", "-v", "aggregator", "--listen", "127.0.0.1:0", "--db", str(self.work / "aggregator.db"), "--ready-file", str(ready)]
        proc = self.spawn([*args, "--tls-cert", str(self.certs.cert), "--tls-key", str(self.certs.key)], "aggregator.log")
        end = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > end:
                raise FedgpuError(f"the aggregator did not start; see {self.work / 'aggregator.log'}")
            time.sleep(0.05)
        self.address = ready.read_text().strip()
        return self.address

    def watch(self, driver: Any) -> None:
        """Abort the driver when the aggregator or every node has died, naming the log to read."""
        while not self.closed:
            agg, nodes = self.procs[0], self.procs[1:]
            if agg.poll() is not None:
                driver.abort(f"the aggregator exited (code {agg.returncode}); see {self.work / 'aggregator.log'}")
                return
            if nodes and all(p.poll() is not None for p in nodes):
                driver.abort(f"every node exited; see {self.work / 'node0.log'}")
                return
            time.sleep(0.5)

    def close(self) -> None:
        self.closed = True
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def run_demo(cfg: DemoConfig, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    from fedgpu.driver.driver import JobDriver

    if cfg.nodes < 1:
        raise ConfigError("--nodes must be >= 1")
    if cfg.nodes - cfg.slow_nodes < demo_cohort_size(cfg):
        raise ConfigError(
            f"--nodes {cfg.nodes} (less --slow-nodes) cannot fill one cohort of k = {demo_cohort_size(cfg)}: add nodes, or pass -k 1 "
            "(the driver then decrypts every single update)"
        )
    if cfg.free_riders + cfg.poisoners + cfg.lazy_nodes >= cfg.nodes:
        raise ConfigError("--free-riders + --poisoners + --lazy-nodes must leave at least one honest node")
    if cfg.public and cfg.epsilon is not None:
        raise ConfigError("--public: a public-data job needs no DP; drop --epsilon")
    if cfg.slow_nodes < 0 or cfg.slow_nodes + cfg.free_riders + cfg.poisoners + cfg.lazy_nodes > cfg.nodes - 1 or not cfg.slow_factor >= 1:
        raise ConfigError("--slow-nodes: honest nodes made slow, at most --nodes - 1 - free riders - poisoners - lazy nodes of them; --slow-factor must be >= 1")
    if cfg.flower_nodes and (cfg.flower_client is None or cfg.epsilon is not None or cfg.public):
        raise ConfigError("--flower-nodes needs --flower-client MODULE:ATTR, and no --epsilon or --public (a Flower client reads its own file and cannot run DP-SGD; docs/flower.md)")
    if cfg.flower_nodes + cfg.slow_nodes + cfg.free_riders + cfg.poisoners + cfg.lazy_nodes > cfg.nodes:
        raise ConfigError("--flower-nodes + --slow-nodes + --free-riders + --poisoners + --lazy-nodes must not exceed --nodes")
    if cfg.partition not in ("iid", "dirichlet"):
        raise ConfigError(f"--partition {cfg.partition!r}: allowed values are iid, dirichlet")
    job = build_job(cfg)
    progress = progress or (lambda ev: None)
    temp = cfg.out is None
    work = Path(tempfile.mkdtemp(prefix="fedgpu-demo-")) if cfg.out is None else cfg.out
    work.mkdir(parents=True, exist_ok=True)
    samples = cfg.samples if cfg.samples is not None else defaults(cfg)["samples"]
    train, test = public_split(cfg.dataset, num_samples=samples or None, seed=cfg.seed)  # --public: the nodes build it alike
    parts = (
        partition_iid(len(train), cfg.nodes, cfg.seed)
        if cfg.partition == "iid"
        else partition_dirichlet(train.y, cfg.nodes, cfg.alpha, cfg.seed)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **cfg.extra_env}
    cluster = Cluster(work, env)
    roles = _roles(cfg)
    node_roles: dict[str, str] = {}
    on_term = _terminate_as_interrupt()
    try:
        address = cluster.start_aggregator()
        progress({"event": "aggregator", "address": address, "work": str(work), "tls": True})
        for i, (idx, role) in enumerate(zip(parts, roles, strict=True)):
            home = work / f"node{i}"
            home.mkdir(exist_ok=True)
            node_roles[Identity.load_or_create(home / "identity.pem").node_id] = role
            data_args: list[str] = []
            data_file = home / f"{cfg.dataset}.npz"
            if not cfg.public:  # a public-data job's nodes have no files: they build the shard each task names
                save_npz(data_file, train.subset(idx))
                data_args = ["--data", f"{cfg.dataset}={data_file}"]
            # An honest node is the production `fedgpu node` (a Flower one with --flower-client); an adversary is its own entry point.
            entry = ["-m", "fedgpu", "node"] if role in ("honest", "flower") else ["-m", "fedgpu.adversaries", role]
            if role == "slow":
                entry += ["--slow-factor", str(cfg.slow_factor)]
            node_env: dict[str, str] = {}
            if role == "flower" and cfg.flower_client is not None:
                entry += ["--flower-client", cfg.flower_client]
                node_env["FLOWER_DATA"] = str(data_file)  # where examples/flower_client.py reads its own data
            args = [*entry, "--aggregator", address, *cluster.client_args, *data_args, "--home", str(home), "--name", f"node{i}", "--threads", "1"]
            if cfg.epsilon_cap is not None:
                args += ["--epsilon-cap", str(cfg.epsilon_cap)]
            cluster.spawn(args, f"node{i}.log", node_env)
        progress({"event": "nodes", "count": cfg.nodes, "sizes": [len(p) for p in parts], "roles": roles})
        driver = JobDriver(address, job, work / "job", validation=test, progress=progress, tls=cluster.tls)
        watchdog = threading.Thread(target=cluster.watch, args=(driver,), daemon=True)
        watchdog.start()
        report = driver.run()
        for node_id, info in report["nodes"].items():
            info["role"] = node_roles.get(node_id, "unknown")
            if info["role"] == "slow":
                info["slow_factor"] = cfg.slow_factor
        for node_id, role in node_roles.items():
            report["nodes"].setdefault(node_id, {"rounds": 0, "epsilon": None, "reward": None, "role": role})
        report["demo"] = {"nodes": cfg.nodes, "public": cfg.public, "partition": cfg.partition, "samples": len(train) + len(test), "work": str(work)}
        write_report(work / "job", report)
        return report
    finally:
        cluster.close()
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
        if temp and not cfg.keep:
            # keep the report and model: copy them out before removing the rest
            keep_dir = Path.cwd() / "runs" / "demo"
            keep_dir.mkdir(parents=True, exist_ok=True)
            for name in (*REPORT_FILES, "model.safetensors"):
                src = work / "job" / name
                if src.exists():
                    shutil.copy(src, keep_dir / name)
            shutil.rmtree(work, ignore_errors=True)


__all__ = ["Cluster", "DEFAULTS", "DEMO_SHAPLEY_BUDGET", "DP_DEFAULTS", "DemoConfig", "build_job", "defaults", "demo_cohort_size", "run_demo"]
