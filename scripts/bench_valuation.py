"""Valuation benchmark: cohort Shapley + ridge per-node values against exact per-node Shapley.

Everything is the real loop in one process: a LocalAggregator (grpc.aio on 127.0.0.1), NodeAgent
threads, a JobDriver whose RoundValuer values the round's cohorts. Five jobs over MNIST-1D, 10 nodes
each, all nodes in every round (nodes_per_round = min_nodes = 10):

  k1    fidelity reference: k = 1, so every node is its own cohort and the round's Shapley values
        are exact *per-node* values (10 players: 2^10 = 1024 subsets, so rewards.budget = 1024 to keep
        it exact instead of sampled). Reference per-node value = sum over rounds of node_values.
  k3    the same nodes, data and seed with k = 3 (cohorts of 3-4): the system's per-node value is the
        ridge estimate report["valuation"]["estimates"] (value per round taken part in; every node
        takes part in every round, so it ranks like a total). ``spearman`` compares it with k1.
  adv   k = 3, 7 honest nodes (400..800 samples, 0..10 % label noise) + 2 free
        riders (zeros, replay) + 1 poisoner (signflip x10), through
        fedgpu.adversaries.apply_behaviour. Rewards are summed per node over rounds.
  adv1  the adversary run's nodes at k = 1: exact per-node values and what the payout rule pays when it
        can see them; and, from those values, ``k3_identifiability_bound``: how often cohorts of 3 let a
        free rider's estimate rank above the honest median even in an exactly additive game.
  plain the k3 run's nodes with rewards off: plain FedAvg, the accuracy the valued server is held to.

With ``--selection`` (instead of those five): a private-data job at k = 3 with 6 of 10 nodes a round
(8 honest, 2 free riders), 40 rounds, once with ``[selection] rule = "utility"`` (k3sel) and once with
"uniform" (k3uni); ``k3_selection_free_rider_ratio`` (and ``_uniform``) is the better free rider's total
reward over the honest median total. At k > 1 utility selection draws uniformly among the nodes in time
for the deadline (docs/selection.md), so the two runs differ by their draws and the runs' own noise. k3sel1 runs the same nodes at k = 1 (budget 256: sampled, to keep 40 rounds short) for the identifiability bound
beside it (``k3_selection_bound_free_rider_above_honest_median``, at 40 rounds). These runs train 1 local
epoch at lr 0.02 (``--selection-epochs``, ``--selection-lr``): at 3 epochs and lr 0.05 the model has
converged by round ~8, every later round's gain is below the driver's noise floor for every node, and
32 rounds that nobody can be valued in tell a free rider from an honest node no better than 8 do
(docs/selection.md, "What a longer job needs").

Honest nodes of the fidelity runs differ in worth: 200..800 samples and 0..50 % label noise (the
labels of that fraction of a node's samples are replaced by uniform random labels in its training
file). Encryption is "none": valuation only sees decrypted cohort sums, which are the same under CKKS
up to its noise.

Prints ONE JSON object (stdout); progress goes to stderr.

    .venv/bin/python scripts/bench_valuation.py              # 20 rounds, one seed: ~4 min on 2 shared cores
    .venv/bin/python scripts/bench_valuation.py --seeds 0,1,2,3  # medians over four seeds: ~16 min
    .venv/bin/python scripts/bench_valuation.py --quick      # 6 rounds, under a minute: a smoke run, numbers mean little
    .venv/bin/python scripts/bench_valuation.py --scaling 10,30,100   # the driver's valuation time per round by cohort count
    .venv/bin/python scripts/bench_valuation.py --selection --seeds 0,1  # selection vs free riders: ~25 min

``--scaling`` runs only the cost study: for each cohort count C, C nodes of 500 samples each train one
local epoch from the same global model (k = 1, so C cohorts), and the driver's RoundValuer values the
round (its job defaults: budget 256, the step and momentum grids) for ``--scaling-rounds`` rounds (6), each
starting where the last one's update left the model. It reports the valuation's seconds per round (rounds 2.., where
the server's momentum is set), its forward passes, one node's training time for scale, and the
estimator's fidelity: Spearman of the values against exact Shapley at 8 cohorts (the sampled estimator
forced) and against a 4x-budget estimate at C.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: node threads share 2 cores

import argparse
import json
import math
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

if not os.environ.get("PYTHONPATH"):  # this checkout, unless PYTHONPATH names a tree to measure (a baseline)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedgpu.adversaries import apply_behaviour
from fedgpu.aggregator.cohorts import assign_cohorts, co_membership
from fedgpu.aggregator.local import LocalAggregator
from fedgpu.config import EncryptionConfig, JobConfig, RewardsConfig, SelectionConfig, TrainingConfig
from fedgpu.datasets import ArrayDataset, public_split, save_npz
from fedgpu.driver.driver import JobDriver
from fedgpu.node.agent import NodeConfig
from fedgpu.node.threads import NodeThreads
from fedgpu.rewards import NodeValueEstimator, round_observations

DATASET = "mnist1d"
NUM_CLASSES = 10
POOL = 100.0

# (samples, label-noise fraction) of the honest nodes: sizes spread 4x, noise 0..50 %, not sorted,
# so that worth is not a function of the node's index.
HONEST = [(800, 0.0), (200, 0.0), (600, 0.5), (400, 0.0), (700, 0.25), (300, 0.1), (500, 0.0), (250, 0.4), (650, 0.0), (350, 0.5)]
# The adversary run's 7 honest nodes: 400-800 samples, label noise 0-10 %. The free-rider figures
# compare against the honest median, and in the k = 1 runs of HONEST the nodes with 200-300 samples or
# >= 25 % noise are measured at about 0 or below: the first 7 of HONEST have a median exact value of
# about 0.004 per round (in the units of the estimates), a free rider 0, and against that median any
# reward at all is a huge ratio. These have 0.03-0.07 (adv1 runs, seeds 0-3).
# ``--adversary-honest mixed`` runs the first 7 of HONEST instead.
ADVERSARY_HONEST = [(800, 0.0), (400, 0.0), (650, 0.1), (500, 0.0), (700, 0.0), (450, 0.1), (600, 0.0)]
ADVERSARY_SAMPLES = 500  # the data an adversary holds (its FedAvg weight; the poisoner trains on it)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    role: str  # honest | free_rider | poisoner
    behaviour: str  # a name in fedgpu.adversaries.BEHAVIOURS
    samples: int
    label_noise: float


@dataclass(frozen=True)
class Settings:
    rounds: int
    seed: int
    model: str
    epochs: int
    batch_size: int
    lr: float
    validation_samples: int
    deadline_seconds: float
    free_riders: tuple[str, ...]
    poisoner: str


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- data --------------------------------------------------------------------------------------
def node_specs(adversary_honest: str = "positive") -> tuple[list[NodeSpec], list[NodeSpec]]:
    """(the fidelity nodes, the adversary run's honest nodes); names are stable across runs."""
    honest = [NodeSpec(f"h{i}-n{n}-noise{int(100 * p)}", "honest", "honest", n, p) for i, (n, p) in enumerate(HONEST)]
    if adversary_honest == "mixed":
        return honest, honest[:7]
    return honest, [NodeSpec(f"a{i}-n{n}-noise{int(100 * p)}", "honest", "honest", n, p) for i, (n, p) in enumerate(ADVERSARY_HONEST)]


def write_node_files(specs: list[NodeSpec], train: ArrayDataset, work: Path, seed: int) -> dict[str, Path]:
    """Disjoint slices of the shuffled train split, one .npz per node, with its label noise applied."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(train))
    need = sum(s.samples for s in specs)
    if need > len(train):
        raise SystemExit(f"internal: nodes need {need} samples, the train split has {len(train)}")
    files, at = {}, 0
    for s in specs:
        part = train.subset(np.sort(perm[at : at + s.samples]))
        at += s.samples
        y = part.y.copy()
        noisy = rng.random(len(y)) < s.label_noise
        y[noisy] = rng.integers(0, NUM_CLASSES, size=int(noisy.sum()))
        files[s.name] = work / "data" / f"{s.name}.npz"
        files[s.name].parent.mkdir(parents=True, exist_ok=True)
        save_npz(files[s.name], ArrayDataset(part.x, y))
    return files


# ---- one job -----------------------------------------------------------------------------------
def run_job(
    tag: str, specs: list[NodeSpec], files: dict[str, Path], k: int, budget: int, st: Settings, validation: ArrayDataset, work: Path,
    pool: float = POOL, nodes_per_round: int | None = None, selection: str = "utility",
) -> tuple[dict[str, Any], dict[str, str], float]:
    """Run one job to the end; returns (report, node_id -> name, wall seconds). Stops everything it started.
    ``pool`` 0 turns rewards off: plain FedAvg of every cohort at step 1, nothing valued. ``nodes_per_round``
    (default: every node) below the node count lets ``selection`` (utility | uniform) choose."""
    run_dir = work / tag
    run_dir.mkdir(parents=True)
    per_round = nodes_per_round or len(specs)
    job = JobConfig(
        name=f"bench-valuation-{tag}",
        model=st.model,
        dataset=DATASET,
        rounds=st.rounds,
        nodes_per_round=per_round,
        min_nodes=per_round,
        selection=SelectionConfig(rule=selection),
        deadline_seconds=st.deadline_seconds,
        cohort_size=k,
        seed=st.seed,
        training=TrainingConfig(epochs=st.epochs, batch_size=st.batch_size, lr=st.lr),
        encryption=EncryptionConfig("none"),
        rewards=RewardsConfig(pool_per_round=pool, budget=budget),
    ).validate()
    t0 = time.perf_counter()
    agg = LocalAggregator(str(run_dir / "agg.db"), run_dir / "spool")
    nodes = NodeThreads()
    driver: JobDriver | None = None
    try:
        agg.start()
        for s in specs:
            # Identities live outside the run folder: the same node keeps its node_id in every run.
            cfg = NodeConfig(aggregator=agg.address, data={DATASET: files[s.name]}, identity_path=work / "ids" / s.name / "id.pem", name=s.name, poll_seconds=1)
            apply_behaviour(cfg, s.behaviour)
            nodes.start(cfg, f"node-{s.name}")

        def progress(ev: dict[str, Any]) -> None:
            if ev["event"] == "round":
                v = ev.get("valuation") or {}
                log(
                    f"  [{tag}] round {ev['round']}/{st.rounds}: acc {ev['accuracy']:.3f} loss {ev['loss']:.3f}  "
                    f"round {ev['seconds']:.1f}s + driver {ev['driver_seconds']:.1f}s (valuation {v.get('seconds', 0):.2f}s, "
                    f"{v.get('evaluations', 0)} evals, {len(ev['cohorts'])} cohorts)  elapsed {ev['elapsed']:.0f}s"
                )
            elif ev["event"] in ("retry", "reconnect"):
                log(f"  [{tag}] {ev['event']}: {ev.get('message', '')}")

        driver = JobDriver(agg.address, job, run_dir / "out", validation=validation, progress=progress)
        report = driver.run()
    finally:
        nodes.stop()
        if driver is not None:
            driver.channel.close()
        agg.stop()
    names = {agent.node_id: s.name for agent, s in zip(nodes.agents, specs, strict=False)}
    return report, names, time.perf_counter() - t0


# ---- measures ----------------------------------------------------------------------------------
def ranks(x: list[float]) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as Spearman's rho needs."""
    a = np.asarray(x, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a))
    r[order] = np.arange(len(a), dtype=np.float64)
    for v in np.unique(a):
        tie = a == v
        r[tie] = r[tie].mean()
    return r


