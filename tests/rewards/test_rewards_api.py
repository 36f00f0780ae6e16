from __future__ import annotations

import ast
import importlib
import pathlib

MODULES = ["fedgpu.rewards", "fedgpu.rewards.chain", "fedgpu.rewards.estimate", "fedgpu.rewards.payout", "fedgpu.rewards.shapley", "fedgpu.rewards.utility"]


# Each module's __all__ being sorted and complete is checked for every module by tests/test_public_api.py.


def test_package_exports_every_submodule_symbol() -> None:
    package = importlib.import_module("fedgpu.rewards")
    internal = {
        "Coalition",
        "DEFAULT_MAX_SAMPLE_LOSS",
        "EXACT_DEFAULT_MAX_PLAYERS",
        "EXACT_HARD_MAX_PLAYERS",
        "HEAD_PURPOSE",
        "SMALL_VALIDATION",
        "Utility",
    }
    for name in MODULES[1:]:
        missing = set(importlib.import_module(name).__all__) - set(package.__all__) - internal
        assert not missing, f"{name}: {sorted(missing)}"


def test_rewards_stays_a_leaf() -> None:
    """Roles and mechanisms call the rewards rules, never the other way round (DESIGN: dependencies run one way)."""
    import fedgpu.rewards

    allowed = ("fedgpu.rewards", "fedgpu.aggregation", "fedgpu.models", "fedgpu.datasets", "fedgpu.errors")
    for path in pathlib.Path(fedgpu.rewards.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                assert not name.startswith("fedgpu") or name.startswith(allowed), f"{path.name} imports {name}"
