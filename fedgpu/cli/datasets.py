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
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def schemas() -> list[dict[str, Any]]:
    from fedgpu.datasets import SCHEMAS

    return [{"name": s.name, "input_shape": list(s.input_shape), "classes": s.num_classes, "public": True} for s in SCHEMAS.values()]


def check(name: str, path: Path) -> dict[str, Any]:
    """What ``fedgpu node --data NAME=PATH`` would load (raises ConfigError naming the problem)."""
    import numpy as np

    from fedgpu.datasets import get_schema, load_file

    ds = load_file(path, get_schema(name))
    counts = np.bincount(ds.y, minlength=get_schema(name).num_classes)
    return {"name": name, "path": str(path), "samples": len(ds), "per_class": [int(c) for c in counts]}


def run(args: argparse.Namespace) -> int:
    from fedgpu.errors import ConfigError

    if args.check:
        results = []
        for item in args.check:
            name, sep, path = item.partition("=")
            if not (sep and name and path):
                raise ConfigError(f"--check {item!r}: expected NAME=PATH, e.g. --check mnist1d=/data/mine.npz")
            r = check(name, Path(path))
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
        print(f"{s['name']:<10} {'x'.join(map(str, s['input_shape'])):>8} {s['classes']:>8}  built in (fedgpu demo, the driver's default held-out set)")
    return 0


__all__ = ["check", "register", "run", "schemas"]
