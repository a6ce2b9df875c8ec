"""Fixtures shared across test modules: the private PostgreSQL (one per session, a database per test)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cloud_sync.central.db import make_engine, migrate
from tests.support.postgres import PostgresServer, postgres_server

_DB_NAMES = itertools.count(1)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A private PostgreSQL for the whole session (fsync off for speed: commits still reach the WAL)."""
    yield from postgres_server(tmp_path_factory, fsync=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty central database: a SQLite file, or a fresh database on the private PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"central_{next(_DB_NAMES)}")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """The central ledger database of ``db_url``, migrated."""
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()