def spearman(x: list[float], y: list[float]) -> float:
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def per_node_sum(report: dict[str, Any], field: str, names: dict[str, str], last_round: int | None = None, first_round: int = 1) -> dict[str, float]:
    """Sum over rounds [first_round, last_round] of record["valuation"][field][node], by node name."""
    out = {name: 0.0 for name in names.values()}
    for rec in report["rounds"]:
        if rec["round"] < first_round or (last_round is not None and rec["round"] > last_round):
            continue
        for node_id, v in (rec.get("valuation") or {}).get(field, {}).items():
            out[names[node_id]] += float(v)
    return out


def estimates(report: dict[str, Any], names: dict[str, str]) -> dict[str, float]:
    return {names[n]: float(v) for n, v in report["valuation"]["estimates"].items()}


def cost(report: dict[str, Any]) -> dict[str, Any]:
    vals = [r["valuation"] for r in report["rounds"]]
    evals = [v["evaluations"] for v in vals]
    val_s = sum(v["seconds"] for v in vals)
    round_s = sum(r["seconds"] + r["driver_seconds"] for r in report["rounds"])
    return {
        "evaluations_median": statistics.median(evals),
        "evaluations_max": max(evals),
        "valuation_seconds_total": round(val_s, 2),
        "round_seconds_total": round(round_s, 2),
        "valuation_time_fraction": val_s / round_s,
        "cohorts_per_round": statistics.median(len(r["cohorts"]) for r in report["rounds"]),
        "rounds_with_excluded_cohorts": sum(1 for r in report["rounds"] if r["excluded_cohorts"]),
        "zeroed_cohort_values": sum(1 for v in vals for c in v["cohort_values"] if c == 0.0),
        "final_accuracy": report["final_accuracy"],
    }


