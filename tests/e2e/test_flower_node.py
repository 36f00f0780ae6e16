"""A stock Flower NumPyClient (examples/flower_client.py, no fedgpu imports) joins a demo job beside native nodes."""

from __future__ import annotations

from pathlib import Path

from fedgpu.demo import DemoConfig, run_demo
from fedgpu.wire.auth import Identity

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower_client.py"


def test_flower_client_trains_beside_native_nodes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    cfg = DemoConfig(nodes=3, rounds=6, samples=6000, cohort_size=1, out=out, flower_client=f"{EXAMPLE}:client_fn", flower_nodes=1)
    report = run_demo(cfg)
    flower_id = Identity.load_or_create(out / "node0" / "identity.pem").node_id
    log = (out / "node0.log").read_text()
    assert "Traceback" not in log, log[-2000:]
    assert report["status"] == "done" and report["encryption"] == "ckks"
    assert all(flower_id in r["participants"] for r in report["rounds"]), log[-2000:]
    assert report["nodes"][flower_id]["role"] == "flower" and report["nodes"][flower_id]["rounds"] == 6
    assert report["nodes"][flower_id]["reward"] > 0  # valued and paid like the native nodes
    assert report["final_accuracy"] >= 0.85  # 6 rounds on 6 k samples: 0.90 measured; the full demo: docs/flower.md
