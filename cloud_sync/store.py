"""The node's SQLite database: durability pragmas on every connection, schema managed by Alembic.

The schema is defined with SQLAlchemy (``cloud_sync.schema``) and migrated by Alembic, but the running node
talks to SQLite through the DB-API: SQLAlchemy Core costs ~80 us per statement on the hot path (more than the
rows themselves) and SQLAlchemy plus Alembic add ~24 MB to the node's memory. So the node runs a migration,
when the database is not at the newest revision (first start, after an upgrade), in a short-lived child
process (``python -m cloud_sync.store PATH``): it never imports either, and never carries their memory.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from cloud_sync.errors import CloudSyncError

MIGRATIONS = Path(__file__).with_name("migrations")
#: The newest Alembic revision; a test checks it against the migration scripts.
HEAD_REVISION = "0002"

_PRAGMAS = (
    # WAL lets the relay and `kiosk-edge outbox` read while the writer commits; FULL makes each commit
    # survive power loss, which is the whole point of the outbox.
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
    # The node appends at one end and deletes at the other: a small page cache per connection is
    # enough, and three connections at SQLite's 2 MiB default would be a tenth of the node's memory.
    "PRAGMA cache_size=-512",
)


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the durability pragmas; the caller owns and closes it."""
    conn = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    return conn


def schema_revision(path: Path) -> str | None:
    """The Alembic revision stored in the database, or None when there is none (yet)."""
    if not path.exists():
        return None
    conn = sqlite3.connect(path, timeout=10.0)
    try:
        if not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'"
        ).fetchone():
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return None if row is None else str(row[0])
    finally:
        conn.close()


def ensure_schema(path: Path, *, isolated: bool = False) -> bool:
    """Create or upgrade the schema if needed; returns True when a migration ran.

    ``isolated`` runs the migration in a child process (the long-running node: it must not keep
    SQLAlchemy's and Alembic's memory for the rest of its life); otherwise in this process, which is
    about a second faster (tests, tools, the central receiver).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if schema_revision(path) == HEAD_REVISION:
        return False
    if isolated:
        migrate_in_child(path)
    else:
        upgrade(path)
    return True


class MigrationFailed(CloudSyncError):  # noqa: N818 - reads as the outcome
    """The schema could not be brought to the newest revision; the message has the child's reason."""


def migrate_in_child(path: Path, timeout: float = 120.0) -> None:
    """``upgrade(path)`` in a child process, so the caller never loads SQLAlchemy and Alembic."""
    try:
        proc = subprocess.run(  # noqa: S603 - our own interpreter and module, a path argument
            [sys.executable, "-m", "cloud_sync.store", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MigrationFailed(f"migrating {path} failed: {exc}") from exc
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise MigrationFailed(f"migrating {path} failed: {lines[-1] if lines else f'exit {proc.returncode}'}")


def sqlite_url(path: Path) -> str:
    """SQLAlchemy URL of a SQLite file."""
    return f"sqlite+pysqlite:///{path}"


def upgrade(path: Path, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` (idempotent)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, event

    engine = create_engine(sqlite_url(path))
    event.listen(engine, "connect", lambda dbapi_conn, _rec: [dbapi_conn.execute(p) for p in _PRAGMAS])
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


if __name__ == "__main__":
    upgrade(Path(sys.argv[1]))
