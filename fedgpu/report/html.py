"""report.html: a job's report as one self-contained page (inline SVG and CSS, no script, nothing fetched).

What the ML team asks first (did it learn, what did it cost, where did the time go) and what data
owners and node operators ask (how much epsilon each owner spent, who was paid what), drawn from
the report dict alone. Each chart is a ``<figure class="plot" data-plot=NAME>``; a chart without data
(no DP, no rewards) is replaced by a sentence saying why, never drawn empty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from fedgpu import __version__
from fedgpu.report import svg
from fedgpu.report.metrics import TIME_PARTS, node_label, round_rows, time_split

PLOTS = ("accuracy", "loss", "epsilon", "rewards", "bytes", "time")

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1260px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.status { display: inline-block; padding: 2px 10px; border-radius: 10px; color: #fff; font-weight: 600; }
.status.done { background: #2b8a3e; } .status.failed, .status.cancelled { background: #c92a2a; } .status.stopped { background: #e67700; }
.error { border-left: 4px solid #c92a2a; background: #fff5f5; padding: 8px 12px; white-space: pre-wrap; }
.facts { display: flex; flex-wrap: wrap; gap: 6px 24px; margin: 12px 0; }
.facts .k { color: #666; margin-right: 6px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 16px; }
figure.plot { margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: 8px; background: #fff; }
figure.plot svg { width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; color: #444; margin: 2px 4px 6px; font-weight: 600; }
p.none { color: #666; font-style: italic; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 12px; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 3px 10px; text-align: right; }
th:first-child, td:first-child, td.id, th.id { text-align: left; }
td.id { font-family: ui-monospace, monospace; color: #555; }
footer { color: #888; font-size: 12px; margin-top: 32px; }
"""


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else str(v)
    return escape(str(v))


def _figure(name: str, caption: str, chart: str) -> str:
    return f'<figure class="plot" data-plot="{name}" id="plot-{name}"><figcaption>{escape(caption)}</figcaption>{chart}</figure>'


def _nodes_in_order(report: Mapping[str, Any]) -> list[str]:
    """Every node the report mentions, by name."""
    ids = set(report.get("nodes") or {})
    for rec in report.get("rounds") or []:
        ids |= set(rec.get("participants") or []) | set(rec.get("epsilon") or {})
    return sorted(ids, key=lambda n: (node_label(report, n), n))


def _node_colors(report: Mapping[str, Any]) -> dict[str, str]:
    """One colour per node, the same in every chart."""
    return {n: svg.color(i) for i, n in enumerate(_nodes_in_order(report))}


def _epsilon(report: Mapping[str, Any], labels: list[str], rounds: Sequence[Mapping[str, Any]]) -> str:
    client = [r.get("client_epsilon") for r in rounds]
    if any(v is not None for v in client):
        series = [svg.Series("client-level ε (every node)", client, svg.color(0))]
        return _figure("epsilon", "ε per round (client-level DP, accounted by the driver)", svg.line_chart(labels, series, title="epsilon per round", y_label="ε"))
    nodes = [n for n in _nodes_in_order(report) if any(n in (r.get("epsilon") or {}) for r in rounds)]
    if not nodes:
        why = "this job did not ask for differential privacy" if not report.get("privacy") else "no node reported its ε"
        return f'<p class="none">No ε chart: {why}.</p>'
    colors = _node_colors(report)
    series = [svg.Series(node_label(report, n), [(r.get("epsilon") or {}).get(n) for r in rounds], colors[n]) for n in nodes]
    cap = (report.get("privacy") or {}).get("epsilon")
    caption = "ε spent on each data owner's dataset, after each round" + (f" (the job asks for ε = {cap:g} in all)" if cap else "")
    return _figure("epsilon", caption, svg.line_chart(labels, series, title="epsilon per owner per round", y_label="ε (owner's ledger)"))


def _rewards(report: Mapping[str, Any]) -> str:
    paid = {n: float(info.get("reward") or 0.0) for n, info in (report.get("nodes") or {}).items()}
    total = sum(v for v in paid.values() if v > 0)
    if report.get("valuation") is None or total <= 0:
        why = "this job pays no rewards" if report.get("valuation") is None else "nothing was paid yet (the pool carries over until the evidence shows who earned it)"
        return f'<p class="none">No reward chart: {why}.</p>'
    order = sorted(paid, key=lambda n: (-paid[n], node_label(report, n)))
    shares = [100 * max(paid[n], 0.0) / total for n in order]
    colors = _node_colors(report)
    chart = svg.hbar_chart([node_label(report, n) for n in order], shares, [colors[n] for n in order], title="reward shares", value_format=lambda v: f"{v:.1f} %")
    return _figure("rewards", f"Share of the {total:,.0f} credits paid, per node", chart)


