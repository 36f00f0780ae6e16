"""Benchmark of what DP costs a node besides the noise: planning sigma, and a DP-SGD epoch against a plain one.

Prints ONE JSON object:
  (a) planning: a node's first plan in a fresh process, the way the node runs it
      (``noise_for_job`` with the plan cache next to its ledger): ``plan_seconds_cold`` with an
      empty cache (the search), ``plan_seconds_warm`` with the file the cold run left (a new process,
      e.g. a restarted node), and the baseline measured in the same run, Opacus's
      ``get_noise_multiplier`` bisection that fedgpu used before (``plan_seconds_opacus_bisection``).
      Each is its own subprocess (``--plan-reps`` of each, interleaved; best and spread reported);
      the import of torch and Opacus is timed apart (``import_seconds``): a node pays it for training
      anyway. The planned sigma and its epsilon are printed, with Opacus's sigma for comparison;
  (b) the DP-SGD epoch: per-epoch CPU time of ``train_local_dp`` in each mode (``bk``: fedgpu's
      book-keeping clipping, ``ew``: Opacus with ExpandedWeights, the previous default; optionally
      ``hooks``, ``functorch`` and Opacus's ``ghost``) against ``train_local``, the same model
      (``cnn1d_dp``), the same 4,800 records and logical batch 480 (the demo's DP recipe), one
      thread, epochs interleaved across modes with the order rotated, ``--reps`` repetitions after a
      warm-up; ``dp_epoch_ratio`` is the fastest DP mode's median over plain's median.

Times are the process's CPU time (``time.process_time``, one thread): on a shared box wall time also
counts the other jobs. ``--quick`` is a smoke run whose numbers mean nothing.

    .venv/bin/python scripts/bench_dp_speed.py            # ~2 min on 2 busy cores
    .venv/bin/python scripts/bench_dp_speed.py --quick    # ~20 s
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedgpu.datasets import ArrayDataset, public_split  # noqa: E402
from fedgpu.models import ModelSpec, build_model  # noqa: E402
from fedgpu.node.training import LocalTrainConfig, train_local, train_local_dp  # noqa: E402

SPEC = ModelSpec((40,), 10)

# One node's first plan, in a process of its own. argv: kind epsilon delta n batch epochs rounds cache_path
_PLAN = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, opacus  # what a DP node has loaded before it plans
from fedgpu.privacy.dp import planned_steps
from fedgpu.privacy.planning import noise_for_job
from fedgpu.privacy.plan_cache import PlanCache
t1 = time.perf_counter()
kind, eps, delta, n, batch, epochs, rounds, cache = sys.argv[1], *map(float, sys.argv[2:4]), *map(int, sys.argv[4:8]), sys.argv[8]
if kind == "opacus":
    from opacus.accountants.utils import get_noise_multiplier
    q, per_round = planned_steps(n, batch, epochs)
    sigma = get_noise_multiplier(target_epsilon=eps, target_delta=delta, sample_rate=q, steps=rounds * per_round,
                                 accountant="prv", epsilon_tolerance=1e-3 * eps)
else:
    sigma, q, per_round = noise_for_job(eps, delta, n, batch, epochs, rounds, "prv", cache=PlanCache(__import__("pathlib").Path(cache)))
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "plan": t2 - t1, "sigma": sigma, "q": q, "steps": rounds * per_round}))
"""


