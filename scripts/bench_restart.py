"""Crash sweep: SIGKILL the aggregator at seeded random moments of jobs with rewards on, restart it on
the same database and port, and count what a crash could have broken. Then kill the driver twice and
resume it. Prints one JSON object.

    .venv/bin/python scripts/bench_restart.py                 # 21 kills on plaintext, 9 on CKKS
    .venv/bin/python scripts/bench_restart.py --kills 30 --ckks-kills 12 --seed 1

Defect counts (all must be 0):
- foreign_sums: released cohort sums whose weight slot is not the sum of its listed members' weights
  (nodes hold unequal shards, so a leftover update from a killed attempt shows);
- driver_ledger_mismatch: nodes whose reward total in the driver's report differs from the ledger's;
- duplicate_payments: (job, round, node) paid more than once; ledger_verify_failures: chains that do not verify;
- receipts_lost: ledger rows whose receipt never reached its node's receipts.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedgpu.aggregator.store import Store
from fedgpu.cli.rewards import verify
from fedgpu.config import EncryptionConfig, JobConfig, RewardsConfig, TrainingConfig
from fedgpu.datasets import ArrayDataset, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.node.agent import NodeAgent, NodeConfig
from fedgpu.rewards.chain import Receipt

SIZES = (200, 330, 560)  # unequal shards: a foreign update shows in a sum's weight slot
WEIGHT_SCALE = 1e-3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Aggregator:
    """The aggregator as a real process, restarted on the same database and port after each kill."""

    def __init__(self, work: Path) -> None:
        self.port, self.db, self.log = free_port(), work / "agg.db", work / "agg.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = self.db.with_suffix(".addr")
        ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fedgpu", "aggregator", "--listen", self.address, "--db", str(self.db), "--ready-file", str(ready)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )
        while not ready.exists():
            if self.proc.poll() is not None:
                raise SystemExit(f"aggregator died on start: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


def start_nodes(address: str, work: Path, train: ArrayDataset) -> list[tuple[NodeAgent, threading.Thread]]:
    nodes, start = [], 0
    for i, n in enumerate(SIZES):
        f = work / f"node{i}.npz"
        save_npz(f, train.subset(np.arange(start, start + n)))
        start += n
        agent = NodeAgent(NodeConfig(aggregator=address, data={"digits": f}, identity_path=work / f"node{i}" / "id.pem", poll_seconds=1))
        th = threading.Thread(target=agent.run, daemon=True)
        th.start()
        nodes.append((agent, th))
    return nodes


def stop_nodes(nodes: list[tuple[NodeAgent, threading.Thread]]) -> None:
    for agent, _ in nodes:
        agent.stop()
    for agent, th in nodes:
        th.join(15)
        agent.channel.close()


def job_config(scheme: str, rounds: int, seed: int) -> JobConfig:
    return JobConfig(
        name="restart", model="digits_cnn", dataset="digits", rounds=rounds, nodes_per_round=3, min_nodes=2, deadline_seconds=20, seed=seed,
        training=TrainingConfig(epochs=3, batch_size=16, lr=0.05), encryption=EncryptionConfig(scheme), rewards=RewardsConfig(pool_per_round=100.0, budget=16),
    ).validate()


def audit(db: Path, report: dict[str, Any], nodes: list[tuple[NodeAgent, threading.Thread]], rounds: int, wait: float = 30.0) -> dict[str, int]:
    """The defect counts of one finished job."""
    weight = {a.node_id: n * WEIGHT_SCALE for (a, _), n in zip(nodes, SIZES, strict=True)}
    foreign = sum(
        abs(w - sum(weight[m] for m in members)) > 1e-4
        for r in report["rounds"] for members, w in zip(r["cohorts"], r["cohort_weights"], strict=True)
    )
    store = Store(str(db))
    try:
        rows = store.ledger_rows(report["job"])
        keys = [(r["round"], r["node_id"]) for r in rows]
        ledger: dict[str, float] = {}
        for r in rows:
            ledger[r["node_id"]] = ledger.get(r["node_id"], 0.0) + r["reward"]
        mismatch = sum(abs((report["nodes"].get(n, {}).get("reward") or 0.0) - v) > 1e-9 for n, v in ledger.items())
        ok, _ = verify(store, None)
        end = time.monotonic() + wait
        while True:  # nodes pick up receipts with their next pulls (every second here)
            lost = 0
            for agent, _ in nodes:
                lines = agent.receipts_path.read_text().splitlines() if agent.receipts_path.exists() else []
                held = {(rc.job_id, rc.round) for rc in map(Receipt.from_json, filter(None, lines))}
                lost += sum((r["job_id"], r["round"]) not in held for r in rows if r["node_id"] == agent.node_id)
            if lost == 0 or time.monotonic() > end:
                break
            time.sleep(0.2)
    finally:
        store.engine.dispose()
    return {
        "foreign_sums": int(foreign), "driver_ledger_mismatch": int(mismatch), "duplicate_payments": len(keys) - len(set(keys)),
        "ledger_verify_failures": int(not ok), "receipts_lost": lost, "missing_rounds": int([r["round"] for r in report["rounds"]] != list(range(1, rounds + 1)) or sorted({k for k, _ in keys}) != list(range(1, rounds + 1))),
    }


def run_job(scheme: str, rounds: int, seed: int, kills: int, rng: random.Random, validation: ArrayDataset, train: ArrayDataset) -> dict[str, Any]:
    """One job; ``kills`` SIGKILLs of the aggregator at random moments, each followed by a restart."""
    with tempfile.TemporaryDirectory(prefix="fedgpu-restart-") as tmp:
        work = Path(tmp)
        agg = Aggregator(work)
        agg.start()
        nodes = start_nodes(agg.address, work, train)
        opened: list[float] = []
        driver = JobDriver(agg.address, job_config(scheme, rounds, seed), work / "out", validation=validation,
                           progress=lambda ev: opened.append(time.monotonic()) if ev["event"] == "round_opened" else None)
        result: dict[str, Any] = {}
        t0 = time.monotonic()
        th = threading.Thread(target=lambda: result.update(driver.run()), daemon=True)
        th.start()
        recoveries: list[float] = []
        done = 0
        try:
            for _ in range(kills):
                time.sleep(rng.uniform(0.3, 3.0))
                if not th.is_alive():
                    break
                agg.kill()
                done += 1
                killed = time.monotonic()
                agg.start()
                end = killed + 120
                while th.is_alive() and not any(t > killed for t in opened) and time.monotonic() < end:
                    time.sleep(0.02)
                after = [t for t in opened if t > killed]
                if after:
                    recoveries.append(after[0] - killed)
            th.join(600)
            if th.is_alive():
                raise SystemExit(f"job did not finish: {agg.log.read_text()[-2000:]}")
            seconds = time.monotonic() - t0
            defects = audit(agg.db, result, nodes, rounds)
        finally:
            stop_nodes(nodes)
            agg.stop()
        return {"seconds": seconds, "kills": done, "recoveries": recoveries, "accuracy": result["final_accuracy"],
                "paid": sum((i.get("reward") or 0.0) for i in result["nodes"].values()), **defects}


def driver_resume_run(rounds: int, seed: int, rng: random.Random, validation: ArrayDataset, train: ArrayDataset, kills: int = 2) -> dict[str, Any]:
    """The driver as a `fedgpu train` process, SIGKILLed ``kills`` times at random moments and resumed."""
    with tempfile.TemporaryDirectory(prefix="fedgpu-resume-") as tmp:
        work = Path(tmp)
        agg = Aggregator(work)
        agg.start()
        nodes = start_nodes(agg.address, work, train)
        val = work / "val.npz"
        save_npz(val, validation)
        spec = work / "job.toml"
        spec.write_text(
            f'name = "resume"\nmodel = "digits_cnn"\ndataset = "digits"\nrounds = {rounds}\nnodes_per_round = 3\nmin_nodes = 2\ncohort_size = 1\n'
            f'deadline_seconds = 20\nseed = {seed}\n[training]\nepochs = 3\nbatch_size = 16\nlr = 0.05\n[encryption]\nscheme = "none"\n'
            '[rewards]\npool_per_round = 100\nbudget = 16\n'
        )
        out, log = work / "out", (work / "driver.log").open("ab")
        args = [str(spec), "--out", str(out), "--validation", str(val)]
        try:
            killed = 0
            targets = sorted(rng.sample(range(1, rounds), kills)) if kills else []
            while True:
                proc = subprocess.Popen([sys.executable, "-m", "fedgpu", "train", *args, "--aggregator", agg.address], stdout=log, stderr=subprocess.STDOUT)
                if killed < len(targets):  # once the driver has applied round `target`, kill it somewhere in the next
                    while proc.poll() is None and _driver_version(out) < targets[killed]:
                        time.sleep(0.05)
                    time.sleep(rng.uniform(0.0, 1.0))
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGKILL)
                        killed += 1
                proc.wait(600)
                if proc.returncode == 0:
                    break
                if proc.returncode != -signal.SIGKILL:
                    raise SystemExit(f"driver failed ({proc.returncode}): see {work / 'driver.log'}")
                args = ["--resume", str(out)]
            report = json.loads((out / "report.json").read_text())
            defects = audit(agg.db, report, nodes, rounds)
        finally:
            stop_nodes(nodes)
            agg.stop()
        return {"driver_kills": killed, "accuracy": report["final_accuracy"], "paid": sum((i.get("reward") or 0.0) for i in report["nodes"].values()), **defects}


def _driver_version(out: Path) -> int:
    from fedgpu.driver.state import STATE_FILE, load_state

    try:
        return load_state(out).version if (out / STATE_FILE).exists() else -1
    except Exception:  # replaced while read: ask again
        return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=21, help="aggregator kills on plaintext jobs (default %(default)s)")
    ap.add_argument("--ckks-kills", type=int, default=9, help="aggregator kills on CKKS jobs (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    train, validation = public_split("digits", seed=0)
    defect_keys = ("foreign_sums", "driver_ledger_mismatch", "duplicate_payments", "ledger_verify_failures", "receipts_lost", "missing_rounds")
    runs: list[dict[str, Any]] = []
    clean = [run_job("none", args.rounds, args.seed, 0, rng, validation, train) for _ in range(2)]
    per_job = 7
    for scheme, total in (("none", args.kills), ("ckks", args.ckks_kills)):
        left = total
        while left > 0:
            r = run_job(scheme, args.rounds, args.seed, min(per_job, left), rng, validation, train)
            runs.append({"scheme": scheme, **r})
            left -= r["kills"]
    # The driver as `fedgpu train`: uninterrupted twice (the spread), then killed twice and resumed, same seed.
    drivers_clean = [driver_resume_run(args.rounds, args.seed, rng, validation, train, kills=0) for _ in range(2)]
    resumed = [driver_resume_run(args.rounds, args.seed, rng, validation, train, kills=2)]
    recoveries = [x for r in runs for x in r["recoveries"]]
    everything = runs + resumed + drivers_clean
    out = {
        "kills": sum(r["kills"] for r in runs),
        "kills_by_scheme": {s: sum(r["kills"] for r in runs if r["scheme"] == s) for s in ("none", "ckks")},
        "job_s_uninterrupted": statistics.median(r["seconds"] for r in clean),
        "job_s_with_kills": statistics.median(r["seconds"] for r in runs if r["scheme"] == "none"),
        "recovery_s_median": statistics.median(recoveries) if recoveries else None,
        "recovery_s_max": max(recoveries) if recoveries else None,
        **{k: sum(r[k] for r in everything) for k in defect_keys},
        "driver_kills": sum(r["driver_kills"] for r in resumed),
        "driver_resumed_accuracy": [r["accuracy"] for r in resumed],
        "driver_resumed_paid": [r["paid"] for r in resumed],
        "driver_uninterrupted_accuracy": [r["accuracy"] for r in drivers_clean],
        "driver_uninterrupted_paid": [r["paid"] for r in drivers_clean],
        "uninterrupted_accuracy": [r["accuracy"] for r in clean],
        "uninterrupted_paid": [r["paid"] for r in clean],
        "with_kills_paid": [r["paid"] for r in runs],
        "with_kills_accuracy": [r["accuracy"] for r in runs],
        "rounds": args.rounds,
        "durability": "an attempt not closed is discarded on restart: no fsync per upload; one transaction per closed round and per publish",
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