def _node_table(report: Mapping[str, Any]) -> str:
    nodes = report.get("nodes") or {}
    total = sum(max(float(i.get("reward") or 0.0), 0.0) for i in nodes.values())
    has_role = any("role" in i for i in nodes.values())
    head = "<tr><th>name</th><th class='id'>id</th>" + ("<th>role</th>" if has_role else "") + "<th>rounds</th><th>ε</th><th>reward</th><th>share</th></tr>"
    rows = []
    for n in _nodes_in_order(report):
        info = nodes.get(n) or {}
        reward = info.get("reward")
        share = f"{100 * max(float(reward), 0.0) / total:.1f} %" if reward is not None and total > 0 else "&ndash;"
        role = f"<td>{_fmt(info.get('role'))}</td>" if has_role else ""
        rows.append(
            f"<tr><td>{escape(node_label(report, n))}</td><td class='id'>{escape(n)}</td>{role}<td>{_fmt(info.get('rounds'))}</td>"
            f"<td>{_fmt(info.get('epsilon'))}</td><td>{_fmt(reward, 6)}</td><td>{share}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>" if rows else '<p class="none">No node took part.</p>'


def _round_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="none">No round was applied.</p>'
    cols = ["round", "accuracy", "loss", "participants", "bytes_up", "round_seconds", *(f"{p}_seconds" for p in TIME_PARTS), "epsilon_max", "rewards_paid"]
    head = "".join(f"<th>{escape(c.replace('_seconds', ' s').replace('_', ' '))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r[c])}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page for ``report`` (the dict the driver writes to report.json)."""
    rounds: list[Mapping[str, Any]] = list(report.get("rounds") or [])
    labels = [str(r["round"]) for r in rounds]
    status = str(report.get("status") or "done")
    title = f"{report.get('name') or 'job'} · {report.get('job') or 'not submitted'}"
    facts = {
        "status": f'<span class="status {escape(status)}">{escape(status)}</span>',
        "model": _fmt(report.get("model")), "dataset": _fmt(report.get("dataset")), "parameters": _fmt(report.get("params")),
        "encryption": _fmt(report.get("encryption")), "cohort size k": _fmt(report.get("cohort_size")),
        "rounds": f"{len(rounds)}", "final accuracy": f"{100 * float(report.get('final_accuracy') or 0.0):.2f} %",
        "time": f"{float(report.get('seconds') or 0.0):.1f} s",
    }
    privacy = report.get("privacy")
    if privacy:
        facts["privacy"] = escape(f"{privacy.get('mode', 'sample')}-level DP, ε {privacy.get('epsilon')}, δ {privacy.get('delta')}")
    parts = [
        f"<h1>{escape(title)}</h1>",
        '<div class="facts">' + "".join(f'<div><span class="k">{escape(k)}</span>{v}</div>' for k, v in facts.items()) + "</div>",
    ]
    if report.get("error"):
        parts.append(f'<div class="error"><b>Why the job ended:</b> {escape(str(report["error"]))}</div>')
    plots: list[str] = []
    if rounds:
        acc = [svg.Series("accuracy", [r.get("accuracy") for r in rounds], svg.color(0))]
        plots.append(_figure("accuracy", "Accuracy on the driver's held-out set", svg.line_chart(labels, acc, title="accuracy per round", y_label="accuracy", y_format=lambda v: f"{100 * v:.0f} %")))
        loss = [svg.Series("loss", [r.get("loss") for r in rounds], svg.color(3))]
        plots.append(_figure("loss", "Loss (cross-entropy) on the held-out set", svg.line_chart(labels, loss, title="loss per round", y_label="loss")))
        plots.append(_epsilon(report, labels, rounds))
        plots.append(_rewards(report))
        traffic = [svg.Series("up (updates)", [r.get("bytes_up", 0) for r in rounds], svg.color(0)), svg.Series("down (models, tasks)", [r.get("bytes_down", 0) for r in rounds], svg.color(1))]
        plots.append(_figure("bytes", "Bytes on the wire per round, all nodes", svg.bar_chart(labels, traffic, title="bytes per round", y_label="bytes")))
        splits = [time_split(r) for r in rounds]
        time_series = [svg.Series(part, [s[part] for s in splits], svg.color(i)) for i, part in enumerate(TIME_PARTS)]
        caption = "Where each round's time went (training and upload: the slowest node; other: waiting for nodes, downloads, DP planning, encryption)"
        plots.append(_figure("time", caption, svg.bar_chart(labels, time_series, title="time per round", y_label="seconds", stacked=True)))
        parts.append('<h2>Rounds</h2><div class="plots">' + "".join(p for p in plots if "<figure" in p) + "</div>")
        parts += [p for p in plots if "<figure" not in p]
    else:
        parts.append('<p class="none">No round was applied, so there is nothing to chart.</p>')
    parts += ["<h2>Nodes</h2>", _node_table(report), "<h2>Per round</h2>", _round_table(round_rows(report))]
    parts.append(f"<footer>fedgpu {escape(__version__)} · the same figures are in report.json and metrics.csv</footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )


__all__ = ["PLOTS", "render_html"]
