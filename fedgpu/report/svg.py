"""Charts as inline SVG strings: lines over rounds, grouped or stacked bars, horizontal bars.

Enough for a job's report and no more: no JavaScript, no fonts or files to fetch, so report.html
opens anywhere, offline, and prints. Every chart is a ``<svg>`` with a ``viewBox``, so it scales
with the page. Colours carry the data; axes, ticks and text are grey or black.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# Distinct, colour-blind-friendly hues (Okabe-Ito, then Tableau): never grey, which is the axes'.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#f0e442", "#882255", "#44aa99", "#999933", "#aa4499", "#117733")
AXIS = "#555"
GRID = "#e3e3e3"
WIDTH, HEIGHT = 600, 280
LEFT, RIGHT, TOP, BOTTOM = 62, 16, 34, 40  # margins: the left one holds the y tick labels, the top one the legend

Format = Callable[[float], str]


@dataclass(frozen=True)
class Series:
    """One line, or one kind of bar: a value per x (None where there is none)."""

    label: str
    values: Sequence[float | None]
    color: str


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    out = []
    v = first
    while v < hi + step * 0.5:
        out.append(round(v, 12))
        v += step
    return out


def short(v: float) -> str:
    """A tick label: 3 significant digits, k/M/G for large values."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:.3g}"


def _frame(body: list[str], legend: Sequence[tuple[str, str]], title: str) -> str:
    items = []
    x = LEFT
    for label, fill in legend:
        items.append(f'<rect x="{x}" y="10" width="12" height="12" fill="{fill}"/><text x="{x + 16}" y="20" font-size="12">{escape(label)}</text>')
        x += 28 + 7 * len(label)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" font-family="sans-serif">'
        f"<title>{escape(title)}</title>{''.join(items)}{''.join(body)}</svg>"
    )


def _axes(y_ticks: list[float], y_of: Callable[[float], float], y_format: Format, x_label: str, y_label: str) -> list[str]:
    out = []
    for t in y_ticks:
        y = y_of(t)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="{AXIS}">{escape(y_format(t))}</text>')
    bottom = HEIGHT - BOTTOM
    out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" stroke="{AXIS}"/>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}" stroke="{AXIS}"/>')
    out.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" font-size="12" text-anchor="middle" fill="{AXIS}">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(14 {(TOP + bottom) / 2}) rotate(-90)" font-size="12" text-anchor="middle" fill="{AXIS}">{escape(y_label)}</text>')
    return out


def _y_scale(values: Sequence[float], y_min: float | None, y_max: float | None) -> tuple[list[float], Callable[[float], float]]:
    lo = y_min if y_min is not None else min(values, default=0.0)
    hi = y_max if y_max is not None else max(values, default=1.0)
    if y_min is None and lo > 0 and lo < 0.5 * hi:
        lo = 0.0  # start at zero unless the data sit in a narrow band far from it
    y_ticks = ticks(lo, hi)
    lo, hi = min(y_ticks[0], lo), max(y_ticks[-1], hi)
    span = (hi - lo) or 1.0
    plot_h = HEIGHT - TOP - BOTTOM

    def y_of(v: float) -> float:
        return TOP + plot_h * (1 - (v - lo) / span)

    return [t for t in y_ticks if lo <= t <= hi], y_of


def _x_labels(labels: Sequence[str], x_of: Callable[[int], float]) -> list[str]:
    every = max(1, math.ceil(len(labels) / 15))  # at most ~15 labels on the axis
    return [
        f'<text x="{x_of(i):.1f}" y="{HEIGHT - BOTTOM + 15}" font-size="11" text-anchor="middle" fill="{AXIS}">{escape(lab)}</text>'
        for i, lab in enumerate(labels)
        if i % every == 0 or i == len(labels) - 1
    ]


