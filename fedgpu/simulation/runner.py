"""``fedgpu simulate``: a job spec run over a simulated population, on Ray, without gRPC.

Real: the job spec (fedgpu.config), uniform selection and cohort assignment as the aggregator does
them (seeded here, so that a run is reproducible), each member's local training, bounded claims and
encryption (fedgpu.simulation.worker), the key-free adder, the merge of cohorts that shrank below k,
and the driver's decrypt, claim checks, aggregation, valuation, evaluation and report
(fedgpu.driver: JobDriver without an aggregator). Simulated: the network (no gRPC, no signatures,
no TLS), node identities (names, no keys), time (a node's training time divided by its speed factor
decides whether it makes the deadline) and the nodes' data (partitions of one shared training set).

Ray is the engine: one actor per CPU (local, or on a cluster by address) takes cohorts from an
``ActorPool``; the training set is put once into Ray's object store and every round's model once.
"""

from __future__ import annotations

import dataclasses
import os
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedgpu import crypto
from fedgpu.aggregator.cohorts import assign_cohorts, co_membership, merge_small
from fedgpu.aggregator.rounds import task_seed
from fedgpu.config import JobConfig
from fedgpu.datasets import public_split
from fedgpu.driver.driver import JobDriver
from fedgpu.driver.sums import decrypt_sums
from fedgpu.errors import ConfigError, RoundFailed
from fedgpu.report import write_report
from fedgpu.simulation.population import Population
from fedgpu.simulation.worker import CohortResult, CohortWorker, Context
from fedgpu.wire import tensors
from fedgpu.wire.records import JobEvent, JobEventKind

INSTALL_HINT = 'fedgpu simulate runs on Ray, which is not installed here: pip install "fedgpu[sim]" (or pip install "ray[default]>=2.9,<3")'
ATTEMPTS = 3  # a round whose reports fall short of min_nodes (late nodes) is redrawn, as the aggregator retries
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SimulationConfig:
    nodes: int
    per_round: int | None = None          # None: the job's nodes_per_round
    rounds: int | None = None             # None: the job's rounds
    partition: str = "iid"
    alpha: float = 0.5
    samples_per_node: int | None = None   # None: the training set split evenly, at least one batch each
    train_samples: int | None = None      # generate this many samples (train + test; None: the dataset's default)
    speeds: dict[float, float] = field(default_factory=dict)
    behaviours: dict[str, float] = field(default_factory=dict)
    address: str | None = None            # a Ray cluster ("auto", "ray://HOST:10001"); None: a local Ray on this machine
    workers: int | None = None            # actors; None: one per CPU Ray sees


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    return ray


def simulated_job(job: JobConfig, cfg: SimulationConfig) -> JobConfig:
    """The job with the run's overrides (nodes per round, rounds), validated again."""
    per_round = cfg.per_round or job.nodes_per_round
    if job.data.standardize or job.public_data.enabled:
        raise ConfigError("simulate: [data] standardize and [public_data] are not simulated; drop them (simulated nodes hold partitions of the job's public dataset)")
    if per_round > cfg.nodes:
        raise ConfigError(f"--per-round {per_round}: more than the {cfg.nodes} simulated nodes (--nodes)")
    job = dataclasses.replace(
        job, nodes_per_round=per_round, min_nodes=min(job.min_nodes, per_round), cohort_size=min(job.cohort_size, per_round), rounds=cfg.rounds or job.rounds
    )
    return job.validate()


