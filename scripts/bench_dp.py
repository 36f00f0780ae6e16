"""Benchmark of fedgpu's record-level DP: DP-SGD overhead, and FedAvg accuracy at epsilon 3 and 8.

Prints ONE JSON object:
  (a) per-epoch time of DP-SGD (fedgpu's book-keeping clipping ``bk``; Opacus ``ew``, ``hooks``,
      ``functorch``) against plain SGD on the same model (CNN1D, 28k parameters), one node's data
      (4,800 samples) and the same logical batch, one thread, epochs interleaved across modes (order
      rotated), medians of ``--timing-reps``; ``dp_epoch_time_ratio`` is the fastest DP mode over
      plain, and that mode trains the FL runs (``scripts/bench_dp_speed.py`` times planning too);
  (b) test accuracy of an in-process FedAvg run, 10 IID nodes on MNIST-1D (60k generated locally:
      48k train, 12k test; 4,800 per node), each node running ``train_local_dp`` with the sigma that
      ``noise_for_job`` plans from its own n for the whole job (epsilon 3 and 8, delta 1e-5, PRV),
      against two non-private runs with the same rounds and local epochs: ``nodp`` at its own usual
      setting (batch 64, lr 0.05) and ``nodp_same_batch`` at the DP batch size; then the same at
      epsilon 3 and 8 and without DP over a Dirichlet(``--alpha`` 0.5) non-IID split
      (``accuracy_eps3_dirichlet`` ...): nodes with few records need more noise for the same epsilon.

The recipe (the defaults; found by a sweep of ~45 one-seed runs, see docs/privacy.md): 15 rounds of
1 local epoch, logical batch 480 (q = 1/10, 150 steps per node), clip 1.0, node lr 2.0 with
momentum 0.9 (fresh every round), server momentum 0.5 (FedAvgM), inputs standardised per sample.
The timing part runs alone; the FL runs then run in ``--workers`` processes of one thread each.
``--quick`` is a smoke run (6k samples, 2 rounds) whose numbers mean nothing.

    .venv/bin/python scripts/bench_dp.py            # the committed settings, ~15 min on 2 free cores
    .venv/bin/python scripts/bench_dp.py --quick    # ~15 s
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedgpu.datasets import ArrayDataset, partition_dirichlet, partition_iid, public_split
from fedgpu.evaluation import evaluate
from fedgpu.models import CNN1D, ModelSpec
from fedgpu.node.training import LocalTrainConfig, train_local, train_local_dp
from fedgpu.privacy.dp import epsilon_of
from fedgpu.privacy.planning import noise_for_job

SPEC = ModelSpec((40,), 10)


@dataclass(frozen=True)
class FLSettings:
    nodes: int
    rounds: int
    local_epochs: int
    batch_size: int  # logical (expected) batch of DP-SGD; plain SGD uses the same
    physical_batch: int  # DP-SGD splits logical batches into these (memory and cache locality)
    lr: float  # node lr under DP
    batch_nodp: int  # the non-private baseline's own batch (its usual FedAvg setting)
    lr_nodp: float  # ... and lr (no clipping: gradients are larger, a DP lr diverges)
    lr_nodp_same_batch: float  # lr of the non-private run at the DP batch size
    momentum: float  # node momentum, fresh every round
    server_lr: float
    server_momentum: float  # FedAvgM: momentum on the averaged update, kept by the server
    clip: float
    width: int  # CNN1D width (64 is the registry's "cnn1d")
    normalize: bool  # standardise each sample by its own mean and std (no privacy cost: per record)
    delta: float
    accountant: str
    grad_sample_mode: str
    seed: int


def standardise(ds: ArrayDataset) -> ArrayDataset:
    mu = ds.x.mean(axis=1, keepdims=True)
    sd = ds.x.std(axis=1, keepdims=True) + 1e-6
    return ArrayDataset(((ds.x - mu) / sd).astype(np.float32), ds.y)


def build(width: int, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CNN1D(SPEC, width=width)


def epoch_times(data: ArrayDataset, s: FLSettings, reps: int) -> dict[str, list[float]]:
    """Seconds per epoch for each mode, one epoch per mode per repetition, order rotated."""
    modes = ["plain", "bk", "ew", "hooks", "functorch"]
    cfg = LocalTrainConfig(epochs=1, batch_size=s.batch_size, lr=0.01, momentum=0.0, seed=s.seed)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for rep in range(reps + 1):  # repetition 0 warms up every mode and is discarded
        order = modes[rep % len(modes) :] + modes[: rep % len(modes)]
        for mode in order:
            model = build(s.width, s.seed)
            t0 = time.perf_counter()
            if mode == "plain":
                train_local(model, data, cfg, torch.device("cpu"))
            else:
                train_local_dp(
                    model, data, cfg, 1.0, s.clip, torch.device("cpu"),
                    grad_sample_mode=mode, max_physical_batch_size=s.physical_batch, noise_seed=rep,
                )
            if rep:
                times[mode].append(time.perf_counter() - t0)
    return times


def fedavg(
    parts: list[ArrayDataset], test: ArrayDataset, s: FLSettings, epsilon: float | None, curve_every: int, same_batch: bool = False
) -> dict[str, object]:
    """FedAvg(M) over all nodes every round; each node trains a copy of the global model."""
    device = torch.device("cpu")
    model = build(s.width, s.seed)
    buf = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    total = sum(len(p) for p in parts)
    plans = []
    if epsilon is not None:
        plans = [
            noise_for_job(epsilon, s.delta, len(p), s.batch_size, s.local_epochs, s.rounds, s.accountant) for p in parts
        ]
    curve: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    for rnd in range(s.rounds):
        glob = {k: v.clone() for k, v in model.state_dict().items()}
        avg = {k: torch.zeros_like(v) for k, v in glob.items()}
        for i, part in enumerate(parts):
            local = copy.deepcopy(model)
            seed = s.seed * 100_003 + rnd * 101 + i
            if epsilon is None:
                batch, lr = (s.batch_size, s.lr_nodp_same_batch) if same_batch else (s.batch_nodp, s.lr_nodp)
                cfg = LocalTrainConfig(epochs=s.local_epochs, batch_size=batch, lr=lr, momentum=s.momentum, seed=seed)
                train_local(local, part, cfg, device)
            else:
                cfg = LocalTrainConfig(epochs=s.local_epochs, batch_size=s.batch_size, lr=s.lr, momentum=s.momentum, seed=seed)
                sigma = plans[i][0]
                train_local_dp(
                    local, part, cfg, sigma, s.clip, device, grad_sample_mode=s.grad_sample_mode,
                    max_physical_batch_size=s.physical_batch, noise_seed=seed,
                )
            w = len(part) / total
            for k, v in local.state_dict().items():
                avg[k] += w * (v - glob[k])
        new = {}
        for k in glob:
            buf[k] = s.server_momentum * buf[k] + avg[k]
            new[k] = glob[k] + s.server_lr * buf[k]
        model.load_state_dict(new)
        if curve_every and ((rnd + 1) % curve_every == 0 or rnd + 1 == s.rounds):
            curve.append((rnd + 1, round(evaluate(model, test, device=device)[0], 4)))
    acc = evaluate(model, test, device=device)[0]
    out: dict[str, object] = {"accuracy": round(acc, 4), "curve": curve, "seconds": round(time.perf_counter() - t0, 1)}
    if epsilon is not None:
        sigma, q, steps = plans[0]
        # what every node's ledger holds at the end: one canonical segment (sigma, q, rounds*steps)
        out.update(
            sigma=round(sigma, 4),
            sample_rate=q,
            steps_per_round=steps,
            epsilon_spent=round(max(epsilon_of([(p[0], p[1], p[2] * s.rounds)], s.delta, s.accountant) for p in plans), 4),
        )
    return out


def _fedavg_job(
    parts: list[ArrayDataset], test: ArrayDataset, s: FLSettings, epsilon: float | None, curve_every: int, same_batch: bool
) -> dict[str, object]:
    torch.set_num_threads(1)
    return fedavg(parts, test, s, epsilon, curve_every, same_batch)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 6k samples, 2 rounds, 1 timing repetition")
    ap.add_argument("--samples", type=int, default=60000, help="MNIST-1D samples generated (80/20 train/test)")
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=480)
    ap.add_argument("--physical-batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2.0)
    ap.add_argument("--batch-nodp", type=int, default=64)
    ap.add_argument("--lr-nodp", type=float, default=0.05)
    ap.add_argument("--lr-nodp-same-batch", type=float, default=0.2)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--server-lr", type=float, default=1.0)
    ap.add_argument("--server-momentum", type=float, default=0.5)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--no-normalize", dest="normalize", action="store_false")
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--accountant", default="prv", choices=["prv", "rdp"])
    ap.add_argument("--grad-sample-mode", default="auto", help="auto = the fastest in the timing part (bk if skipped)")
    ap.add_argument("--eps", type=float, nargs="*", default=[3.0, 8.0])
    ap.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration of the non-IID DP runs (0: skip them)")
    ap.add_argument("--timing-reps", type=int, default=5)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-nodp", action="store_true")
    ap.add_argument("--curve-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="FL runs in parallel processes, one thread each (after the timing)")
    ap.add_argument("--data-cache", type=Path, help="npz cache of the generated split (for sweeps)")
    a = ap.parse_args(argv)
    if a.quick:
        a.samples, a.rounds, a.timing_reps, a.curve_every = 6000, 2, 1, 1
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    if a.data_cache and a.data_cache.exists():
        with np.load(a.data_cache, allow_pickle=False) as z:
            train, test = ArrayDataset(z["xtr"], z["ytr"]), ArrayDataset(z["xte"], z["yte"])
    else:
        train, test = public_split("mnist1d", num_samples=a.samples, seed=a.seed)
        if a.data_cache:
            np.savez(a.data_cache, xtr=train.x, ytr=train.y, xte=test.x, yte=test.y)
    if a.normalize:
        train, test = standardise(train), standardise(test)
    parts = [train.subset(idx) for idx in partition_iid(len(train), a.nodes, a.seed)]
    parts_dir = [train.subset(idx) for idx in partition_dirichlet(train.y, a.nodes, a.alpha, a.seed)] if a.alpha > 0 else []

    s = FLSettings(
        nodes=a.nodes, rounds=a.rounds, local_epochs=a.local_epochs, batch_size=a.batch,
        physical_batch=a.physical_batch, lr=a.lr, batch_nodp=a.batch_nodp, lr_nodp=a.lr_nodp,
        lr_nodp_same_batch=a.lr_nodp_same_batch, momentum=a.momentum,
        server_lr=a.server_lr, server_momentum=a.server_momentum, clip=a.clip, width=a.width,
        normalize=a.normalize, delta=a.delta, accountant=a.accountant,
        grad_sample_mode="bk" if a.grad_sample_mode == "auto" else a.grad_sample_mode, seed=a.seed,
    )
    result: dict[str, object] = {"samples": {"train": len(train), "test": len(test), "per_node": [len(p) for p in parts]}}

    if not a.skip_timing:
        times = epoch_times(parts[0], s, a.timing_reps)
        med = {m: statistics.median(v) for m, v in times.items()}
        best = min((m for m in med if m != "plain"), key=med.__getitem__)
        if a.grad_sample_mode == "auto":
            s = FLSettings(**{**s.__dict__, "grad_sample_mode": best})
        result.update(
            dp_epoch_time_ratio=round(med[best] / med["plain"], 3),
            dp_epoch_time_mode=best,
            epoch_seconds_median={m: round(v, 4) for m, v in med.items()},
            epoch_time_ratios={m: round(v / med["plain"], 3) for m, v in med.items() if m != "plain"},
            timing={"samples_per_epoch": len(parts[0]), "batch_size": s.batch_size,
                    "physical_batch": s.physical_batch, "repetitions": a.timing_reps, "threads": 1},
        )

    # the DP runs first: they are the long ones, so two workers finish about together
    jobs: list[tuple[str, list[ArrayDataset], float | None, bool]] = [(f"eps{e:g}", parts, e, False) for e in a.eps]
    if parts_dir:
        jobs += [(f"eps{e:g}_dirichlet", parts_dir, e, False) for e in a.eps]
    if not a.skip_nodp:
        jobs += [("nodp", parts, None, False), ("nodp_same_batch", parts, None, True)]
        if parts_dir:
            jobs += [("nodp_dirichlet", parts_dir, None, False)]
    runs: dict[str, dict[str, object]] = {}
    if a.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=a.workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {key: pool.submit(_fedavg_job, ps, test, s, eps, a.curve_every, same) for key, ps, eps, same in jobs}
            runs = {key: f.result() for key, f in futures.items()}
    else:
        runs = {key: fedavg(ps, test, s, eps, a.curve_every, same) for key, ps, eps, same in jobs}
    if parts_dir:
        result["samples"]["per_node_dirichlet"] = [len(p) for p in parts_dir]  # type: ignore[index]
    for key in ["nodp", "nodp_same_batch"] + [k for k, _, _, _ in jobs]:
        if key in runs:
            result[f"accuracy_{key}"] = runs[key]["accuracy"]
    result.update(
        fl_settings=s.__dict__,
        runs=runs,
        dataset="mnist1d (fedgpu.datasets.public_split, generated locally)",
        model=f"CNN1D width {s.width} ({sum(p.numel() for p in build(s.width, 0).parameters())} parameters)",
        workers=a.workers,
        quick=a.quick,
        torch=torch.__version__,
        machine=platform.machine(),
        seconds_total=round(time.perf_counter() - t_start, 1),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
