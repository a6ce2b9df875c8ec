"""A private PostgreSQL that the tests start themselves: ``initdb`` + ``pg_ctl`` on a free loopback port.

Typical use (no global state; the log lives in the test's ``tmp_path``)::

    with PostgresServer(tmp_path / "pg", fsync=False) as pg:
        engine = sqlalchemy.create_engine(pg.url())    # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
        receiver_url = pg.create_database("receiver")  # a fresh, empty database
        with pg.connect("receiver") as conn: ...        # plain psycopg 3

    @pytest.fixture(scope="session")
    def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
        yield from postgres_server(tmp_path_factory, fsync=False)

Facts this relies on (Debian bookworm, PostgreSQL 15):

* ``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root. As root (CI) they run as Debian's
  ``postgres`` system user (``subprocess`` ``user=``/``group=``), and the cluster belongs to that user.
* pytest's temporary directories live under ``/tmp/pytest-of-root`` (mode 0700), which ``postgres`` cannot
  enter. So as root the cluster (data + Unix socket) lives in a private ``/tmp/kiosk-edge-pg-*`` directory
  owned by ``postgres``, removed by ``close()``; the log file stays in ``workdir`` (the postmaster writes
  to a descriptor we opened). Not as root, everything is in ``workdir``.
* The postmaster's children each call ``setsid()``: they are in no process group of the postmaster, and a
  SIGKILLed postmaster leaves them running, still attached to the shared memory, so that the next start
  fails ("pre-existing shared memory block is still in use"). ``kill()`` therefore SIGKILLs the postmaster
  and then every process whose working directory is the data directory (all children inherit it).
* ``fsync=False`` turns off ``fsync`` and ``full_page_writes`` but keeps ``synchronous_commit`` on: a commit
  is still written to the WAL (in the OS cache) before it returns, so committed rows survive ``kill()`` --
  only an OS crash could lose them.
* Ready = ``pg_ctl start -w`` returned (``postmaster.pid`` says "ready") and a query on 127.0.0.1:PORT
  reports our ``data_directory`` (not some other server that holds the port).
* Measured here: first start (``initdb --no-sync`` + start) ~0.7-1 s; later starts ~0.12 s, also after
  ``kill()`` (crash recovery); fast stop ~0.12 s; ``kill()`` ~0.01 s.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from tests.support.broker import free_port

HOST = "127.0.0.1"
PG_ROOT = Path("/usr/lib/postgresql")
SYSTEM_USER = "postgres"  # Debian's system user that owns the cluster when the tests run as root
SUPERUSER = "postgres"  # the database superuser the tests connect as (trust auth, loopback only)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
INSTALL_HINT = "install Debian's postgresql package (scripts/setup.sh --test does)"
# sun_path holds 108 bytes with the NUL; PostgreSQL appends "/.s.PGSQL.<port>" (and ".lock")
_SOCKET_DIR_MAX = 107 - len("/.s.PGSQL.65535.lock")
_PRIVATE_PREFIX = "kiosk-edge-pg-"


class PostgresError(RuntimeError):
    """The cluster could not be created, started or stopped (the message carries the tail of its log)."""


class PostgresUnavailableError(PostgresError):
    """No PostgreSQL server binaries (or, as root, no ``postgres`` system user) on this machine."""


# --------------------------------------------------------------------------------------------------
# binaries, users and processes


def find_bindir(root: Path = PG_ROOT) -> Path:
    """The ``bin`` directory of the highest PostgreSQL version under ``root`` (``/usr/lib/postgresql``)."""
    found: list[tuple[tuple[int, ...], Path]] = []
    for bindir in root.glob("*/bin"):
        if not all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            continue
        try:
            version = tuple(int(part) for part in bindir.parent.name.split("."))
        except ValueError:
            continue
        found.append((version, bindir))
    if not found:
        raise PostgresUnavailableError(f"no PostgreSQL server binaries under {root}/*/bin/: {INSTALL_HINT}")
    return max(found)[1]


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresUnavailableError(
            f"running as root, but there is no {SYSTEM_USER!r} system user to run PostgreSQL as:"
            f" {INSTALL_HINT}"
        ) from None


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat ("R", "S", "Z", ...), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :][:1] or None


def _alive(pid: int) -> bool:
    return _proc_state(pid) not in (None, "Z", "X")  # a zombie has exited (and detached its shared memory)


def _pids_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory``: a postmaster and all of its children."""
    target = os.path.realpath(directory)
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if cwd == target and _alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _format_setting(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------------
# safety net: no cluster outlives the test run

_LIVE: set[PostgresServer] = set()
_LIVE_LOCK = threading.Lock()


def _close_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.close(timeout=5.0)


atexit.register(_close_all)


# --------------------------------------------------------------------------------------------------
# server


class PostgresServer:
    """One PostgreSQL cluster on 127.0.0.1:port, its log at ``workdir/postgres.log``.

    ``port`` defaults to a free port chosen at construction, so ``.port``/``.url()`` are known before
    ``start()``; ``restart()`` always reuses the port and the data. The cluster is created by the first
    ``start()``. ``settings`` are extra ``postgresql.conf`` lines (``{"work_mem": "8MB"}``), written before
    every start, so they may be changed between restarts. Auth is ``trust`` for the Unix socket and
    127.0.0.1 only; TCP listens on 127.0.0.1 only.

    ``stop()``/``kill()`` keep the data for ``restart()``; ``close()`` (also ``__exit__``, ``postgres_server``
    and an ``atexit`` hook) stops the server and removes the private directory used as root.
    """

    def __init__(
        self,
        workdir: Path | str,
        port: int | None = None,
        *,
        fsync: bool = True,
        user: str = SUPERUSER,
        max_connections: int = 50,
        shared_buffers: str = "32MB",
        settings: Mapping[str, str | int | float | bool] | None = None,
        start_timeout: float = START_TIMEOUT,
        bindir: Path | None = None,
    ) -> None:
        self.bindir = bindir if bindir is not None else find_bindir()
        self.workdir = Path(workdir).absolute()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._port_fixed = port is not None
        self.port: int = port if port is not None else free_port()
        self.fsync = fsync
        self.user = user
        self.max_connections = max_connections
        self.shared_buffers = shared_buffers
        self.settings: dict[str, str | int | float | bool] = dict(settings or {})
        self.start_timeout = start_timeout
        self.log_path = self.workdir / "postgres.log"
        self.starts = 0  # how many times the server was started successfully
        self._pid: int | None = None
        self._closed = False
        self._private_dirs: list[Path] = []
        self._owner: pwd.struct_passwd | None = _system_user() if os.geteuid() == 0 else None
        with _LIVE_LOCK:
            _LIVE.add(self)  # from here on, close() (or atexit) removes the private directories
        if self._owner is not None:
            self.cluster_dir = self._private_dir()
        else:
            self.cluster_dir = self.workdir
        self.data_dir = self.cluster_dir / "data"
        socket_dir = self.cluster_dir / "run"
        if len(str(socket_dir)) > _SOCKET_DIR_MAX:
            socket_dir = self._private_dir(Path("/tmp")) / "run"
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._chown(socket_dir)
        self.socket_dir = socket_dir

    # -- properties -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        return self._pid if self.is_running() else None

    @property
    def run_as(self) -> str:
        """The OS user the server processes run as."""
        return self._owner.pw_name if self._owner is not None else pwd.getpwuid(os.geteuid()).pw_name

    def is_running(self) -> bool:
        pid = self._pid
        return pid is not None and _alive(pid) and pid in _pids_in(self.data_dir)

    def pids(self) -> list[int]:
        """Every live process of this cluster (the postmaster and its children)."""
        return _pids_in(self.data_dir) if self.data_dir.is_dir() else []

    def url(self, database: str = "postgres", driver: str | None = "psycopg") -> str:
        """A SQLAlchemy URL: ``postgresql+psycopg://postgres@127.0.0.1:PORT/DATABASE``."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{quote(self.user, safe='')}@{HOST}:{self.port}/{quote(database, safe='')}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string for psycopg: ``host=127.0.0.1 port=PORT user=postgres dbname=DB``."""
        return make_conninfo(host=HOST, port=self.port, user=self.user, dbname=database)

    def connect(self, database: str = "postgres", **kwargs: Any) -> psycopg.Connection[TupleRow]:
        """A psycopg connection (use it as a context manager: it is closed on exit)."""
        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(self.dsn(database), **kwargs)

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` and return its SQLAlchemy URL."""
        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """Create the cluster if needed, start it and wait until it accepts connections.

        Raises PostgresError with the tail of the log if it does not within ``start_timeout`` seconds;
        nothing of a failed start is left running.
        """
        if self._closed:
            raise PostgresError(f"this PostgresServer ({self.workdir}) is closed")
        if self.is_running():
            raise PostgresError(f"postgres already running on {HOST}:{self.port} (pid {self._pid})")
        self._kill_cluster()  # children of a postmaster that died on its own would block the start
        self._remove_stale_locks()
        first_try = time.monotonic()
        deadline = first_try + self.start_timeout
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(deadline)
        while True:
            offset = self._log_size()
            failure = self._start_once(deadline)
            if failure is None:
                self.starts += 1
                return self
            self._kill_cluster()
            self._pid = None
            in_use = "address already in use" in self._log_since(offset).lower()
            if in_use and not self._port_fixed and self.starts == 0 and time.monotonic() < deadline:
                self.port = free_port()  # lost a race for the port we picked: pick another
                continue
            if in_use and self.starts > 0 and time.monotonic() < min(deadline, first_try + 2.0):
                time.sleep(0.1)  # restart on the same port: give a lingering socket a moment
                continue
            raise PostgresError(
                f"postgres did not start on {HOST}:{self.port} (data {self.data_dir}): {failure}\n"
                + self.log_tail()
            )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Fast shutdown (``pg_ctl stop -m fast -w``: open sessions are ended, a checkpoint is written).

        Idempotent. A server that does not stop within ``timeout`` is killed, then PostgresError is raised.
        """
        if not self.is_running():
            self._kill_cluster()
            self._pid = None
            return
        cmd = [self._bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-s"]
        cmd += ["-t", str(max(1, math.ceil(timeout)))]
        with self._open_log(f"pg_ctl stop -m fast (pid {self._pid})") as log:
            try:
                code: int | None = self._run(cmd, log, timeout + 5.0).returncode
            except subprocess.TimeoutExpired:
                code = None
        stuck = code != 0 or self.is_running()
        self._kill_cluster()
        self._pid = None
        if stuck:
            raise PostgresError(
                f"postgres on {HOST}:{self.port} did not stop within {timeout} s (pg_ctl exit {code});"
                f" killed it\n{self.log_tail()}"
            )

    def kill(self) -> None:
        """A crash: SIGKILL the postmaster, then its children; waits until all are gone. Idempotent.

        Committed transactions survive (the next start runs crash recovery); sessions are cut off.
        """
        self._kill_cluster()
        self._pid = None

    def restart(self, *, kill: bool = False) -> PostgresServer:
        """Stop (or kill) the server if it runs, then start it again: same port, same data."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server and remove the private directories (as root: the cluster itself). Idempotent."""
        try:
            if not self._closed:
                self.stop(timeout)
        finally:
            self._closed = True
            self._kill_cluster()
            self._drop_shared_memory()
            for directory in self._private_dirs:
                shutil.rmtree(directory, ignore_errors=True)
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def __enter__(self) -> PostgresServer:
        if not self.is_running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of ``postgres.log`` (PostgreSQL's own log, with initdb's and pg_ctl's output)."""
        text = self.log_text()
        if not text.strip():
            return f"--- {self.log_path} is empty ---"
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- internals -------------------------------------------------------------------------------

    def config_text(self) -> str:
        """``kiosk_test.conf``, included from ``postgresql.conf``; rewritten before every start."""
        settings: dict[str, str | int | float | bool] = {
            "listen_addresses": HOST,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "unix_socket_permissions": "0700",
            "max_connections": self.max_connections,
            "shared_buffers": self.shared_buffers,
            "fsync": self.fsync,
            "full_page_writes": self.fsync,
            "synchronous_commit": True,
            "logging_collector": False,
            "log_destination": "stderr",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "log_timezone": "UTC",
            "timezone": "UTC",
            "lc_messages": "C",
        }
        settings.update(self.settings)
        lines = ["# written by tests/support/postgres.py before every start"]
        lines += [f"{name} = {_format_setting(value)}" for name, value in settings.items()]
        return "\n".join(lines) + "\n"

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def _private_dir(self, parent: Path | None = None) -> Path:
        path = Path(tempfile.mkdtemp(prefix=_PRIVATE_PREFIX, dir=parent))
        self._private_dirs.append(path)
        self._chown(path)
        return path

    def _chown(self, path: Path) -> None:
        if self._owner is not None:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        self._chown(path)

    def _run(self, cmd: list[str], log: IO[bytes], timeout: float) -> subprocess.CompletedProcess[bytes]:
        """Run a PostgreSQL program (as ``postgres`` when we are root), its output appended to the log."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        owner: dict[str, Any] = {}
        if self._owner is not None:
            env.update(HOME=self._owner.pw_dir, USER=self._owner.pw_name, LOGNAME=self._owner.pw_name)
            owner = {
                "user": self._owner.pw_uid,
                "group": self._owner.pw_gid,
                "extra_groups": os.getgrouplist(self._owner.pw_name, self._owner.pw_gid),
            }
        return subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.cluster_dir,
            env=env,
            timeout=timeout,
            check=False,
            **owner,
        )

    @contextlib.contextmanager
    def _open_log(self, what: str) -> Iterator[IO[bytes]]:
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            log.write(f"--- {stamp} UTC tests/support/postgres.py: {what} ---\n".encode())
            log.flush()
            yield log

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _initdb(self, deadline: float) -> None:
        cmd = [self._bin("initdb"), "-D", str(self.data_dir), "-U", self.user, "--auth=trust"]
        cmd += ["--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"]
        with self._open_log(f"initdb {self.data_dir}") as log:
            try:
                code = self._run(cmd, log, max(1.0, deadline - time.monotonic())).returncode
            except subprocess.TimeoutExpired:
                raise PostgresError(f"initdb {self.data_dir} timed out\n{self.log_tail()}") from None
        if code != 0:
            raise PostgresError(f"initdb {self.data_dir} failed (exit {code})\n{self.log_tail()}")
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as f:
            f.write("\n# tests/support/postgres.py\ninclude 'kiosk_test.conf'\n")
        self._write_owned(
            self.data_dir / "pg_hba.conf",
            "# written by tests/support/postgres.py: trust, Unix socket and 127.0.0.1 only\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            "local replication all trust\n"
            "host replication all 127.0.0.1/32 trust\n",
        )

    def _start_once(self, deadline: float) -> str | None:
        """One ``pg_ctl start -w`` plus a query; returns why it failed, or None when the server is ready."""
        self._write_owned(self.data_dir / "kiosk_test.conf", self.config_text())
        remaining = deadline - time.monotonic()
        cmd = [self._bin("pg_ctl"), "start", "-D", str(self.data_dir), "-w", "-s"]
        cmd += ["-t", str(max(1, math.ceil(remaining)))]
        with self._open_log(f"pg_ctl start on {HOST}:{self.port}") as log:
            try:
                code = self._run(cmd, log, max(1.0, remaining) + 5.0).returncode
            except subprocess.TimeoutExpired:
                return "pg_ctl start did not return"
        if code != 0:
            return f"pg_ctl start failed (exit {code})"
        try:
            self._pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError) as e:
            return f"no postmaster.pid after pg_ctl start: {e}"
        return self._wait_connectable(deadline)

    def _wait_connectable(self, deadline: float) -> str | None:
        expected = os.path.realpath(self.data_dir)
        delay = 0.01
        while True:
            if not self.is_running():
                return "the postmaster exited"
            try:
                with self.connect(connect_timeout=2) as conn:
                    row = conn.execute("SELECT current_setting('data_directory')").fetchone()
            except psycopg.OperationalError as e:
                last = f"no connection to {HOST}:{self.port}: {str(e).strip()}"
            else:
                if row is not None and os.path.realpath(row[0]) == expected:
                    return None
                return f"{HOST}:{self.port} is answered by another server (data directory {row})"
            if time.monotonic() >= deadline:
                return f"{last} (after {self.start_timeout} s)"
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _remove_stale_locks(self) -> None:
        """Remove lock files whose postmaster is dead but not yet reaped.

        A killed postmaster is an orphan (pg_ctl has exited); until PID 1 reaps it -- 1-2 s here -- it is a
        zombie, and PostgreSQL takes a lock file naming a PID that still exists for a running server
        ("lock file "postmaster.pid" already exists"). PostgreSQL does the same once the zombie is gone.
        """
        for lock in [self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")]:
            try:
                pid = int(lock.read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                continue
            if not _alive(pid):
                lock.unlink(missing_ok=True)

    def _drop_shared_memory(self) -> None:
        """Remove the System V segment a killed postmaster leaves behind (the next start would reuse it).

        ``postmaster.pid`` line 7 holds its key and id; it is removed only if it still has that key and
        nobody is attached.
        """
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid, (key, shmid) = int(lines[0]), lines[6].split()
            segments = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
        except (OSError, ValueError, IndexError):
            return
        ipcrm = shutil.which("ipcrm", path="/usr/bin:/bin")
        if _alive(pid) or ipcrm is None:
            return
        for segment in segments:
            fields = segment.split()  # key shmid perms size cpid lpid nattch ...
            if fields[1] == shmid and int(fields[0]) == int(key) and fields[6] == "0":
                subprocess.run([ipcrm, "-m", shmid], capture_output=True, check=False)

    def _kill_cluster(self) -> None:
        """SIGKILL the postmaster, then every process of the cluster, and wait until all are gone."""
        pid = self._pid
        if pid is not None and _alive(pid) and pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # first: a dead postmaster forks no new children
        deadline = time.monotonic() + 10.0
        while pids := self.pids():
            for child in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            if time.monotonic() >= deadline:
                raise PostgresError(f"processes of {self.data_dir} survive SIGKILL: {pids}")
            time.sleep(0.01)


def postgres_server(
    where: Path | str | pytest.TempPathFactory, **kwargs: Any
) -> Generator[PostgresServer, None, None]:
    """For a fixture: yield a started PostgresServer, closed afterwards even if the test (or start) fails.

    ``where`` is a directory, or pytest's ``tmp_path_factory`` (then a fresh ``postgres*`` directory)::

        @pytest.fixture(scope="session")
        def postgres(tmp_path_factory):
            yield from postgres_server(tmp_path_factory, fsync=False)
    """
    workdir = Path(where) if isinstance(where, str | os.PathLike) else where.mktemp("postgres")
    server = PostgresServer(workdir, **kwargs)
    try:
        server.start()
        yield server
    finally:
        server.close()
