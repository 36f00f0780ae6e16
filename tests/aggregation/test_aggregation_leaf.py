"""fedgpu.aggregation is a pure leaf: numpy and fedgpu.errors at import, Flower only inside a call."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import fedgpu.aggregation


def test_it_imports_no_role_no_wire_and_no_torch() -> None:
    allowed_fedgpu = ("fedgpu.aggregation", "fedgpu.errors")
    allowed_outside = ("__future__", "collections", "dataclasses", "math", "typing", "numpy", "flwr.server.strategy.aggregate")
    for path in pathlib.Path(fedgpu.aggregation.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                ok = name.startswith(allowed_fedgpu) if name.startswith("fedgpu") else name.startswith(allowed_outside)
                assert ok, f"{path.name} imports {name}"


def test_importing_it_loads_neither_torch_nor_flower() -> None:
    code = "import sys, fedgpu.aggregation, fedgpu.config; print(sorted(m for m in ('torch', 'flwr') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=pathlib.Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
