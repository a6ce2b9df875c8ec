"""Proves tests/support/postgres.py: a private PostgreSQL that the tests start (as ``postgres`` when root),
on its own loopback port, that survives a crash with its committed data and never outlives the tests."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy

from tests.support.postgres import (
    INSTALL_HINT,
    PostgresError,
    PostgresServer,
    PostgresUnavailableError,
    find_bindir,
    postgres_server,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    yield from postgres_server(tmp_path_factory, fsync=False)


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def _alive_pid(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited; PID 1 reaps it when it gets round to it


def _shm_ids() -> set[str]:
    return {line.split()[1] for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]}


def _listen_on(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_connect_create_insert_select(pg: PostgresServer) -> None:
    assert pg.is_running() and pg.starts == 1
    assert pg.url() == f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/postgres"
    assert pg.url("x y", driver=None) == f"postgresql://postgres@127.0.0.1:{pg.port}/x%20y"
    assert pg.dsn("db1") == f"host=127.0.0.1 port={pg.port} user=postgres dbname=db1"
    with psycopg.connect(pg.dsn()) as conn:
        conn.execute("CREATE TABLE events (id serial PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO events (body) VALUES (%s), (%s)", ("één", "二"))
        conn.commit()
        assert conn.execute("SELECT body FROM events ORDER BY id").fetchall() == [("één",), ("二",)]
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (["listen_addresses", "max_connections", "fsync", "synchronous_commit", "server_encoding"],),
            ).fetchall()
        )
        assert settings == {
            "listen_addresses": "127.0.0.1",
            "max_connections": "50",
            "fsync": "off",
            "synchronous_commit": "on",
            "server_encoding": "UTF8",
        }
        assert conn.execute("SHOW shared_buffers").fetchone() == ("32MB",)
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (
            True,
        )
    engine = sqlalchemy.create_engine(pg.url())
    try:
        with engine.connect() as sa:
            assert sa.execute(sqlalchemy.text("SELECT count(*) FROM events")).scalar_one() == 2
    finally:
        engine.dispose()


def test_runs_as_the_postgres_user_when_root(pg: PostgresServer) -> None:
    pid = pg.pid
    assert pid is not None and pid in pg.pids() and len(pg.pids()) > 1  # postmaster + its children
    if os.geteuid() == 0:
        postgres_uid = pwd.getpwnam("postgres").pw_uid
        assert pg.run_as == "postgres"
        assert {_uid_of(p) for p in pg.pids()} == {postgres_uid}
        assert pg.data_dir.stat().st_uid == postgres_uid
        assert pg.log_path.parent == pg.workdir  # the log stays in the test's directory
    else:
        assert {_uid_of(p) for p in pg.pids()} == {os.geteuid()}
        assert pg.data_dir.parent == pg.workdir


def test_create_database_is_isolated(pg: PostgresServer) -> None:
    url_a = pg.create_database("receiver_a")
    url_b = pg.create_database("receiver_b")
    assert url_a == f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/receiver_a"
    assert url_b.endswith("/receiver_b")
    with pg.connect("receiver_a") as conn:
        conn.execute("CREATE TABLE only_in_a (x int)")
        conn.execute("INSERT INTO only_in_a VALUES (1)")
        conn.commit()
    with pg.connect("receiver_b") as conn:
        assert conn.execute("SELECT to_regclass('only_in_a')").fetchone() == (None,)
    engine = sqlalchemy.create_engine(url_a)
    try:
        with engine.connect() as sa:
            assert sa.execute(sqlalchemy.text("SELECT x FROM only_in_a")).scalar_one() == 1
    finally:
        engine.dispose()
    with pytest.raises(psycopg.errors.DuplicateDatabase):
        pg.create_database("receiver_a")


def test_kill_then_restart_keeps_committed_data_and_port(tmp_path: Path) -> None:
    with PostgresServer(tmp_path / "pg", fsync=True) as server:
        port, pid = server.port, server.pid
        with server.connect() as conn:
            conn.execute("CREATE TABLE receipts (n int PRIMARY KEY)")
            conn.execute("INSERT INTO receipts SELECT generate_series(1, 1000)")
            conn.commit()
        with server.connect() as idle:
            started = time.monotonic()
            server.kill()
            killed_in = time.monotonic() - started
            assert (server.is_running(), server.pids(), server.pid) == (False, [], None)
            with pytest.raises(psycopg.OperationalError):  # the crash cut the session off
                idle.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            server.connect(connect_timeout=2).close()
        server.kill()  # idempotent, as is stop() on a dead server
        server.stop()
        started = time.monotonic()
        server.restart()
        restarted_in = time.monotonic() - started
        assert server.port == port and server.pid not in (None, pid) and server.starts == 2
        assert "was interrupted" in server.log_text()  # crash recovery ran
        with server.connect() as conn:
            assert conn.execute("SELECT count(*), sum(n) FROM receipts").fetchone() == (1000, 500500)
        # a clean stop/start cycle keeps the data too
        server.restart()
        assert server.port == port and server.starts == 3
        with server.connect() as conn:
            assert conn.execute("SELECT count(*) FROM receipts").fetchone() == (1000,)
    assert killed_in < 5 and restarted_in < 10
    assert not server.is_running() and server.pids() == []


def test_second_server_concurrently_gets_another_port(pg: PostgresServer, tmp_path: Path) -> None:
    with PostgresServer(tmp_path / "other", fsync=False) as other:
        assert other.port != pg.port and other.data_dir != pg.data_dir
        assert pg.is_running() and other.is_running()
        with other.connect() as conn:
            assert conn.execute("SELECT to_regclass('events')").fetchone() == (None,)
        with pg.connect() as conn:
            assert conn.execute("SELECT to_regclass('events')").fetchone() == ("events",)
    assert pg.is_running()


def test_start_failure_on_a_busy_port_names_it_with_the_log_tail(tmp_path: Path) -> None:
    with _listen_on(0) as busy:
        port = busy.getsockname()[1]
        server = PostgresServer(tmp_path / "pg", port=port, fsync=False)
        try:
            with pytest.raises(PostgresError) as failure:
                server.start()
            message = str(failure.value)
            assert f"did not start on 127.0.0.1:{port}" in message
            assert f"--- last lines of {server.log_path} ---" in message
            assert "Address already in use" in message
            assert not server.is_running() and server.pids() == []
        finally:
            server.close()


def test_a_picked_port_taken_before_start_is_replaced(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "pg", fsync=False)
    picked = server.port
    try:
        with _listen_on(picked):
            server.start()
            assert server.port != picked and server.is_running()
    finally:
        server.close()


def test_bogus_setting_fails_readably_and_a_fixed_one_starts(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "pg", fsync=False, settings={"shared_buffers": "plenty"})
    try:
        with pytest.raises(PostgresError) as failure:
            server.start()
        assert 'invalid value for parameter "shared_buffers": "plenty"' in str(failure.value)
        assert not server.is_running() and server.pids() == []
        server.settings["shared_buffers"] = "16MB"  # rewritten before every start
        server.start()
        with server.connect() as conn:
            assert conn.execute("SHOW shared_buffers").fetchone() == ("16MB",)
    finally:
        server.close()


def test_close_and_the_fixture_helper_leave_nothing_behind(tmp_path: Path) -> None:
    gen = postgres_server(tmp_path / "helper", fsync=False)
    server = next(gen)
    pids = server.pids()
    assert server.is_running() and pids
    shmid = (server.data_dir / "postmaster.pid").read_text().splitlines()[6].split()[1]
    assert shmid in _shm_ids()
    server.kill()  # a test that crashed its server: teardown still cleans up, its shared memory too
    with pytest.raises(RuntimeError, match="the test failed"):
        gen.throw(RuntimeError("the test failed"))
    assert not server.is_running() and server.pids() == []
    assert not [pid for pid in pids if _alive_pid(pid)]
    assert shmid not in _shm_ids()
    if os.geteuid() == 0:
        assert not server.cluster_dir.exists()  # the private directory went with it
    assert server.log_path.exists()  # the log stays for a post-mortem
    with pytest.raises(PostgresError, match="closed"):
        server.start()
    server.close()  # idempotent


def test_atexit_stops_a_server_the_test_forgot(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from tests.support.postgres import PostgresServer
        server = PostgresServer({str(tmp_path / "forgotten")!r}, fsync=False).start()
        print(" ".join(map(str, server.pids())), server.cluster_dir, flush=True)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    pids, cluster_dir = [int(p) for p in out[:-1]], Path(out[-1])
    assert pids
    assert not [pid for pid in pids if _alive_pid(pid)]
    if os.geteuid() == 0:
        assert not cluster_dir.exists()


def test_find_bindir_picks_the_highest_version_or_says_what_to_install(tmp_path: Path) -> None:
    for version, complete in (("9.6", True), ("15", True), ("16", True), ("17", False), ("devel", True)):
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        for name in ("initdb", "pg_ctl", "postgres") if complete else ("pg_ctl",):
            (bindir / name).touch()
    assert find_bindir(tmp_path) == tmp_path / "16" / "bin"
    with pytest.raises(PostgresUnavailableError) as failure:
        find_bindir(tmp_path / "nothing")
    assert INSTALL_HINT in str(failure.value)
    assert "install Debian's postgresql package (scripts/setup.sh --test does)" in str(failure.value)
    assert find_bindir().parent.parent == Path("/usr/lib/postgresql")