def ratio(x: float, median_honest: float) -> float | None:
    """x over the honest median; None (JSON null) when both are 0: nobody was paid, nothing to compare."""
    if median_honest > 0:
        return x / median_honest
    return None if x == 0 else math.inf


def reward_measures(report: dict[str, Any], names: dict[str, str], specs: list[NodeSpec], upto: int | None, first_round: int = 1) -> dict[str, Any]:
    totals = per_node_sum(report, "rewards", names, upto, first_round)
    role = {s.name: s.role for s in specs}
    honest = [totals[n] for n in totals if role[n] == "honest"]
    riders = {n: totals[n] for n in totals if role[n] == "free_rider"}
    poisoners = {n: totals[n] for n in totals if role[n] == "poisoner"}
    median_honest = statistics.median(honest)
    line = max(riders.values())
    everything = sum(totals.values())
    return {
        "rounds": [first_round, upto if upto is not None else report["rounds"][-1]["round"]],
        "honest_median_reward": median_honest,
        "free_rider_reward_ratio": {n: ratio(v, median_honest) for n, v in riders.items()},
        "free_rider_reward_ratio_max": ratio(line, median_honest),
        "poisoner_reward_share": (sum(poisoners.values()) / everything) if everything > 0 else 0.0,
        "honest_below_line_fraction": sum(1 for h in honest if h < line) / len(honest),
        "rewards": totals,
    }


def identifiability(report: dict[str, Any], names: dict[str, str], specs: list[NodeSpec], k: int = 3, draws: int = 200, seed: int = 0) -> dict[str, Any]:
    """What cohorts of k can tell at best about the adversary run's nodes.

    ``report`` is the k = 1 run of the same nodes: every node's exact per-round value. Summing those
    into the aggregator's cohorts (random partitions of k, least co-membership first) gives the cohort
    values of an *exactly additive* game, with no curvature, no robust-rule choices, nothing but the
    partition between the node and the driver; they go through the estimator the driver uses (values
    bounded by and divided by the square root of the round's largest kept value; a cohort worth less
    than 0 is left out). Reported per horizon: how often (over ``draws`` cohort draws) the better free
    rider's estimate ranks above the honest median's, which no payout rule that only sees these
    estimates can undo, and each node kind's estimate spread against the honest median's own value.
    """
    role = {s.name: s.role for s in specs}
    rounds = []
    for rec in report["rounds"]:
        vals = rec["valuation"]["cohort_values"]
        rounds.append({names[c[0]]: float(v) for c, v in zip(rec["cohorts"], vals, strict=False)})
    nodes = sorted(rounds[0])
    honest = [n for n in nodes if role[n] == "honest"]
    riders = [n for n in nodes if role[n] == "free_rider"]
    truth = {n: 0.0 for n in nodes}
    for vals in rounds:
        scale = max([abs(v) for v in vals.values() if v > 0] + [1e-12])
        for n, obs in zip(nodes, round_observations([vals[n] for n in nodes], scale), strict=True):
            truth[n] += obs / len(rounds)
    out: dict[str, Any] = {"k": k, "draws": draws, "honest_median_value_per_round": statistics.median(truth[n] for n in honest)}
    horizons = sorted({min(10, len(rounds)), len(rounds)})
    est_at: dict[int, list[dict[str, float]]] = {h: [] for h in horizons}
    rng = random.Random(seed)
    for _ in range(draws):
        est, cohorts_by_round = NodeValueEstimator(), []
        for t, vals in enumerate(rounds, start=1):
            cohorts = assign_cohorts(nodes, k, rng, co_membership(cohorts_by_round))
            cohorts_by_round.append(cohorts)
            values = [math.fsum(vals[m] for m in c) for c in cohorts]
            scale = max([v for v in values if v > 0] + [1e-12])
            est.observe_round(t, cohorts, round_observations(values, scale))
            if t in est_at:
                est_at[t].append(est.estimates())
    for h, runs in est_at.items():
        above = [max(e[n] for n in riders) > statistics.median(e[n] for n in honest) for e in runs]
        spread = {n: float(np.std([e[n] for e in runs])) for n in nodes}
        out[f"round{h}"] = {
            "free_rider_above_honest_median_fraction": sum(above) / len(above),
            "estimate_sd_free_riders": statistics.mean(spread[n] for n in riders),
            "estimate_sd_honest": statistics.mean(spread[n] for n in honest),
        }
    return out


