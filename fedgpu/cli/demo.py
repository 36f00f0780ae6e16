"""``fedgpu demo``: the whole system on 127.0.0.1 in one command."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run an aggregator, N nodes and a job driver on 127.0.0.1",
        description="End-to-end federated training on an embedded default: starts an aggregator, N node processes and a job driver on 127.0.0.1, shows progress, prints the final accuracy, and stops every process it started.",
    )
    p.add_argument("--nodes", type=int, default=9, help="node processes (default %(default)s: three cohorts at k = 3)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default: per dataset)")
    p.add_argument("--dataset", default="mnist1d", choices=["mnist1d", "digits"], help="public dataset, generated locally (default %(default)s)")
    p.add_argument("--samples", type=int, default=None, help="dataset size to generate (default: per dataset)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, partition and model (default %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="keep everything in this folder (default: a temporary one; report copied to runs/demo/)")
    p.add_argument("--partition", choices=["iid", "dirichlet"], default="iid", help="how the data is split between nodes (default %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration for --partition dirichlet (default %(default)s)")
    p.add_argument("--encryption", choices=["ckks", "bfv8", "bfv8-32", "none"], default="ckks", help="update encryption; bfv8 and bfv8-32 (<= 32 nodes) are the 8-bit bandwidth modes (default %(default)s)")
    p.add_argument(
        "--cohort-size", "-k", type=int, default=None,
        help="k: the driver only sees sums of >= k nodes (default 3; 1 with --public, whose updates reveal nothing private)",
    )
    p.add_argument("--epsilon", type=float, default=None, help="turn on DP-SGD on the nodes with this epsilon target for the job")
    p.add_argument("--epsilon-cap", type=float, default=None, help="each data owner's epsilon cap; tasks past it are refused")
    p.add_argument("--free-riders", type=int, default=0, help="nodes that send zeros / noise / the replayed global change")
    p.add_argument("--poisoners", type=int, default=0, help="nodes that send sign-flipped x10 updates / train on flipped labels")
    p.add_argument("--lazy-nodes", type=int, default=0, help="nodes that skip half their local steps (caught by spot checks with --public)")
    p.add_argument("--public", action="store_true", help="a public-data job: nodes build their shards themselves and a share of the tasks is replicated and compared")
    p.add_argument("--replication", type=float, default=0.1, help="with --public: the share of tasks also given to a second node (default %(default)s)")
    p.add_argument("--slow-nodes", type=int, default=0, help="honest nodes whose tasks take --slow-factor times as long (a real delay)")
    p.add_argument("--slow-factor", type=float, default=4.0, help="how many times as long a slow node's task takes (default %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="local epochs per round (default: per dataset)")
    p.add_argument("--lr", type=float, default=None, help="local learning rate (default: per dataset)")
    p.add_argument("--flower-client", default=None, metavar="MODULE:ATTR", help="run --flower-nodes of the nodes with this Flower NumPyClient, e.g. examples/flower_client.py:client_fn (docs/flower.md)")
    p.add_argument("--flower-nodes", type=int, default=None, help="how many nodes train with --flower-client (default 1 when it is given)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedgpu.cli.train import print_progress
    from fedgpu.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        nodes=args.nodes,
        rounds=args.rounds,
        dataset=args.dataset,
        samples=args.samples,
        seed=args.seed,
        out=args.out,
        partition=args.partition,
        alpha=args.alpha,
        encryption=args.encryption,
        cohort_size=args.cohort_size,
        epsilon=args.epsilon,
        epsilon_cap=args.epsilon_cap,
        free_riders=args.free_riders,
        poisoners=args.poisoners,
        lazy_nodes=args.lazy_nodes,
        public=args.public,
        replication=args.replication,
        slow_nodes=args.slow_nodes,
        slow_factor=args.slow_factor,
        epochs=args.epochs,
        lr=args.lr,
        flower_client=args.flower_client,
        flower_nodes=args.flower_nodes if args.flower_nodes is not None else (1 if args.flower_client else 0),
    )
    t0 = time.perf_counter()

    def progress(ev: dict[str, Any]) -> None:
        if ev["event"] == "aggregator":
            print(f"aggregator on {ev['address']} ({'TLS, ' if ev.get('tls') else ''}work folder {ev['work']})", flush=True)
        elif ev["event"] == "nodes":
            if args.public:
                print(f"started {ev['count']} nodes without files: each builds the shard of {args.dataset} its task names", flush=True)
            else:
                print(f"started {ev['count']} nodes with {sum(ev['sizes'])} samples ({min(ev['sizes'])}..{max(ev['sizes'])} each)", flush=True)
        else:
            print_progress(ev)

    report = run_demo(cfg, progress)
    where = (args.out / "job") if args.out else Path("runs/demo")
    print(f"final accuracy {report['final_accuracy']:.3f} after {len(report['rounds'])} rounds in {time.perf_counter() - t0:.0f} s ({report['encryption']} encryption); report: {where / 'report.html'} (report.json, metrics.csv beside it)")
    return 0


__all__ = ["register", "run"]
