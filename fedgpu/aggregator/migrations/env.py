"""Alembic's environment for the aggregator's database: the revisions in versions/ against store.metadata.

Two callers. :func:`fedgpu.aggregator.store.upgrade_schema` (every ``Store`` open) hands over a
connection already inside its transaction, in ``config.attributes["connection"]``: every revision
runs in that one transaction, and a failure leaves the schema as it was. The ``alembic`` command line
(alembic.ini here, for writing a revision) passes the database as ``-x db=URL``.

A schema change is a new file in versions/ (``--autogenerate`` drafts it from store.metadata; read
it, keep it portable across SQLite and PostgreSQL) and never an edit of an existing one: a database
in the field is at some revision and only moves forward from it. tests/aggregator/test_store.py
fails while store.metadata and the head revision disagree.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from fedgpu.aggregator.schema import metadata


def run(connection: Connection) -> None:
    # render_as_batch: autogenerate writes ALTERs as batch operations, which SQLite needs (it rebuilds the table).
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():  # inside the caller's transaction: no transaction of its own
        context.run_migrations()


def main() -> None:
    config = context.config
    shared: Connection | None = config.attributes.get("connection")
    if shared is not None:
        run(shared)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    url = context.get_x_argument(as_dictionary=True).get("db")
    if not url:
        raise SystemExit("pass the database: alembic -c fedgpu/aggregator/migrations/alembic.ini -x db=URL COMMAND")
    engine = create_engine(url)
    with engine.begin() as connection:
        run(connection)
    engine.dispose()


main()