def plan_once(kind: str, a: argparse.Namespace, cache: Path) -> dict[str, float]:
    args = [kind, str(a.epsilon), str(a.delta), str(a.per_node), str(a.batch), "1", str(a.rounds), str(cache)]
    out = subprocess.run(
        [sys.executable, "-c", _PLAN, *args], capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def planning(a: argparse.Namespace) -> dict[str, object]:
    from fedgpu.privacy.dp import epsilon_of

    runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": [], "opacus": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.plan_reps):
            cache = Path(tmp) / f"rep{rep}" / "privacy.plans.json"
            runs["cold"].append(plan_once("cold", a, cache))  # empty cache: the search
            runs["warm"].append(plan_once("warm", a, cache))  # a new process reading the file the cold run left
            runs["opacus"].append(plan_once("opacus", a, cache))

    def summary(key: str) -> dict[str, float]:
        v = [r["plan"] for r in runs[key]]
        return {"best": round(min(v), 4), "median": round(statistics.median(v), 4), "max": round(max(v), 4)}

    sigma, q, steps = runs["cold"][0]["sigma"], runs["cold"][0]["q"], int(runs["cold"][0]["steps"])
    if any(r["sigma"] != sigma for r in runs["cold"] + runs["warm"]):
        raise SystemExit(f"plans differ between runs: {runs}")
    return {
        "plan_seconds_cold": summary("cold")["best"],
        "plan_seconds_warm": summary("warm")["best"],
        "plan_seconds_opacus_bisection": summary("opacus")["best"],
        "planning": {
            "seconds": {k: summary(k) for k in runs},
            "import_seconds": round(min(r["import"] for r in runs["cold"]), 3),
            "setting": {"epsilon": a.epsilon, "delta": a.delta, "records": a.per_node, "batch": a.batch, "rounds": a.rounds,
                        "sample_rate": q, "steps": steps, "accountant": "prv", "tolerance": 1e-3 * a.epsilon},
            "sigma": sigma,
            "epsilon": epsilon_of([(sigma, q, steps)], a.delta, "prv"),
            "sigma_opacus_bisection": runs["opacus"][0]["sigma"],
            "repetitions": a.plan_reps,
        },
    }


def ghost_epoch(data: ArrayDataset, cfg: LocalTrainConfig, clip: float, seed: int) -> None:
    """One epoch of Opacus's own ghost clipping (make_private(grad_sample_mode="ghost")), Poisson sampling, for comparison."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    model = build_model("cnn1d_dp", SPEC, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    ds = TensorDataset(torch.from_numpy(np.ascontiguousarray(data.x)), torch.from_numpy(data.y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="prv")
        dp_model, dp_opt, criterion, loader = engine.make_private(
            module=model, optimizer=opt, data_loader=DataLoader(ds, batch_size=cfg.batch_size), noise_multiplier=1.0,
            max_grad_norm=clip, grad_sample_mode="ghost", criterion=torch.nn.CrossEntropyLoss(), poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(seed),
        )
        for xb, yb in loader:
            dp_opt.zero_grad(set_to_none=True)
            if len(yb):
                criterion(dp_model(xb), yb).backward()
            dp_opt.step()
    dp_model._close()


def epoch_times(data: ArrayDataset, a: argparse.Namespace) -> dict[str, list[float]]:
    modes = ["plain", *a.modes]
    cfg = LocalTrainConfig(epochs=1, batch_size=a.batch, lr=0.01, momentum=0.0, seed=0)
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpu = torch.device("cpu")
    for rep in range(a.reps + 1):  # repetition 0 warms every mode up and is discarded
        for mode in modes[rep % len(modes) :] + modes[: rep % len(modes)]:
            t0 = time.process_time()
            if mode == "plain":
                train_local(build_model("cnn1d_dp", SPEC, seed=0), data, cfg, cpu)
            elif mode == "ghost":
                ghost_epoch(data, cfg, 1.0, rep)
            else:
                train_local_dp(build_model("cnn1d_dp", SPEC, seed=0), data, cfg, 1.0, 1.0, cpu, grad_sample_mode=mode,
                               max_physical_batch_size=a.physical_batch, noise_seed=rep)
            if rep:
                times[mode].append(time.process_time() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repetition of each")
    ap.add_argument("--epsilon", type=float, default=8.0)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-node", type=int, default=4800, help="records of the node (the demo: 24,000 over 5 nodes)")
    ap.add_argument("--batch", type=int, default=480)
    ap.add_argument("--physical-batch", type=int, default=512)
    ap.add_argument("--modes", nargs="*", default=["bk", "ew"], help="DP modes to time: bk ew hooks functorch ghost")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--plan-reps", type=int, default=3)
    ap.add_argument("--skip-planning", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.reps, a.plan_reps = 1, 1
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    result: dict[str, object] = {}
    if not a.skip_planning:
        result.update(planning(a))
    if not a.skip_timing:
        train, _ = public_split("mnist1d", num_samples=max(6000, a.per_node * 5 // 4), seed=0)
        data = train.subset(np.arange(a.per_node))
        times = epoch_times(data, a)
        med = {m: statistics.median(v) for m, v in times.items()}
        best = min((m for m in med if m != "plain"), key=med.__getitem__)
        result.update(
            dp_epoch_ratio=round(med[best] / med["plain"], 3),
            dp_epoch_mode=best,
            epoch_ratios={m: round(v / med["plain"], 3) for m, v in med.items() if m != "plain"},
            epoch_ratios_of_best_epochs={m: round(min(v) / min(times["plain"]), 3) for m, v in times.items() if m != "plain"},
            epoch_seconds={m: {"median": round(med[m], 4), "min": round(min(v), 4), "max": round(max(v), 4)} for m, v in times.items()},
            timing={"model": "cnn1d_dp", "records": a.per_node, "batch": a.batch, "physical_batch": a.physical_batch,
                    "repetitions": a.reps, "threads": 1, "clock": "process_time"},
        )
    import opacus

    result.update(torch=torch.__version__, opacus=opacus.__version__, machine=platform.machine(), quick=a.quick,
                  seconds_total=round(time.perf_counter() - t_start, 1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
