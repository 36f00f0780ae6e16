"""A job's report for people: report.json (everything), report.html (the charts), metrics.csv (per round).

The driver builds the report dict; this package only writes it out. ``write_report`` writes the
three files side by side, each atomically (a reader never sees half a file), so ``fedgpu train``
and ``fedgpu demo`` leave the same set whether the job finished or not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedgpu.report.html import render_html
from fedgpu.report.metrics import round_rows, time_split, write_csv

FILES = ("report.json", "report.html", "metrics.csv")


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_report(folder: Path, report: Mapping[str, Any]) -> None:
    """Write report.json, report.html and metrics.csv for ``report`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    _replace(folder / "report.json", lambda p: p.write_text(json.dumps(report, indent=2)))
    _replace(folder / "report.html", lambda p: p.write_text(render_html(report)))
    _replace(folder / "metrics.csv", lambda p: write_csv(p, report))


__all__ = ["FILES", "render_html", "round_rows", "time_split", "write_csv", "write_report"]
