"""Shared fixtures: a real aggregator on a real 127.0.0.1 socket, in a background thread (cleartext or TLS); the e2e marker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
