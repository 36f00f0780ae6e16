"""``fedgpu datasets``: the dataset schemas this machine knows, and a check of a data owner's files against them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "datasets", help="list the dataset schemas installed here; check data files",
        description="List the dataset schemas this machine knows (a job names one; a data owner maps it to local files with "
        "`fedgpu node --data NAME=PATH`). With --check, load each file as `fedgpu node` would and say what it holds.",
    )
    p.add_argument("--check", action="append", default=[], metavar="NAME=PATH", help="check a .npz or .csv file against schema NAME; repeatable")
    p.add_argument("--job", type=Path, default=None, help="with --check: check against the [schema] this job file declares")
    p.add_argument("--export", metavar="NAME", help="write scikit-learn's breast_cancer or wine as one CSV per node and a held-out CSV (see examples/NAME.toml)")
    p.add_argument("--out", type=Path, default=Path("data"), help="folder for --export (default: data)")
    p.add_argument("--nodes", type=int, default=3, help="how many node files --export writes (default: 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def schemas() -> list[dict[str, Any]]:
    from fedgpu.datasets import SCHEMAS, available_schemas

    return [{"name": s.name, "input_shape": list(s.input_shape), "classes": s.num_classes, "public": n in SCHEMAS} for n, s in available_schemas().items()]


def check(name: str, path: Path, job: Path | None = None) -> dict[str, Any]:
    """What a node would load for a task of schema NAME (the one ``job`` declares, if given); raises ConfigError naming the problem."""
    import numpy as np

    from fedgpu.datasets import get_schema, load_file

    declared = None
    if job is not None:
        from fedgpu.config import load_job

        declared = load_job(job).schema
    schema = get_schema(name, declared)
    ds = load_file(path, schema)
    counts = np.bincount(ds.y, minlength=schema.num_classes)
    return {"name": name, "path": str(path), "samples": len(ds), "per_class": [int(c) for c in counts]}


def run(args: argparse.Namespace) -> int:
    from fedgpu.errors import ConfigError

    if args.export:
        from fedgpu.datasets.export import export_tabular

        written = export_tabular(args.export, args.out, args.nodes)
        if args.json:
            print(json.dumps(written, indent=2))
        else:
            for f in written["nodes"]:
                print(f"{f['path']}: {f['samples']} samples (one node's file: --data {args.export}={f['path']})")
            print(f"{written['test']['path']}: {written['test']['samples']} held-out samples (the driver's --validation)")
            print(f"job file with its schema: examples/{args.export}.toml")
        return 0
    if args.check:
        results = []
        for item in args.check:
            name, sep, path = item.partition("=")
            if not (sep and name and path):
                raise ConfigError(f"--check {item!r}: expected NAME=PATH, e.g. --check mnist1d=/data/mine.npz")
            r = check(name, Path(path), args.job)
            results.append(r)
            if not args.json:
                print(f"{r['path']}: {r['samples']:,} samples of schema {r['name']}, per class {r['per_class']}", flush=True)
        if args.json:
            print(json.dumps(results, indent=2))
        return 0
    found = schemas()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print(f"{'schema':<10} {'input':>8} {'classes':>8}  generator")
    for s in found:
        origin = "built in (fedgpu demo, the driver's default held-out set)" if s["public"] else "installed (fedgpu.datasets entry point)"
        print(f"{s['name']:<10} {'x'.join(map(str, s['input_shape'])):>8} {s['classes']:>8}  {origin}")
    return 0


__all__ = ["check", "register", "run", "schemas"]