# ---- one seed ----------------------------------------------------------------------------------
def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every requested job on one seed's data and cohorts; the figures of that seed."""
    riders = tuple(args.free_riders.split(","))
    st = Settings(
        rounds=args.rounds, seed=seed, model=args.model, epochs=args.epochs, batch_size=32, lr=0.05,
        validation_samples=args.validation, deadline_seconds=120.0, free_riders=riders, poisoner="signflip",
    )
    runs = set(args.runs.split(","))
    honest, adv_honest = node_specs(args.adversary_honest)
    adversaries = [NodeSpec(f"fr{i}-{b}", "free_rider", b, ADVERSARY_SAMPLES, 0.0) for i, b in enumerate(riders)]
    adversaries.append(NodeSpec("p0-signflip", "poisoner", "signflip", ADVERSARY_SAMPLES, 0.0))
    adv_specs = adv_honest + adversaries
    sel_specs = [*adv_honest, NodeSpec("a7-n550-noise0", "honest", "honest", 550, 0.0), *adversaries[:2]]  # 8 honest, 2 free riders

    t_start = time.perf_counter()
    data_specs = list({s.name: s for s in honest + adv_honest + adversaries + sel_specs}.values())  # each node's own slice
    need = sum(s.samples for s in data_specs)
    total = math.ceil((need + 10) / 0.8)  # public_split keeps 80 % for train
    log(f"seed {seed}: generating MNIST-1D ({total} samples) ...")
    train, test = public_split(DATASET, num_samples=total, seed=seed)
    validation = test.subset(np.arange(min(args.validation, len(test))))
    out: dict[str, Any] = {"seed": seed}
    with tempfile.TemporaryDirectory(prefix="fedgpu-bench-valuation-") as tmp:
        work = Path(tmp)
        files = write_node_files(data_specs, train, work, seed)
        reports: dict[str, tuple[dict[str, Any], dict[str, str], float]] = {}
        plan = [
            ("k1", honest, 1, 1024, POOL),
            ("k3", honest, 3, 256, POOL),
            ("adv", adv_specs, 3, 256, POOL),
            ("adv1", adv_specs, 1, 1024, POOL),
            ("plain", honest, 3, 256, 0.0),
        ]
        for tag, specs, k, budget, pool in plan:
            if tag in runs:
                log(f"run {tag}: {len(specs)} nodes, k = {k}, budget {budget}, pool {pool:g}, {st.rounds} rounds")
                reports[tag] = run_job(tag, specs, files, k, budget, st, validation, work, pool, selection="uniform")
                log(f"run {tag} done in {reports[tag][2]:.0f}s, final accuracy {reports[tag][0]['final_accuracy']:.3f}")
                if args.reports is not None:
                    args.reports.mkdir(parents=True, exist_ok=True)
                    (args.reports / f"{tag}-seed{seed}.json").write_text(json.dumps({"names": reports[tag][1], "report": reports[tag][0]}))
        # Selection against free riders on a private-data job: k = 3, SELECTION_PER_ROUND of 10 nodes a round
        # (8 honest, 2 free riders), both rules on the same nodes, data and seed; k3sel1: the same nodes at k = 1,
        # every node every round, for the identifiability bound beside the figure.
        sel_st = replace(st, rounds=args.selection_rounds, epochs=args.selection_epochs, lr=args.selection_lr)
        for tag, k, budget, per_round, rule in (
            ("k3sel", 3, 256, SELECTION_PER_ROUND, "utility"), ("k3uni", 3, 256, SELECTION_PER_ROUND, "uniform"), ("k3sel1", 1, 256, None, "uniform"),
        ):
            if tag in runs:
                log(f"run {tag}: {len(sel_specs)} nodes, k = {k}, {per_round or len(sel_specs)} a round, selection {rule}, {sel_st.rounds} rounds")
                reports[tag] = run_job(tag, sel_specs, files, k, budget, sel_st, validation, work, POOL, per_round, rule)
                log(f"run {tag} done in {reports[tag][2]:.0f}s, final accuracy {reports[tag][0]['final_accuracy']:.3f}")
                if args.reports is not None:
                    args.reports.mkdir(parents=True, exist_ok=True)
                    (args.reports / f"{tag}-seed{seed}.json").write_text(json.dumps({"names": reports[tag][1], "report": reports[tag][0]}))

    # ---- fidelity
    nodes_detail: dict[str, dict[str, Any]] = {s.name: {"role": s.role, "samples": s.samples, "label_noise": s.label_noise} for s in honest}
    if "k1" in reports and "k3" in reports:
        r1, n1, _ = reports["k1"]
        r3, n3, _ = reports["k3"]
        ref = per_node_sum(r1, "node_values", n1)
        est3 = estimates(r3, n3)
        tot3 = per_node_sum(r3, "node_values", n3)
        order = [s.name for s in honest]
        out["spearman"] = spearman([est3[n] for n in order], [ref[n] for n in order])
        out["spearman_measure"] = "k=3 ridge estimates (report.valuation.estimates) vs k=1 sum over rounds of node_values (exact per-node Shapley)"
        out["spearman_k3_node_value_totals"] = spearman([tot3[n] for n in order], [ref[n] for n in order])
        for n in order:
            nodes_detail[n].update(k1_value_total=ref[n], k1_estimate=estimates(r1, n1)[n], k3_estimate=est3[n], k3_value_total=tot3[n])
    if "k3" in reports:
        c3 = cost(reports["k3"][0])
        out["evaluations_per_round"] = {"median": c3["evaluations_median"], "max": c3["evaluations_max"]}
        out["valuation_time_fraction"] = c3["valuation_time_fraction"]
        out["cost_k3"] = c3
    if "k1" in reports:
        c1 = cost(reports["k1"][0])
        out["cost_k1_exact_per_node"] = c1
        if "k3" in reports:
            # Exact per-node Shapley over all 10 nodes costs 2^10 subsets (+1 reference pass): the k1
            # maximum. The k1 median is lower because the robust rule often leaves most nodes out.
            out["evaluation_reduction_vs_exact_per_node"] = c1["evaluations_max"] / out["evaluations_per_round"]["median"]
    out["nodes_fidelity"] = nodes_detail

    # ---- adversaries
    if "adv" in reports:
        ra, na, _ = reports["adv"]
        last = ra["rounds"][-1]["round"]
        at10 = reward_measures(ra, na, adv_specs, min(10, last))
        final = reward_measures(ra, na, adv_specs, None)
        out["free_rider_reward_ratio_max"] = final["free_rider_reward_ratio_max"]
        out["free_rider_reward_ratio_max_round10"] = at10["free_rider_reward_ratio_max"]
        out["poisoner_reward_share"] = final["poisoner_reward_share"]
        out["honest_below_line_fraction"] = final["honest_below_line_fraction"]
        out["adversary_run"] = {
            "cumulative_to_round10": at10,
            "cumulative_final": final,
            "after_round10": reward_measures(ra, na, adv_specs, None, first_round=11) if last > 10 else None,
            "estimates": estimates(ra, na),
            "node_value_totals": per_node_sum(ra, "node_values", na),
            "roles": {s.name: {"role": s.role, "behaviour": s.behaviour, "samples": s.samples, "label_noise": s.label_noise} for s in adv_specs},
            "cost": cost(ra),
        }
        if "adv1" in reports:
            # The same nodes at k = 1: exact per-node Shapley, what each adversary-run node is worth.
            r1, n1, _ = reports["adv1"]
            out["adversary_run"]["k1_value_totals"] = per_node_sum(r1, "node_values", n1)
            out["adversary_run"]["k1_rewards"] = reward_measures(r1, n1, adv_specs, None)
            bound = out["adversary_run"]["k3_identifiability_bound"] = identifiability(r1, n1, adv_specs, seed=seed)
            out["k1_free_rider_reward_ratio_max"] = out["adversary_run"]["k1_rewards"]["free_rider_reward_ratio_max"]
            out["k3_bound_free_rider_above_honest_median_round10"] = bound[f"round{min(10, len(r1['rounds']))}"]["free_rider_above_honest_median_fraction"]
        if "k3" in reports:
            out["adversary_run"]["clean_k3_final_accuracy_10_honest"] = reports["k3"][0]["final_accuracy"]

    # ---- selection against free riders (k = 3, 40 rounds)
    for tag, key in (("k3sel", "k3_selection_free_rider_ratio"), ("k3uni", "k3_selection_free_rider_ratio_uniform")):
        if tag in reports:
            rep, names, _ = reports[tag]
            m = reward_measures(rep, names, sel_specs, None)
            out[key] = m["free_rider_reward_ratio_max"]
            sums = m["rewards"]
            m["free_riders_total_over_honest_median"] = ratio(sum(v for n, v in sums.items() if n.startswith("fr")), m["honest_median_reward"])
            m["updates_per_node"] = {n: sum(1 for r in rep["rounds"] for c in r["cohorts"] for x in c if names[x] == n) for n in names.values()}
            m["final_accuracy"] = rep["final_accuracy"]
            out.setdefault("selection_run", {})[tag] = m
    if "k3sel1" in reports:
        r1, n1, _ = reports["k3sel1"]
        bound = identifiability(r1, n1, sel_specs, seed=seed)
        out.setdefault("selection_run", {})["k3_identifiability_bound"] = bound
        out["k3_selection_bound_free_rider_above_honest_median"] = bound[f"round{len(r1['rounds'])}"]["free_rider_above_honest_median_fraction"]

    # Accuracy of every run, and of plain FedAvg on the k3 run's nodes (rewards off): what the valued,
    # robust server costs or gains in the model itself.
    out["final_accuracy"] = {tag: rep[0]["final_accuracy"] for tag, rep in reports.items()}
    for tag in ("k3", "plain"):
        if tag in reports:
            out[f"{tag}_final_accuracy"] = reports[tag][0]["final_accuracy"]
    out["run_wall_s"] = {tag: round(rep[2], 1) for tag, rep in reports.items()}
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    out["settings"] = {
        **asdict(st),
        "train_samples_generated": len(train),
        "honest_nodes": [asdict(s) for s in honest],
        "adversary_honest_nodes": [asdict(s) for s in adv_honest],
        "adversaries": [asdict(s) for s in adversaries],
    }
    return out