def run_simulation(job: JobConfig, cfg: SimulationConfig, out: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Run ``job`` over ``cfg.nodes`` simulated nodes; writes report.json (and the rest) like ``fedgpu train``."""
    ray = import_ray()
    from ray.util import ActorPool

    job = simulated_job(job, cfg)
    progress = progress or (lambda ev: None)
    started = time.perf_counter()
    train, test = public_split(job.dataset, num_samples=cfg.train_samples, seed=job.seed)
    if job.validation_samples:
        test = test.subset(np.arange(min(job.validation_samples, len(test))))
    samples = cfg.samples_per_node or max(len(train) // cfg.nodes, job.training.batch_size)
    population = Population(cfg.nodes, train.y, samples, job.seed, cfg.partition, cfg.alpha, cfg.speeds, cfg.behaviours)
    driver = JobDriver(None, job, out, validation=test)
    driver.job_id = f"sim-{job.name}"
    keys = driver.keys
    ctx = Context(job, keys.params, keys.public_material, keys.values_per_chunk, driver.num_params)
    adder = crypto.adder(job.encryption.scheme, keys.params)

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # A local Ray starts its workers niced; here they are the nodes' compute, not background work: on a
    # busy machine niced actors would starve behind everything else.
    os.environ.setdefault("RAY_worker_niceness", "0")
    own_ray = not ray.is_initialized()
    if own_ray:
        if cfg.address is None:
            ray.init(num_cpus=cfg.workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        else:  # the cluster's workers get this fedgpu; torch, tenseal and the rest must be installed there
            import fedgpu

            ray.init(address=cfg.address, runtime_env={"py_modules": [str(Path(fedgpu.__file__).parent)]}, log_to_driver=False, logging_level="ERROR")
    try:
        workers = cfg.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        x_ref, y_ref = ray.put(train.x), ray.put(train.y)
        # An actor Ray kills (its memory monitor, on a crowded machine) is restarted and its cohort retried: a cohort's work is pure.
        actor = ray.remote(num_cpus=1, max_restarts=3, max_task_retries=3)(CohortWorker)
        pool = ActorPool([actor.remote(x_ref, y_ref, ctx) for _ in range(workers)])
        setup_seconds = time.perf_counter() - started
        history: list[list[list[str]]] = []
        previous: np.ndarray | None = None
        worker_rss = 0.0
        for rnd in range(1, job.rounds + 1):
            t_round = time.perf_counter()
            start = tensors.flatten(driver.state)
            start_ref, previous_ref = ray.put(start), ray.put(previous)
            for attempt in range(ATTEMPTS):
                # Selection and cohorts as the aggregator draws them (fedgpu.aggregator.rounds), from seeded generators.
                chosen = random.Random(job.seed * 1_000_003 + rnd * 1009 + attempt).sample(range(cfg.nodes), job.nodes_per_round)
                numbers = {population.name(i): i for i in chosen}
                cohorts = assign_cohorts(list(numbers), job.cohort_size, random.Random(job.seed * 7_777_777 + rnd * 1013 + attempt), co_membership(history))
                work = [
                    (ci, [dataclasses.replace(n, seed=task_seed(job.seed, rnd, n.name)) for n in population.nodes([numbers[m] for m in members])])
                    for ci, members in enumerate(cohorts)
                ]
                results: list[CohortResult] = sorted(
                    pool.map_unordered(lambda a, w: a.run.remote(w[0], w[1], w[2], w[3]), [(ci, nodes, start_ref, previous_ref) for ci, nodes in work]), key=lambda r: r.cohort
                )
                groups = merge_small([len(r.reported) for r in results], job.cohort_size)
                if groups is not None and sum(len(r.reported) for r in results) >= job.min_nodes:
                    break
                progress({"event": "retry", "round": rnd, "message": f"attempt {attempt + 1}: too few of {len(chosen)} nodes made the deadline"})
            else:
                raise RoundFailed(f"round {rnd}: fewer than min_nodes = {job.min_nodes} nodes made the deadline in {ATTEMPTS} attempts; lower --speed-mix's slow share or raise deadline_seconds")
            worker_rss = max([worker_rss] + [r.peak_rss_mb for r in results])
            t_sums = time.perf_counter()
            by_cohort: dict[int, tuple[list[str], list[bytes]]] = {}
            for gi, g in enumerate(groups):  # the aggregator's close: cohorts below k merged, then released as one sum each
                acc = [a.copy() for a in results[g[0]].accumulators] if results[g[0]].reported else None
                for ci in g[1:]:
                    if results[ci].reported:
                        acc = [a.copy() for a in results[ci].accumulators] if acc is None else [adder.combine(x, y) for x, y in zip(acc, results[ci].accumulators, strict=True)]
                if acc is None:
                    raise RoundFailed(f"internal: a reporting cohort of round {rnd} has no sum")
                by_cohort[gi] = (sorted(m for ci in g for m in results[ci].reported), [adder.to_bytes(a) for a in acc])
            t_decrypt = time.perf_counter()
            sums, dropped = decrypt_sums(by_cohort, driver.decryptor, driver.layout, keys, job, f"simulation round {rnd}")
            t_driver = time.perf_counter()
            status = {k: v for r in results for k, v in r.status.items()}
            up = {k: v for r in results for k, v in r.bytes_up.items()}
            train_s = {k: v for r in results for k, v in r.train_seconds.items() if status[k] == "complete"}
            down = len(tensors.state_to_bytes(driver.state))
            ev = JobEvent(
                kind=JobEventKind.SUMS_READY, round=rnd, participants=tuple(sorted(m for members, _ in by_cohort.values() for m in members)),
                cohorts=tuple(tuple(members) for members, _ in by_cohort.values()), bytes_up=sum(up.values()), bytes_down=down * len(status),
                seconds=min(job.deadline_seconds, max(train_s.values(), default=0.0)), node_status=status, train_seconds=train_s,
                bytes_up_by_node=up, bytes_down_by_node=dict.fromkeys(status, down), node_names={n: n for n in status},
                aggregation_seconds=sum(r.seconds["add"] for r in results),
            )
            rec, _ = driver.apply_sums(ev, sums, dropped, t_decrypt)
            driver.version = rnd
            history.append([list(members) for members, _ in by_cohort.values()])
            previous = start
            done = time.perf_counter()
            value = float(rec.get("valuation", {}).get("seconds", 0.0))
            rec["simulation"] = {
                "attempts": attempt + 1,
                "wall_seconds": done - t_round,
                # seconds summed over the actors (train, encrypt, add: wall time inside each) and on the driver (combine .. evaluate)
                "phases": {
                    "train": sum(r.seconds["train"] for r in results),
                    "encrypt": sum(r.seconds["encrypt"] for r in results),
                    "add": sum(r.seconds["add"] for r in results) + (t_decrypt - t_sums),
                    "decrypt": t_driver - t_decrypt,
                    "value": value,
                    "evaluate": done - t_driver - value,
                },
                "workers_seconds": t_sums - t_round,  # wall time until every cohort's sum was back
                "actor_cpu_seconds": {k: sum(r.cpu_seconds[k] for r in results) for k in ("train", "encrypt", "add")},
                "late": sum(1 for s in status.values() if s.startswith("late")),
            }
            elapsed = time.perf_counter() - started
            progress({"event": "round", **rec, "elapsed": elapsed, "eta": (elapsed - setup_seconds) / rnd * (job.rounds - rnd), "rounds_total": job.rounds})
        seconds = time.perf_counter() - started
        report = driver.finish(seconds)
        report["simulation"] = {
            "nodes": cfg.nodes,
            "per_round": job.nodes_per_round,
            "cohort_size": job.cohort_size,
            "partition": cfg.partition,
            "alpha": cfg.alpha if cfg.partition == "dirichlet" else None,
            "samples_per_node": samples,
            "train_samples": len(train),
            "sample_repeats": population.repeats,  # > 1: nodes share samples (nodes x samples_per_node > the training set)
            "speeds": {str(k): v for k, v in cfg.speeds.items()},
            "behaviours": dict(cfg.behaviours),
            "workers": workers,
            "ray_address": cfg.address or "local",
            "setup_seconds": setup_seconds,
            "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_rss_mb": worker_rss,
        }
        write_report(out, report)
        return report
    finally:
        if own_ray:
            ray.shutdown()


__all__ = ["ATTEMPTS", "INSTALL_HINT", "Progress", "SimulationConfig", "import_ray", "run_simulation", "simulated_job"]
