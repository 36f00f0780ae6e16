"""Opening the aggregator's database: URLs (a bare path is a SQLite file), passwords kept out of logs
and errors, SQLite's pragmas, and the schema brought to the head of ``migrations/`` on open.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

from fedgpu.errors import StorageError

log = logging.getLogger("fedgpu.aggregator.store")


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def normalise_url(url: str) -> str:
    """Accept a bare path as a SQLite file."""
    return url if "://" in url else f"sqlite:///{Path(url).expanduser().resolve()}"


def redact_url(url: str | URL) -> str:
    """``url`` as a log line or an error may show it: the password replaced by ``***``."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy parses: blank whatever sits between "user:" and "@"
        return re.sub(r"(://[^/@:]*:)[^@]*@", r"\1***@", url)


def without_password(message: str, url: URL) -> str:
    """``message`` with ``url``'s password, plain or percent-encoded, replaced by ``***``."""
    if url.password:
        for form in {str(url.password), quote(str(url.password), safe="")}:
            message = message.replace(form, "***")
    return message


class _WithoutSecret(logging.Filter):
    """Blanks one secret in every record a handler writes: its message and any traceback."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, "***"), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and self.secret in record.exc_text:
            record.exc_text = record.exc_text.replace(self.secret, "***")
        return True


def hide_password_in_logs(url: str) -> None:
    """Keep ``url``'s password, plain or percent-encoded, out of every line the root logger's handlers
    write, whoever logs the URL (``fedgpu aggregator`` calls this with its --db before it starts)."""
    try:
        parsed = make_url(url) if "://" in url else None
    except (ArgumentError, ValueError):
        return  # not a URL: Store refuses it, its message masked
    if parsed is None or not parsed.password:
        return
    for secret in {str(parsed.password), quote(str(parsed.password), safe="")}:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_WithoutSecret(secret))


MIGRATIONS = Path(__file__).with_name("migrations")  # Alembic's script folder: env.py, versions/
BASELINE_REVISION = "0001"  # the schema of every database made before migrations (by metadata.create_all)
_BASELINE_TABLES = frozenset({"nodes", "jobs", "models", "rounds", "cohort_sums", "declines", "reward_ledger", "ledger_heads", "meta"})
_PG_SCHEMA_LOCK = 0x66656467707531  # pg_advisory_xact_lock key ("fedgpu1"): one schema upgrade at a time
_MIGRATING = threading.Lock()


def _revisions(conn: Connection) -> tuple[str, ...]:
    """The revisions in the database's alembic_version (none for an empty database or one made before migrations)."""
    if not inspect(conn).has_table("alembic_version"):
        return ()
    return tuple(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the head revision of ``migrations/``: all of it or, on any error, none.

    Already at head costs one read (no lock, so a read-only role can open the database). An empty
    database gets every revision; one made before migrations (the tables, no alembic_version) is
    stamped with the baseline first. A database at a revision this code does not know was written by
    a newer fedgpu and is refused. Concurrent openers queue on a lock: SQLite's write lock (``BEGIN
    IMMEDIATE``, which also makes SQLite's DDL transactional), PostgreSQL's advisory lock.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    script = ScriptDirectory.from_config(config)
    heads = set(script.get_heads())
    with engine.connect() as conn:
        current = _revisions(conn)
    for rev in current:
        try:
            script.get_revision(rev)
        except CommandError:
            raise StorageError(
                f"the database is at schema revision {rev}, which this fedgpu does not know (its head is {', '.join(sorted(heads))}): "
                "a newer fedgpu wrote it; upgrade fedgpu, or open another database"
            ) from None
    if set(current) == heads:
        return
    # Alembic's op and context are module-wide proxies: one migration at a time in a process, too.
    with _MIGRATING, engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK})
        current = _revisions(conn)  # again, under the lock: another process may have upgraded meanwhile
        if set(current) == heads:
            return
        config.attributes["connection"] = conn
        found = set(inspect(conn).get_table_names())
        if not current and found & _BASELINE_TABLES:
            if missing := _BASELINE_TABLES - found:
                raise StorageError(f"the database has some of fedgpu's tables but not {', '.join(sorted(missing))}: it is not an aggregator's database; pass --db another one")
            command.stamp(config, BASELINE_REVISION)
            current = (BASELINE_REVISION,)
        command.upgrade(config, "head")
    log.info("database %s: schema upgraded from %s to %s", redact_url(engine.url), ", ".join(current) or "empty", ", ".join(sorted(heads)))


__all__ = [
    "BASELINE_REVISION",
    "MIGRATIONS",
    "hide_password_in_logs",
    "normalise_url",
    "redact_url",
    "sqlite_pragmas",
    "upgrade_schema",
    "without_password",
]