# ---- main --------------------------------------------------------------------------------------
# The figures; over several seeds each is reported as its median (the per-seed values beside it).
HEADLINE = (
    "spearman",
    "valuation_time_fraction",
    "free_rider_reward_ratio_max",
    "free_rider_reward_ratio_max_round10",
    "poisoner_reward_share",
    "honest_below_line_fraction",
    # beside the figures: the payout rule on exact per-node values (adv1), how often an exactly
    # additive game at k = 3 puts a free rider above the honest median, and the model's accuracy
    # against plain FedAvg on the same nodes
    "k1_free_rider_reward_ratio_max",
    "k3_bound_free_rider_above_honest_median_round10",
    "k3_final_accuracy",
    "plain_final_accuracy",
    # --selection: free riders' reward under utility selection and under uniform selection (k = 3, 40 rounds),
    # and the identifiability bound of those nodes at the same horizon
    "k3_selection_free_rider_ratio",
    "k3_selection_free_rider_ratio_uniform",
    "k3_selection_bound_free_rider_above_honest_median",
)
SELECTION_PER_ROUND = 6  # two cohorts of 3 of the 10 nodes a round: selection has a choice to make


def _cohort_updates(model_name: str, start: np.ndarray, shards: list[ArrayDataset], seed: int) -> tuple[list[np.ndarray], list[float], float]:
    """One local epoch per shard from ``start``: each shard's weighted change (what its cohort sum
    decrypts to at k = 1), its weight, and the median seconds one node's training took."""
    from fedgpu.datasets import get_schema
    from fedgpu.models import ModelSpec, build_model
    from fedgpu.models.flat import flatten
    from fedgpu.node.training import LocalTrainConfig, train_local
    from fedgpu.rewards.utility import load_flat

    schema = get_schema(DATASET)
    spec = ModelSpec(schema.input_shape, schema.num_classes)
    sums, weights, secs = [], [], []
    for i, shard in enumerate(shards):
        model = build_model(model_name, spec, seed=seed)
        load_flat(model, start)
        t0 = time.perf_counter()
        train_local(model, shard, LocalTrainConfig(epochs=1, batch_size=32, lr=0.05, seed=seed + i), torch.device("cpu"))
        secs.append(time.perf_counter() - t0)
        w = len(shard) * 1e-3
        sums.append((flatten(model.state_dict()) - start) * w)
        weights.append(w)
    return sums, weights, statistics.median(secs)


