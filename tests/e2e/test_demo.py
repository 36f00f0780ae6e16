"""`fedgpu demo` runs its whole cluster over TLS, with a CA it makes for the run."""

from __future__ import annotations

from pathlib import Path

from fedgpu.demo import DemoConfig, run_demo


def test_demo_trains_over_tls(tmp_path: Path) -> None:
    events: list[dict] = []
    out = tmp_path / "demo"
    report = run_demo(DemoConfig(nodes=2, rounds=2, dataset="digits", encryption="none", cohort_size=1, out=out), events.append)
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert report["final_accuracy"] > 0.5
    assert next(ev for ev in events if ev["event"] == "aggregator")["tls"] is True
    assert "(TLS)" in (out / "aggregator.log").read_text()
    assert {p.name for p in (out / "tls").iterdir()} == {"ca.pem", "ca.key", "server.pem", "server.key"}
    for node_log in out.glob("node*.log"):
        assert "unreachable" not in node_log.read_text()  # every node got in at the first try
