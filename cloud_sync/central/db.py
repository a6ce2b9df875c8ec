"""Connections to the central databases, and their migrations (Alembic, run at start-up and idempotent).

SQLite gets WAL and a busy timeout, so a demo's second worker or a ``stats`` command waits for a writer
instead of failing; PostgreSQL gets a small pool with pre-ping, so a database restart costs one failed
transaction (retried) rather than a dead worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite

from cloud_sync.errors import CloudSyncError

MIGRATIONS = Path(__file__).with_name("migrations")
#: execution option: on SQLite, begin with the write lock (``BEGIN IMMEDIATE``); PostgreSQL locks rows
IMMEDIATE = "kiosk_immediate"


class DatabaseUnavailable(CloudSyncError, ConnectionError):  # noqa: N818 - reads as the condition
    """The database cannot be reached or refused the schema change; the message says which and why."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Python's sqlite3 would otherwise open a transaction only at the first INSERT/UPDATE, leaving the
    # reads before it outside the transaction: a balance checked there could change before the debit.
    # SQLAlchemy's documented recipe: no implicit transactions from the driver, an explicit BEGIN below.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA busy_timeout=30000"):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front (waiting up to the busy timeout), for a transaction that
    # reads and then writes on what it read: a redemption's balance check and debit.
    immediate = conn.get_execution_options().get(IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def upsert(conn: Connection, table: Any) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT, which knows ``ON CONFLICT`` (both databases the receiver runs on)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def make_engine(url: str, *, pool_size: int = 4) -> Engine:
    """An engine for ``url`` with the settings the receiver relies on (see the module docstring)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=2, pool_pre_ping=True)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the ledger schema to ``revision``; two workers starting together serialise (advisory lock)."""
    run_migrations(engine, MIGRATIONS, lock_id=7277350143, revision=revision)


def run_migrations(
    engine: Engine, script_location: Path, *, lock_id: int, revision: str = "head", label: str = ""
) -> None:
    """Alembic ``upgrade`` of ``script_location`` on ``engine``; on PostgreSQL one migrator at a time
    (``lock_id``: an advisory lock held until the transaction ends). DatabaseUnavailable names the URL."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import SQLAlchemyError

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({int(lock_id)})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(
            f"{label}{engine.url.render_as_string(hide_password=True)}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