def scaling(args: argparse.Namespace) -> dict[str, Any]:
    """The driver's valuation cost per round at each cohort count, and the estimator's fidelity."""
    from fedgpu.datasets import get_schema
    from fedgpu.driver.valuation import RoundValuer
    from fedgpu.models import ModelSpec, build_model
    from fedgpu.models.flat import flatten

    counts = [int(c) for c in args.scaling.split(",")]
    seed = int(args.seeds.split(",")[0])
    schema = get_schema(DATASET)
    spec = ModelSpec(schema.input_shape, schema.num_classes)
    rc = RewardsConfig()
    train, test = public_split(DATASET, num_samples=int(500 * max(counts) / 0.8) + 10, seed=seed)
    validation = test.subset(np.arange(min(args.validation, len(test))))

    def valuer(budget: int = rc.budget) -> RoundValuer:
        return RoundValuer(lambda: build_model(args.model, spec), validation, budget, POOL, seed=seed,
                           step_sizes=tuple(rc.step_sizes), momenta=tuple(rc.momentum_steps), confidence=rc.confidence)

    out: dict[str, Any] = {"benchmark": "valuation_scaling", "model": args.model, "validation_samples": len(validation), "budget": rc.budget, "runs": []}
    rng = np.random.default_rng(seed)
    for count in counts:
        log(f"scaling: {count} cohorts")
        order = rng.permutation(len(train))
        shards = [train.subset(np.sort(order[i * 500 : (i + 1) * 500])) for i in range(count)]
        v = valuer()
        flat = flatten(build_model(args.model, spec, seed=seed).state_dict())
        secs, cpu, passes, train_s = [], [], [], []
        members = [[f"n{i}"] for i in range(count)]
        for rnd in range(1, args.scaling_rounds + 1):
            sums, weights, t = _cohort_updates(args.model, flat, shards, seed + rnd)
            train_s.append(t)
            snapshot = v.state()
            c0 = time.process_time()
            res = v.value(rnd, flat, members, sums, weights)
            cpu.append(time.process_time() - c0)
            secs.append(res.seconds)
            passes.append(res.evaluations)
            last, flat = flat, flat + res.update
        ref = _sampled_reference(args.model, spec, v, snapshot, last, sums, weights, validation, rc, res, seed) if count <= 30 else None
        out["runs"].append({
            "cohorts": count,
            "valuation_s_per_round": round(statistics.median(secs[1:]), 3),
            "valuation_s_by_round": [round(x, 3) for x in secs],
            "valuation_cpu_s_per_round": round(statistics.median(cpu[1:]), 3),
            "forward_passes_per_round": statistics.median(passes[1:]),
            "train_s_one_node": round(statistics.median(train_s), 3),
            "estimator": json.loads(res.evidence).get("estimator", "exact" if json.loads(res.evidence)["exact"] else "sampled"),
            "kept": len(res.kept),
            **({} if ref is None else ref),
        })
        if count <= 30 and hasattr(v, "round_validation"):
            out.setdefault("subset_fidelity", {})[str(count)] = _subset_fidelity(args.model, spec, snapshot, last, members, sums, weights, test, rc, seed)
        if count >= 8 and "fidelity" not in out:
            out.setdefault("fidelity", {})[str(count)] = _fidelity_exact(args.model, spec, last, sums, weights, validation, rc, seed)
    base, base_cpu = out["runs"][0]["valuation_s_per_round"], out["runs"][0]["valuation_cpu_s_per_round"]
    for r in out["runs"]:
        r["over_first"] = round(r["valuation_s_per_round"] / base, 2)
        r["over_first_cpu"] = round(r["valuation_cpu_s_per_round"] / base_cpu, 2)
        r["over_first_passes"] = round(r["forward_passes_per_round"] / out["runs"][0]["forward_passes_per_round"], 2)
    return out


