"""Shared fixtures: a real aggregator on a real 127.0.0.1 socket, in a background thread (cleartext or TLS); the e2e marker;
report.html rendered in a real headless chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from fedgpu.aggregator.local import LocalAggregator
from fedgpu.wire.certs import CertFiles, write_certs
from fedgpu.wire.transport import TLSConfig

torch.set_num_threads(1)

E2E = Path(__file__).resolve().parent / "e2e"


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e/ runs fedgpu's roles as real processes or servers: mark it e2e."""
    for item in items:
        if E2E in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)


# --- PostgreSQL -----------------------------------------------------------------------------------
POSTGRES_ENV = "FEDGPU_TEST_POSTGRES_URL"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose search_path is a new, empty schema in the database ``FEDGPU_TEST_POSTGRES_URL`` names.

    Without that variable the test skips, except in CI (``CI=true``), where it fails: CI always runs
    the PostgreSQL tests (``bash .ci/run`` starts a server for them).
    """
    import os
    import secrets

    base = os.environ.get(POSTGRES_ENV)
    if not base:
        why = f"PostgreSQL: set {POSTGRES_ENV}=postgresql://user:password@127.0.0.1:5432/db (a database it may create schemas in; bash .ci/run starts one)"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI never skips the PostgreSQL tests: {why}")
        pytest.skip(why)
    from sqlalchemy import create_engine, make_url, text

    schema = f"fedgpu_test_{secrets.token_hex(6)}"
    admin = create_engine(base)
    with admin.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def aggregator(tmp_path: Path) -> Iterator[LocalAggregator]:
    with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool") as a:
        yield a


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost."""
    return write_certs(tmp_path / "tls", ["127.0.0.1", "localhost"])


@pytest.fixture
def tls_aggregator(tmp_path: Path, certs: CertFiles) -> Iterator[LocalAggregator]:
    """The aggregator serving TLS; clients trust it with ``TLSConfig(ca=certs.ca)``."""
    with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool", tls=TLSConfig(cert=certs.cert, key=certs.key)) as a:
        yield a


# ---- report.html in a real browser ---------------------------------------------------------------
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
_BOXES_SCRIPT = """<script>
addEventListener("load", () => {
  const boxes = [...document.querySelectorAll("figure.plot")].map(f => {
    const r = f.querySelector("svg").getBoundingClientRect();
    return {name: f.dataset.plot, x: r.x + scrollX, y: r.y + scrollY, w: r.width, h: r.height};
  });
  const out = document.createElement("pre");
  out.id = "plot-boxes";
  out.textContent = JSON.stringify(boxes);
  document.body.appendChild(out);
});
</script>"""


@dataclass(frozen=True)
class Rendered:
    """report.html as chromium drew it: each plot's box on the page and the screenshot's pixels (RGB)."""

    boxes: dict[str, tuple[int, int, int, int]]  # plot name -> (x, y, width, height) in CSS pixels (scale 1)
    pixels: Any  # numpy array (height, width, 3) of uint8
    screenshot: Path

    def check_plots(self, expected: Iterable[str]) -> None:
        """Exactly the ``expected`` plots are on the page, each inside the screenshot, not blank, with its data drawn."""
        assert set(self.boxes) == set(expected), self.boxes
        height, width, _ = self.pixels.shape
        for name, (x, y, w, h) in self.boxes.items():
            assert w >= 300 and h >= 60, f"plot {name} is drawn {w}x{h}"
            assert x + w <= width and y + h <= height, f"plot {name} lies outside the screenshot ({width}x{height})"
            region = self.pixels[y : y + h, x : x + w].astype(int)
            ink = (region.min(axis=2) < 215).mean()  # anything not white: axes, text, data
            colour = (region.max(axis=2) - region.min(axis=2) > 60).mean()  # saturated pixels: the data (axes and text are grey)
            assert ink > 0.01, f"plot {name} is blank ({ink:.2%} ink) in {self.screenshot}"
            assert colour > 0.003, f"plot {name} has no data drawn ({colour:.2%} coloured pixels) in {self.screenshot}"


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    """Debian's chromium (`.ci/run` installs it). Missing: skipped locally, a failure in CI (CI=true)."""
    found = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("no chromium binary in CI: .ci/run installs Debian's `chromium` before pytest")
        pytest.skip("no chromium binary on this machine (apt-get install -y chromium); CI always runs this test")
    return found


@pytest.fixture
def render_html(chromium_binary: str, tmp_path: Path) -> Callable[[Path], Rendered]:
    """Render an HTML file in headless chromium: the plot boxes from --dump-dom, the pixels from --screenshot."""
    import numpy as np
    from PIL import Image

    def render(page: Path, width: int = 1300, height: int = 3000) -> Rendered:
        common = [
            chromium_binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--force-device-scale-factor=1", f"--window-size={width},{height}", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        ]
        probe = tmp_path / f"{page.stem}-boxes.html"
        probe.write_text(page.read_text().replace("</body>", _BOXES_SCRIPT + "</body>"))
        dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
        found = re.search(r'<pre id="plot-boxes">(.*?)</pre>', dom.stdout, re.S)
        assert found, f"chromium printed no plot boxes (exit {dom.returncode}): {dom.stderr[-2000:]}"
        boxes = {b["name"]: (round(b["x"]), round(b["y"]), round(b["w"]), round(b["h"])) for b in json.loads(html.unescape(found.group(1)))}
        shot = tmp_path / f"{page.stem}.png"
        run = subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
        assert shot.exists(), f"chromium wrote no screenshot (exit {run.returncode}): {run.stderr[-2000:]}"
        with Image.open(shot) as im:
            pixels = np.asarray(im.convert("RGB"))
        return Rendered(boxes, pixels, shot)

    return render
