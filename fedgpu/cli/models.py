"""``fedgpu models``: the models this machine can train (a job names one; nodes build it from their own code)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "models", help="list the models installed here",
        description="List the models this machine has: fedgpu's built-ins and those installed through the `fedgpu.models` entry-point group. "
        "A node offers the aggregator exactly these; a job whose model a node lacks is never sent to it.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def installed() -> list[dict[str, Any]]:
    """Each model: its name, where it comes from, and its parameter count on each dataset schema."""
    from importlib.metadata import entry_points

    from fedgpu.datasets import SCHEMAS
    from fedgpu.models import ModelSpec, available_models, build_model, count_params

    plugins = {ep.name: ep.value for ep in entry_points(group="fedgpu.models")}
    out = []
    for name in available_models():
        params: dict[str, int | None] = {}
        for schema in SCHEMAS.values():
            try:
                params[schema.name] = count_params(build_model(name, ModelSpec(schema.input_shape, schema.num_classes)))
            except Exception:  # a model that does not fit a schema's shape: shown as such, not an error
                params[schema.name] = None
        out.append({"name": name, "source": f"entry point {plugins[name]}" if name in plugins else "built in", "params": params})
    return out


def run(args: argparse.Namespace) -> int:
    from fedgpu.datasets import SCHEMAS

    models = installed()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    schemas = list(SCHEMAS)
    print(f"{'model':<14} " + " ".join(f"{'params on ' + s:>18}" for s in schemas) + "  source")
    for m in models:
        cells = " ".join(f"{m['params'][s]:>18,}" if m["params"][s] is not None else f"{'-':>18}" for s in schemas)
        print(f"{m['name']:<14} {cells}  {m['source']}")
    return 0


__all__ = ["installed", "register", "run"]