def _subset_fidelity(model_name: str, spec: Any, snapshot: tuple[dict[str, Any], dict[str, np.ndarray]], start: np.ndarray, members: list[list[str]],
                     sums: list[np.ndarray], weights: list[float], test: ArrayDataset, rc: RewardsConfig, seed: int, samples: int = 2000) -> dict[str, Any]:
    """The last round valued again from the same state on ``samples`` held-out samples, once on all of them and once
    on the job default's subset (rewards.valuation_samples): Spearman of the Shapley values (before the noise floor)
    of the cohorts both kept, whether the kept sets and steps agree, and the CPU of each."""
    from fedgpu.driver.valuation import RoundValuer
    from fedgpu.models import build_model

    held = test.subset(np.arange(min(samples, len(test))))
    got: dict[str, Any] = {}
    for name, n in (("full", None), ("subset", rc.valuation_samples)):
        v = RoundValuer(lambda: build_model(model_name, spec), held, rc.budget, POOL, seed=seed, step_sizes=tuple(rc.step_sizes),
                        momenta=tuple(rc.momentum_steps), confidence=rc.confidence, samples=n)
        v.load_state(*snapshot)
        c0 = time.process_time()
        got[name] = (v.value(3, start, members, sums, weights), time.process_time() - c0)
    (full, full_cpu), (sub, sub_cpu) = got["full"], got["subset"]
    # each kept cohort's Shapley value (before the noise floor), compared on the cohorts both kept
    fv = dict(zip(full.kept, json.loads(full.evidence)["shapley"], strict=True))
    sv = dict(zip(sub.kept, json.loads(sub.evidence)["shapley"], strict=True))
    both = sorted(set(fv) & set(sv))
    a, b = [fv[c] for c in both], [sv[c] for c in both]
    return {
        "validation_samples": len(held), "subset_samples": rc.valuation_samples,
        "spearman_subset_vs_full": round(spearman(a, b), 3) if len(both) > 1 else None, "compared_cohorts": len(both),
        "kept_same": full.kept == sub.kept, "kept_full": len(full.kept), "kept_subset": len(sub.kept),
        "step_full": [full.step, full.momentum], "step_subset": [sub.step, sub.momentum],
        "cpu_s_full": round(full_cpu, 3), "cpu_s_subset": round(sub_cpu, 3),
    }


def _sampled_reference(model_name: str, spec: Any, v: Any, snapshot: tuple[dict[str, Any], dict[str, np.ndarray]], start: np.ndarray,
                       sums: list[np.ndarray], weights: list[float], validation: ArrayDataset, rc: RewardsConfig, res: Any, seed: int) -> dict[str, Any]:
    """The last round's game over its kept cohorts, valued by the sampled estimator at 2048 evaluations:
    Spearman of the round's own Shapley values (before the noise floor) against it."""
    from fedgpu.models import build_model
    from fedgpu.rewards import CohortGame, shapley_sampled

    meta, arrays = snapshot
    game = CohortGame(lambda: build_model(model_name, spec), start, arrays.get("baseline"), sums, weights, validation.x, validation.y,
                      step_sizes=rc.step_sizes, momenta=rc.momentum_steps, server_lr=meta["server_lr"], momentum=meta["momentum"])
    kept = res.kept
    if len(kept) < 2:
        return {}
    sub = game if len(kept) == len(sums) else game.restrict(kept)
    t0 = time.perf_counter()
    ref = shapley_sampled(len(kept), sub, 2048, np.random.default_rng(seed))
    own = json.loads(res.evidence)["shapley"]
    return {"spearman_vs_sampled_2048": round(spearman(list(own), list(ref.values)), 3), "reference_s": round(time.perf_counter() - t0, 1)}


