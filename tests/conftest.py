"""Shared fixtures: a real aggregator on a real 127.0.0.1 socket, in a background thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedgpu.aggregator.local import LocalAggregator

torch.set_num_threads(1)


@pytest.fixture
def aggregator(tmp_path: Path) -> Iterator[LocalAggregator]:
    with LocalAggregator(str(tmp_path / "agg.db"), tmp_path / "spool") as a:
        yield a
