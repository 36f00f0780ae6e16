import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_generated_code_stays_apart() -> None:
    generated = {p.name for p in (ROOT / "fedgpu" / "proto").rglob("*.py")}
    assert "node_pb2.py" in generated
    handwritten = [p for p in (ROOT / "fedgpu").rglob("*_pb2*.py") if "proto" not in p.parts]
    assert handwritten == []