def _fidelity_exact(model_name: str, spec: Any, start: np.ndarray, sums: list[np.ndarray], weights: list[float], validation: ArrayDataset, rc: RewardsConfig, seed: int) -> dict[str, Any]:
    """Spearman of the sampled estimator against exact Shapley on the first 8 cohorts' game (2^8 subsets)."""
    from fedgpu.models import build_model
    from fedgpu.rewards import CohortGame, shapley_exact, shapley_sampled

    def game() -> CohortGame:
        return CohortGame(lambda: build_model(model_name, spec), start, None, sums[:8], weights[:8], validation.x, validation.y,
                          step_sizes=rc.step_sizes, momenta=rc.momentum_steps)

    exact = shapley_exact(8, game())
    out: dict[str, Any] = {"players": 8, "exact_values": [round(float(v), 6) for v in exact.values]}
    if not hasattr(CohortGame, "linear_values"):  # an older tree: only the sampled estimator
        linear = None
    else:
        t0 = time.perf_counter()
        linear = game().linear_values()
        out["linear_seconds"] = round(time.perf_counter() - t0, 3)
    for budget in (32, 64, 128):
        est = shapley_sampled(8, game(), budget, np.random.default_rng(seed))
        out[f"spearman_budget_{budget}"] = round(spearman(list(est.values), list(exact.values)), 3)
    if linear is None:
        return out
    out["linear_values"] = [round(float(v), 6) for v in linear]
    out["spearman_linear"] = round(spearman(list(linear), list(exact.values)), 3)
    out["linear_sum_over_exact_sum"] = round(float(linear.sum() / exact.values.sum()), 3) if exact.values.sum() else None
    return out


def median_or_none(values: list[Any]) -> float | None:
    """Median of the seeds that have a figure (a 0/0 ratio has none); None when no seed has one."""
    known = [float(v) for v in values if v is not None]
    return statistics.median(known) if known else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="6 rounds: a smoke run")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (data split, label noise, cohorts, training); figures are medians over them")
    ap.add_argument("--model", default="cnn1d")
    ap.add_argument("--epochs", type=int, default=3, help="local epochs (1 on 200-800 records is a few steps: rounds too noisy to value)")
    ap.add_argument("--validation", type=int, default=500, help="held-out samples the driver values on (one forward pass each per coalition)")
    ap.add_argument("--free-riders", default="zeros,replay", help="two of zeros, replay, noise")
    ap.add_argument(
        "--adversary-honest", choices=("positive", "mixed"), default="positive",
        help="the adversary run's honest nodes: 7 that are all worth something (default), or the first 7 of the fidelity run's, half of them measured at ~0",
    )
    ap.add_argument("--runs", default="k1,k3,adv,adv1,plain", help="jobs to run, a subset of k1,k3,adv,adv1,plain (adv1: the adversary run's nodes at k = 1, exact per-node values; plain: the k3 run with rewards off, plain FedAvg)")
    ap.add_argument(
        "--selection", action="store_true",
        help="instead of --runs: k3sel,k3uni,k3sel1 (k = 3, 6 of 10 nodes a round, 2 free riders, utility vs uniform selection; the k = 1 run for the bound)",
    )
    ap.add_argument("--selection-rounds", type=int, default=40, help="rounds of the --selection runs (default %(default)s)")
    ap.add_argument(
        "--selection-epochs", type=int, default=1,
        help="local epochs of the --selection runs (default %(default)s; with --selection-lr, a job that still learns in its last rounds)",
    )
    ap.add_argument("--selection-lr", type=float, default=0.02, help="local learning rate of the --selection runs (default %(default)s)")
    ap.add_argument("--reports", type=Path, default=None, help="also copy each run's report.json (with node names) into this folder")
    ap.add_argument("--scaling-rounds", type=int, default=6, help="rounds valued per cohort count in --scaling (the median is over rounds 2..: how many cohorts the elimination drops varies by round)")
    ap.add_argument("--scaling", default="", help="only the cost study: comma-separated cohort counts, e.g. 10,30,100")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 6
    if args.selection:
        args.runs = "k3sel,k3uni,k3sel1"
    torch.set_num_threads(1)
    if args.scaling:
        t0 = time.perf_counter()
        result = scaling(args)
        result["machine"] = f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}"
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(result, indent=2, default=float))
        return
    seeds = [int(x) for x in args.seeds.split(",")]
    t_start = time.perf_counter()
    per_seed = [run_seed(seed, args) for seed in seeds]
    out: dict[str, Any] = {"benchmark": "valuation", "seeds": seeds}
    for key in HEADLINE:
        if any(key in r for r in per_seed):
            values = [r.get(key) for r in per_seed]
            out[key] = median_or_none(values)
            out[f"{key}_per_seed"] = values
    ev = [r["evaluations_per_round"] for r in per_seed if "evaluations_per_round" in r]
    if ev:
        out["evaluations_per_round"] = {"median": statistics.median(e["median"] for e in ev), "max": max(e["max"] for e in ev)}
    out["per_seed"] = per_seed  # each seed's full detail: per-node values, rewards, costs, its settings
    out["settings"] = {
        "rounds": args.rounds,
        "model": args.model,
        "epochs": args.epochs,
        "validation_samples": args.validation,
        "nodes": 10,
        "dataset": DATASET,
        "k_reference": 1,
        "k": 3,
        "budget_k1": 1024,
        "budget_k1_note": "10 single-node cohorts: 2^10 = 1024 subsets, so budget 1024 makes the reference exact (the default 256 would sample)",
        "budget_k3": 256,
        "pool_per_round": POOL,
        "encryption": "none",
        "encryption_note": "valuation sees only decrypted cohort sums, identical under CKKS up to its noise; 'none' keeps the bench CPU-cheap",
        "label_noise_note": "a fraction p of a node's samples get a uniform random label (so ~p*0.9 are wrong)",
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
    }
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