def line_chart(
    x_labels: Sequence[str], series: Sequence[Series], *, title: str, y_label: str, x_label: str = "round",
    y_min: float | None = None, y_max: float | None = None, y_format: Format = short,
) -> str:
    """One polyline per series, a dot per value (so a single round still shows)."""
    values = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    y_ticks, y_of = _y_scale(values, y_min, y_max)
    n = max(len(x_labels), 1)
    plot_w = WIDTH - LEFT - RIGHT

    def x_of(i: int) -> float:
        return LEFT + plot_w * (0.5 if n == 1 else i / (n - 1))

    body = _axes(y_ticks, y_of, y_format, x_label, y_label) + _x_labels(x_labels, x_of)
    layered = 1 < len(series) <= 8  # equal series (owners with equal data) would hide each other: the first drawn widest
    for k, s in enumerate(series):
        width = 2.0 + 4.0 * (len(series) - 1 - k) / (len(series) - 1) if layered else 2.5
        pts = [(x_of(i), y_of(v)) for i, v in enumerate(s.values) if v is not None and math.isfinite(v)]
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            body.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="{width:.1f}" stroke-linejoin="round"/>')
        body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{1.5 + width:.1f}" fill="{s.color}"/>' for x, y in pts]
    return _frame(body, [(s.label, s.color) for s in series], title)


def bar_chart(
    x_labels: Sequence[str], series: Sequence[Series], *, title: str, y_label: str, x_label: str = "round",
    stacked: bool = False, y_format: Format = short,
) -> str:
    """Bars per x: side by side (grouped) or on top of each other (stacked); None counts as 0."""
    columns = [[max(0.0, v or 0.0) for v in s.values] for s in series]
    n = max(len(x_labels), 1)
    tops = [sum(c[i] for c in columns if i < len(c)) for i in range(n)] if stacked else [v for c in columns for v in c]
    y_ticks, y_of = _y_scale([0.0, *tops], 0.0, None)
    plot_w = WIDTH - LEFT - RIGHT
    slot = plot_w / n

    def x_of(i: int) -> float:
        return LEFT + slot * (i + 0.5)

    body = _axes(y_ticks, y_of, y_format, x_label, y_label) + _x_labels(x_labels, x_of)
    width = slot * 0.7 / (1 if stacked else max(len(series), 1))
    for i in range(n):
        base = 0.0
        for k, (s, c) in enumerate(zip(series, columns, strict=True)):
            v = c[i] if i < len(c) else 0.0
            lo, hi = (base, base + v) if stacked else (0.0, v)
            x = x_of(i) - slot * 0.35 + (0 if stacked else k * width)
            if hi > lo:
                h = y_of(lo) - y_of(hi)
                body.append(f'<rect x="{x:.1f}" y="{y_of(hi):.1f}" width="{width:.1f}" height="{max(h, 0.5):.1f}" fill="{s.color}"><title>{escape(s.label)}: {escape(y_format(v))}</title></rect>')
            base = hi if stacked else base
    return _frame(body, [(s.label, s.color) for s in series], title)


def hbar_chart(labels: Sequence[str], values: Sequence[float], colors: Sequence[str], *, title: str, value_format: Format = short) -> str:
    """One horizontal bar per label (a node), in the order given; values below 0 draw as 0."""
    n = max(len(labels), 1)
    row = 22
    height = TOP + row * n + 12
    longest = max((len(lab) for lab in labels), default=4)
    left = min(20 + 7 * longest, WIDTH // 3)
    right = 70
    top_value = max([v for v in values if math.isfinite(v)] + [1e-12])
    body = []
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        y = TOP + i * row
        w = (WIDTH - left - right) * max(v, 0.0) / top_value
        body.append(f'<text x="{left - 6}" y="{y + 15}" font-size="12" text-anchor="end">{escape(lab)}</text>')
        if w > 0:
            body.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{colors[i]}"/>')
        body.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}" font-size="12" fill="{AXIS}">{escape(value_format(v))}</text>')
    body.append(f'<line x1="{left}" x2="{left}" y1="{TOP}" y2="{TOP + row * n}" stroke="{AXIS}"/>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" font-family="sans-serif"><title>{escape(title)}</title>{"".join(body)}</svg>'
    )


__all__ = [
    "AXIS",
    "BOTTOM",
    "Format",
    "GRID",
    "HEIGHT",
    "LEFT",
    "PALETTE",
    "RIGHT",
    "Series",
    "TOP",
    "WIDTH",
    "bar_chart",
    "color",
    "hbar_chart",
    "line_chart",
    "short",
    "ticks",
]
