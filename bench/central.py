"""Central receiver benchmark (issue #6): ingested sales/s per worker into PostgreSQL, against a bulk insert.

Run from the repository root::

    .venv/bin/python -m bench.central [--quick] [--json PATH] [--profile]

Everything comes from ONE run against ONE fresh private PostgreSQL (``fsync``, ``full_page_writes`` and
``synchronous_commit`` on: the durability a chain runs with), because absolute rates on these shared
machines drift between runs; the ratio target compares figures taken minutes apart. Each end-to-end
phase gets a fresh Mosquitto (see ``measure_end_to_end`` for why).

The workload is generated once, before anything is timed: ``sales`` signed sale envelopes from ``stores``
registered nodes (bodies from the reference POS's basket generator, validated and shaped exactly as the
node's POS API shapes them; half carry a customer token, of those 60 % a member's card and 40 % a card
nobody has joined with, so the ledger, the card lookup and both kinds of account are exercised). Every
phase that runs our code gets its own database, migrated, with the nodes registered and the members'
sign-ups ingested beforehand (not timed).

Phases, in this order:

(base)  baseline, run first and again last (the better run counts, so a slow moment cannot flatter the
        ratio): psycopg 3 ``executemany`` of ``INSERT ... ON CONFLICT (id) DO NOTHING`` into a plain table
        (id, store, node, seq, ts, body jsonb), ``BATCH`` envelopes per transaction. It includes the JSON
        parse (payload bytes -> row fields, the body re-serialised for jsonb), because a receiver that
        stores the envelope cannot skip it; it has no signature check, no validation and no effects.
(a-in)  ours in-process: ``Ingestor.ingest`` called directly with batches of ``BATCH``, one thread. What the
        ingest transaction costs without MQTT (and without the member-figure pushes below).
(a)     ours end to end: one ``kiosk-central run`` process (shipped defaults) on the shared subscription;
        every envelope is published (QoS 1, one connection) while it consumes. Rate = sales committed
        between the first and the last poll that saw progress (node_progress, polled every 50 ms) /
        that time. THE TARGETS APPLY TO THIS FIGURE: >= 1,000 sales/s per worker, >= 0.3 x (base).
        After each commit the worker also pushes the customers' member figures to their tills
        (``cmd/member``, on its request thread); a ``mosquitto_sub`` counts them, and the CPU figures of
        the phase are taken once the last one is out, so they cover the whole work of a sale.
(b)     two ``kiosk-central run`` processes on the same shared subscription and database: total rate and
        per worker (total / 2; each worker's own count comes from its log).

After every phase the database is checked (sale events == sales rows == N, sale lines as generated,
ledger sum == sum of sales' points == the points the tills computed, member sales booked to the member,
no member moved above the base tier, no dead letters); a mismatch is printed as a CORRECTNESS FAILURE,
the phase's figures are shown as VOID and the exit code is 2. The exit code is 0 whatever the PASS/FAIL
verdicts (it is a measurement), 2 if a phase broke or a check failed. Members take the sales in turn, so
none reaches the next tier (whose sales earn 125 %) and the tills' points stay exactly what the ledger
must book.

Also recorded, for ``docs/capacity-plan.md``: CPU per sale of each process (worker, PostgreSQL, Mosquitto,
the benchmark itself), WAL bytes per sale, table sizes per row after the in-process phase, the worker's
mean batch size, and the CPU other processes used during the run (the machine is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import paho.mqtt
import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Engine, func, select

from bench.relay import BenchError, cpu_seconds, machine_busy_seconds
from cloud_sync.central.config import MqttSection
from cloud_sync.central.db import make_engine, migrate
from cloud_sync.central.ingest import Incoming, Ingestor
from cloud_sync.central.program import LoyaltySection
from cloud_sync.central.schema import dead_letters, events, ledger, members, sale_lines, sales
from cloud_sync.loyalty import points_for
from edge.pos.possim import make_basket
from edge.pos.sale import validate_sale
from tests.support.broker import Mosquitto, free_port, make_client, publish
from tests.support.central import ROOT, CentralProcess, FakeNode, signup_body, token
from tests.support.postgres import PostgresServer

_SHIPPED = MqttSection()
BATCH = _SHIPPED.batch_max  # the worker's transaction size as shipped (200); the baseline uses the same
PER_WORKER_TARGET = 1000.0  # sales/s per worker, end to end
RATIO_TARGET = 0.3  # ours (end to end, one worker) / baseline
POLL = 0.05  # seconds between progress polls in the end-to-end phases
PUBLISH_WINDOW = 200  # QoS 1 messages in flight from the publisher
OTHER_CPU_WARN = 10.0  # % of one core used by processes not ours, averaged over the run
PG_SETTINGS = {"shared_buffers": "128MB"}  # everything else PostgreSQL's default (fsync and friends on)

BASELINE_DDL = """
DROP TABLE IF EXISTS envelopes;
CREATE TABLE envelopes (
    id text PRIMARY KEY, store text NOT NULL, node text NOT NULL, seq bigint NOT NULL,
    ts timestamptz NOT NULL, body jsonb NOT NULL
)
"""
BASELINE_INSERT = (
    "INSERT INTO envelopes (id, store, node, seq, ts, body) VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (id) DO NOTHING"
)
#: Members start in the programme's base tier (100 %: what the tills' points assume); the workload keeps each
#: member's spend far below the next tier, and ``verify`` checks that none was upgraded.
BASE_TIER = LoyaltySection().tiers[0].name
NEXT_TIER_SPEND = LoyaltySection().tiers[1].min_spend
MEASURED_TABLES = ("events", "sales", "sale_lines", "ledger", "stamps", "node_progress", "cards", "members")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each phase ingests; ``--quick`` is a smoke run."""

    sales: int
    stores: int
    members: int
    walk_ins: int  # distinct cards seen at tills that never joined


FULL = Sizes(sales=20_000, stores=50, members=2_000, walk_ins=5_000)
QUICK = Sizes(sales=3_000, stores=50, members=300, walk_ins=750)


# --------------------------------------------------------------------------------------------------
# the workload


@dataclass
class Workload:
    """Signed envelopes and what the ledger must show once they are all ingested."""

    nodes: list[FakeNode]
    signups: list[Incoming]
    sales: list[Incoming]
    lines: int = 0
    points: int = 0
    customer_sales: int = 0
    member_sales: int = 0
    payload_bytes: int = 0

    @property
    def mean_payload(self) -> float:
        """Mean size of a sale envelope on the wire (bytes)."""
        return self.payload_bytes / len(self.sales)


def make_workload(sizes: Sizes, seed: int = 6) -> Workload:
    """Generate every envelope up front (signing costs ~50 us each; none of it is timed).

    Bodies go through the node's own sale validation (``validate_sale``) and are shaped as
    ``edge.pos.sales`` shapes them (14-digit GTINs, ``points`` only with a customer), so the central
    receiver sees what tills really send.
    """
    rng = random.Random(seed)
    nodes = [FakeNode(f"bench-s{i:04d}", "till-1") for i in range(sizes.stores)]
    members = [(token(0x1_000_000 + i), token(0x2_000_000 + i)) for i in range(sizes.members)]
    signups = [
        nodes[i % len(nodes)].incoming("signup", signup_body(member, card))
        for i, (member, card) in enumerate(members)
    ]
    work = Workload(nodes=nodes, signups=signups, sales=[])
    now = datetime.now(UTC)
    spend: dict[str, int] = {}
    for i in range(sizes.sales):
        sale = validate_sale(make_basket(rng), now=now)
        body: dict[str, Any] = {
            "receipt": f"RC-{i:08d}",
            "pos": "till-1",
            "lines": sale.event_lines(),
            "total": sale.total,
            "currency": sale.currency,
            "payment": sale.payment,
        }
        if sale.discount:
            body["discount"] = sale.discount
        if rng.random() < 0.5:
            if rng.random() < 0.6:
                # members in turn, so each one's 12-month spend stays far below the next tier (a random
                # choice lets a few members reach silver, and their later sales earn 125 %)
                card = members[work.member_sales % len(members)][1]
                spend[card] = spend.get(card, 0) + sale.total
                work.member_sales += 1
            else:
                card = token(0x3_000_000 + rng.randrange(sizes.walk_ins))
            points = points_for(sale.lines, sale.discount, None)  # no tiers in this chain's rules yet
            body["customer"] = {"source": "nfc", "token": card}
            body["points"] = points
            work.points += points
            work.customer_sales += 1
        message = nodes[i % len(nodes)].incoming("sale", body)
        work.sales.append(message)
        work.lines += len(body["lines"])
        work.payload_bytes += len(message.payload)
    top = max(spend.values(), default=0)
    if top >= NEXT_TIER_SPEND:
        raise BenchError(f"the workload gives a member {top / 100:.2f} of spend, enough for the next tier")
    return work


def chunks(items: Sequence[Incoming], size: int) -> Iterator[Sequence[Incoming]]:
    """``items`` in consecutive slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------------------------------
# measuring CPU and WAL


def pg_cpu_seconds(pg: PostgresServer) -> float:
    """CPU of the whole cluster so far: the postmaster with its reaped children, plus the live children.

    Backends come and go (a worker's connections end with it); the postmaster reaps them, so their CPU
    is in its cutime/cstime and nothing is lost between samples.
    """
    root = pg.pid
    if root is None:
        return 0.0
    fields = Path(f"/proc/{root}/stat").read_text().rpartition(")")[2].split()
    total = sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for pid in pg.pids():
        if pid != root:
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += cpu_seconds(pid)
    return total


def own_cpu_seconds() -> float:
    """CPU of this process (every thread) and of its reaped children (workers, broker once stopped)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench_cpu_seconds() -> float:
    """CPU of this process alone (the in-process ingest, the publisher, the poller)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def peak_rss_kb(pid: int) -> int:
    """VmHWM (the lifetime peak resident set) of a process, in kB, from /proc; 0 if unreadable."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def wal_lsn(pg: PostgresServer) -> int:
    """The cluster's current WAL position in bytes (cluster-wide: every database's writes)."""
    with pg.connect() as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Meter:
    """CPU of each process taking part, WAL written and wall time, over one phase.

    ``with Meter(pg) as meter:`` starts it; ``meter.stop(n)`` takes the figures (inside the block, before
    the processes measured go away).
    """

    pg: PostgresServer
    extra: dict[str, int] = field(default_factory=dict)  # name -> pid (workers, broker)
    _start: dict[str, float] = field(default_factory=dict)
    _wal: int = 0
    _began: float = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {
            "pg": pg_cpu_seconds(self.pg),
            "bench": bench_cpu_seconds(),
            "machine": machine_busy_seconds(),
        }
        for name, pid in self.extra.items():
            sample[name] = cpu_seconds(pid)
        return sample

    def __enter__(self) -> Meter:
        self._wal = wal_lsn(self.pg)
        self._start = self._sample()
        self._began = time.perf_counter()
        return self

    def stop(self, sales: int, busy_until: float | None = None) -> dict[str, Any]:
        """Figures since ``__enter__``: CPU seconds and microseconds per sale, WAL bytes per sale.

        ``busy_until`` (a ``perf_counter`` time) ends the wall time the CPU percentages are taken over,
        when the phase ends with a quiet wait that is not work.
        """
        now = time.perf_counter()
        wall = (busy_until or now) - self._began
        end = self._sample()
        wal = wal_lsn(self.pg) - self._wal
        cpu = {name: end[name] - self._start[name] for name in end}
        ours = sum(v for k, v in cpu.items() if k != "machine")
        return {
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "cpu_us_per_sale": {k: 1e6 * v / sales for k, v in cpu.items() if k != "machine"},
            "cpu_percent": {k: 100 * v / wall for k, v in cpu.items()},
            "other_cpu_percent": max(0.0, 100 * (cpu["machine"] - ours) / (now - self._began)),
            "wal_bytes": wal,
            "wal_bytes_per_sale": wal / sales,
        }

    def __exit__(self, *exc: object) -> None:
        return None


# --------------------------------------------------------------------------------------------------
# databases


def prepare_db(pg: PostgresServer, name: str, work: Workload) -> tuple[str, Engine]:
    """A fresh database for our code: migrated, nodes registered, the members' sign-ups ingested."""
    url = pg.create_database(name)
    engine = make_engine(url)
    migrate(engine)
    for node in work.nodes:
        node.register(engine)
    ingestor = Ingestor(engine, ROOT)
    for batch in chunks(work.signups, BATCH):
        outcomes = ingestor.ingest(batch)
        bad = [o for o in outcomes if o.status != "stored"]
        if bad:
            raise BenchError(f"seeding {name}: a sign-up was not stored: {bad[0]}")
    return url, engine


def verify(engine: Engine, work: Workload) -> tuple[dict[str, int], list[str]]:
    """What the database holds, and every way it differs from what was sent (empty: all correct).

    A phase with a difference keeps its figures but they are void: the report says so, loudly.
    """
    with engine.connect() as conn:

        def scalar(stmt: Any) -> int:
            return int(conn.execute(stmt).scalar_one())

        found = {
            "sale_events": scalar(select(func.count()).select_from(events).where(events.c.type == "sale")),
            "sales": scalar(select(func.count()).select_from(sales)),
            "sale_lines": scalar(select(func.count()).select_from(sale_lines)),
            "ledger_points": scalar(select(func.coalesce(func.sum(ledger.c.points), 0))),
            "sales_points": scalar(select(func.coalesce(func.sum(sales.c.points), 0))),
            "customer_sales": scalar(
                select(func.count()).select_from(sales).where(sales.c.customer_token.is_not(None))
            ),
            "member_sales": scalar(
                select(func.count()).select_from(sales).where(sales.c.account != sales.c.customer_token)
            ),
            "dead_letters": scalar(select(func.count()).select_from(dead_letters)),
            "members_above_base_tier": scalar(
                select(func.count()).select_from(members).where(members.c.tier != BASE_TIER)
            ),
        }
    expected = {
        "sale_events": len(work.sales),
        "sales": len(work.sales),
        "sale_lines": work.lines,
        "ledger_points": work.points,
        "sales_points": work.points,
        "customer_sales": work.customer_sales,
        "member_sales": work.member_sales,
        "dead_letters": 0,
        "members_above_base_tier": 0,
    }
    problems = [f"{k} {found[k]:,} != expected {v:,}" for k, v in expected.items() if found[k] != v]
    return found, problems


def table_sizes(pg: PostgresServer, database: str) -> dict[str, dict[str, int]]:
    """Rows and bytes (heap, TOAST, indexes: ``pg_total_relation_size``) of the ledger's main tables."""
    out: dict[str, dict[str, int]] = {}
    with pg.connect(database, autocommit=True) as conn:  # VACUUM refuses to run in a transaction
        conn.execute("VACUUM ANALYZE")  # settles the visibility map and the statistics, as in production
        for table in MEASURED_TABLES:
            row = conn.execute(
                f"SELECT count(*), pg_total_relation_size('{table}'), pg_relation_size('{table}'), "
                f"pg_indexes_size('{table}') FROM {table}"
            ).fetchone()
            assert row is not None
            out[table] = {
                "rows": int(row[0]),
                "total": int(row[1]),
                "heap": int(row[2]),
                "indexes": int(row[3]),
            }
    return out


# --------------------------------------------------------------------------------------------------
# (base) the bulk insert


def measure_baseline(pg: PostgresServer, payloads: list[bytes], label: str) -> dict[str, Any]:
    """psycopg ``executemany`` in ``BATCH``-sized transactions; the table is created afresh each run.

    Of three bulk forms tried on this machine (2026-11-27, 20,000 envelopes), ``executemany`` (psycopg 3
    sends it as one pipeline per batch) was the fastest: ~40,000/s, multi-row ``VALUES`` ~24,000/s,
    ``INSERT ... SELECT FROM unnest(arrays)`` ~13,000/s. The baseline is meant to be the best plain insert.
    """
    database = f"baseline_{label}"
    pg.create_database(database)
    with pg.connect(database) as conn:
        conn.execute(BASELINE_DDL)
        conn.commit()
        with Meter(pg) as meter:
            began = time.perf_counter()
            with conn.cursor() as cur:
                for start in range(0, len(payloads), BATCH):
                    rows = []
                    for payload in payloads[start : start + BATCH]:
                        doc = json.loads(payload)
                        rows.append(
                            (doc["id"], doc["store"], doc["node"], doc["seq"], doc["ts"], Jsonb(doc["body"]))
                        )
                    cur.executemany(BASELINE_INSERT, rows)
                    conn.commit()
            seconds = time.perf_counter() - began
            figures = meter.stop(len(payloads))
        row = conn.execute("SELECT count(*) FROM envelopes").fetchone()
        stored = int(row[0]) if row else 0
        size_row = conn.execute("SELECT pg_total_relation_size('envelopes')").fetchone()
    figures.update(
        problems=[f"{stored:,} rows != {len(payloads):,} envelopes"] if stored != len(payloads) else [],
        envelopes=len(payloads),
        seconds=seconds,
        rate=len(payloads) / seconds,
        stored=stored,
        table_bytes=int(size_row[0]) if size_row else 0,
    )
    return figures


# --------------------------------------------------------------------------------------------------
# (a-in) ours, in-process


def measure_in_process(pg: PostgresServer, work: Workload) -> dict[str, Any]:
    """``Ingestor.ingest`` over every sale, ``BATCH`` at a time, in this thread."""
    _url, engine = prepare_db(pg, "ours_in_process", work)
    try:
        ingestor = Ingestor(engine, ROOT)
        with Meter(pg) as meter:
            began = time.perf_counter()
            stored = 0
            for batch in chunks(work.sales, BATCH):
                stored += sum(1 for o in ingestor.ingest(batch) if o.status == "stored")
            seconds = time.perf_counter() - began
            figures = meter.stop(len(work.sales))
        figures.update(sales=len(work.sales), seconds=seconds, rate=len(work.sales) / seconds, stored=stored)
        figures["check"], figures["problems"] = verify(engine, work)
    finally:
        engine.dispose()
    figures["tables"] = table_sizes(pg, "ours_in_process")
    return figures


def profile_in_process(pg: PostgresServer, work: Workload, top: int = 25) -> str:
    """cProfile of the in-process ingest on a fresh database (not a figure: profiling slows it ~1.5x)."""
    _url, engine = prepare_db(pg, "ours_profiled", work)
    try:
        ingestor = Ingestor(engine, ROOT)
        profiler = cProfile.Profile()
        profiler.enable()
        for batch in chunks(work.sales, BATCH):
            ingestor.ingest(batch)
        profiler.disable()
    finally:
        engine.dispose()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# --------------------------------------------------------------------------------------------------
# (a) and (b) ours, end to end through the broker


class Publisher:
    """All sales over one MQTT v5 connection at QoS 1, in a background thread, as fast as PUBACKs allow.

    One connection stands in for the chain's many nodes: the broker's fan-out to the shared subscription is
    the same, and the publisher finishes well before the workers (it is not what is measured).
    """

    def __init__(self, url: str, messages: Sequence[Incoming]) -> None:
        self.url = url
        self.messages = messages
        self.seconds = 0.0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-publisher", daemon=True)

    def start(self) -> Publisher:
        """Begin publishing (returns at once)."""
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        """Wait for the last PUBACK; BenchError if publishing failed or did not finish."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise BenchError(f"the publisher did not finish within {timeout:.0f} s")
        if self.error is not None:
            raise BenchError(f"the publisher failed: {self.error!r}")

    def _run(self) -> None:
        try:
            client, host, port = make_client(self.url, client_id=f"bench-publisher-{os.getpid()}")
            client.max_inflight_messages_set(PUBLISH_WINDOW)
            client.max_queued_messages_set(0)
            connected = threading.Event()
            client.on_connect = lambda _c, _u, _f, rc, _p: connected.set() if not rc.is_failure else None
            client.connect(host, port, keepalive=60)
            client.loop_start()
            try:
                if not connected.wait(10):
                    raise BenchError("the publisher could not connect")
                began = time.perf_counter()
                infos = [client.publish(m.topic, m.payload, qos=1) for m in self.messages]
                deadline = time.monotonic() + 300
                for info in infos:
                    info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
                    if not info.is_published():
                        raise BenchError(f"message {info.mid} not acknowledged by the broker")
                self.seconds = time.perf_counter() - began
            finally:
                client.disconnect()
                client.loop_stop()
        except BaseException as exc:  # reported by join()
            self.error = exc


def scrape(port: int) -> dict[str, float]:
    """The worker's own counters from its Prometheus endpoint (batches committed, time in them, acks)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    wanted = ("kiosk_central_batches_total", "kiosk_central_batch_seconds_total", "kiosk_central_acks_total")
    out: dict[str, float] = {}
    for name in (*wanted, "kiosk_central_db_errors_total"):
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        out[name.removeprefix("kiosk_central_").removesuffix("_total")] = (
            float(match.group(1)) if match else 0.0
        )
    return out


class PushCounter:
    """``mosquitto_sub`` (C, its own process) on ``{root}/+/+/cmd/member``: the member figures the workers
    push to the tills after each commit, counted as they reach the broker's subscribers.

    Nodes subscribe to their own ``cmd/#``; one subscriber for all of them gives the broker the same
    outbound work. Without ``mosquitto_sub`` (Debian ``mosquitto-clients``) pushes are not counted.
    """

    PROBE_TOPIC = f"{ROOT}/bench-probe/probe/cmd/member"

    def __init__(self, broker: Mosquitto, path: Path) -> None:
        self.broker = broker
        self.path = path
        self.available = shutil.which("mosquitto_sub") is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def start(self, timeout: float = 5.0) -> PushCounter:
        """Subscribe, and wait until a probe published to a matching topic came through."""
        if not self.available:
            return self
        self._out = self.path.open("wb")
        self._proc = subprocess.Popen(
            [
                *("mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.broker.port), "-q", "1", "-F", "%t"),
                *("-t", f"{ROOT}/+/+/cmd/member"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            publish(self.broker.url, self.PROBE_TOPIC, b"probe")
            time.sleep(0.1)
            if self.PROBE_TOPIC.encode() in self.path.read_bytes():
                return self
        raise BenchError("mosquitto_sub on cmd/member never received its probe")

    def count(self) -> int | None:
        """Pushes received so far (probes excluded); None if not counted."""
        if not self.available:
            return None
        lines = self.path.read_bytes().split(b"\n")
        return sum(1 for line in lines if line and line != self.PROBE_TOPIC.encode())

    def settle(self, quiet: float = 0.5, timeout: float = 120.0) -> tuple[int | None, float]:
        """Wait until no push arrived for ``quiet`` seconds; returns (count, time of the last new one)."""
        last_count, last_change = self.count(), time.perf_counter()
        if last_count is None:
            return None, last_change
        deadline = time.monotonic() + timeout
        while time.perf_counter() - last_change < quiet and time.monotonic() < deadline:
            time.sleep(0.02)
            now_count = self.count()
            if now_count != last_count:
                last_count, last_change = now_count, time.perf_counter()
        return last_count, last_change

    def stop(self) -> None:
        """Terminate mosquitto_sub and close its file. Idempotent."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._out is not None:
            self._out.close()
            self._out = None


def committed_sales(conn: psycopg.Connection[Any], seeded: int) -> int:
    """Sales committed so far: node_progress counts every stored event per node (one row per store)."""
    row = conn.execute("SELECT coalesce(sum(events), 0) FROM node_progress").fetchone()
    return (int(row[0]) if row else 0) - seeded


def measure_end_to_end(
    pg: PostgresServer, workdir: Path, work: Workload, workers: int, label: str
) -> dict[str, Any]:
    """``workers`` real ``kiosk-central run`` processes drain what one publisher sends, on a fresh broker.

    A fresh Mosquitto per phase, because a worker's persistent session outlives the worker: Mosquitto keeps
    a departed worker in the shared group and queues its share of the messages for it (until the session
    expires, 24 h by default). This benchmark's first run found it: phase (b) on the broker of phase (a)
    saw only two thirds of the sales; the other third waited in phase (a)'s session.
    """
    database = f"ours_{label}"
    url, engine = prepare_db(pg, database, work)
    broker = Mosquitto(workdir / f"broker-{label}").start()
    procs: list[CentralProcess] = []
    ports: list[int] = []
    codes: list[int] = []
    try:
        for i in range(workers):
            ports.append(free_port())
            procs.append(
                CentralProcess(
                    workdir / f"{label}-{i + 1}",
                    url,
                    broker.url,
                    f"bench-{label}-{i + 1}",
                    METRICS__PORT=str(ports[-1]),
                ).start()
            )
        time.sleep(0.5)  # the SUBACK follows the logged "subscribing to" within milliseconds
        pids = {f"worker{i + 1}": p.proc.pid for i, p in enumerate(procs) if p.proc is not None}
        assert broker.pid is not None
        pids["broker"] = broker.pid
        total = len(work.sales)
        seeded = len(work.signups)
        samples: list[tuple[float, int]] = []
        pushes = PushCounter(broker, workdir / f"pushes-{label}.txt").start()
        with pg.connect(database, autocommit=True) as conn, Meter(pg, extra=pids) as meter:
            began = time.perf_counter()
            publisher = Publisher(broker.url, work.sales).start()
            deadline = time.monotonic() + max(120.0, total / 100)
            done = 0
            while done < total:
                done = committed_sales(conn, seeded)
                samples.append((time.perf_counter(), done))
                for proc in procs:
                    if proc.proc is not None and proc.proc.poll() is not None:
                        raise BenchError(f"{label}: a worker exited:\n{proc.log_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise BenchError(f"{label}: only {done:,} of {total:,} sales committed in time")
                if done < total:
                    time.sleep(POLL)
            finished = time.perf_counter()
            # the member figures go out after each commit, on the workers' request threads: their work
            # belongs to the sales too, so the CPU figures are taken once they are all out
            pushed, pushed_at = pushes.settle()
            figures = meter.stop(total, busy_until=max(finished, pushed_at))
            publisher.join(60)
        counters = [scrape(port) for port in ports]
        hwm_kb = [peak_rss_kb(pid) for name, pid in pids.items() if name.startswith("worker")]
        codes = [proc.stop() for proc in procs]
        figures["check"], figures["problems"] = verify(engine, work)
        version = re.search(r"mosquitto version (\S+) running", broker.log_text())
    finally:
        for proc in procs:
            proc.stop()  # idempotent; stops the workers if a step above failed
        engine.dispose()
        pushes.stop()
        broker.stop()
    first = next((t, n) for t, n in samples if n > 0)
    window = finished - first[0]
    rate = (total - first[1]) / window if window > 0 else float("nan")
    # what a worker sustains when it must also keep up with its pushes (they lag behind the commits)
    all_out = max(finished, pushed_at) if pushed is not None else finished
    sustained = (total - first[1]) / (all_out - first[0]) if all_out > first[0] else float("nan")
    stored = [proc.stored() for proc in procs]
    batches = sum(c["batches"] for c in counters)
    figures.update(
        sales=total,
        workers=workers,
        rate=rate,
        per_worker=rate / workers,
        sustained_rate=sustained,
        sustained_per_worker=sustained / workers,
        window_seconds=window,
        first_commit_after=first[0] - began,
        publish_to_last_commit_seconds=finished - began,
        publisher_seconds=publisher.seconds,
        publisher_rate=total / publisher.seconds if publisher.seconds else float("nan"),
        stored_per_worker=stored,
        exit_codes=codes,
        worker_counters=counters,
        mean_batch=total / batches if batches else float("nan"),
        in_batch_fraction=[c["batch_seconds"] / (finished - began) for c in counters],
        polls=len(samples),
        worker_peak_rss_mb=[kb / 1024 for kb in hwm_kb],
        pushes=pushed,
        pushes_done_after_last_commit=max(0.0, pushed_at - finished) if pushed is not None else None,
        mosquitto=version.group(1) if version else "?",
    )
    if sum(stored) != total:
        figures["problems"].append(f"the workers logged {stored} stored, not {total:,} in all")
    if any(code != 0 for code in codes):
        raise BenchError(f"({label}): worker exit codes {codes}")
    return figures


# --------------------------------------------------------------------------------------------------
# the run and the report


def load_average() -> str:
    """``uptime``'s three load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(sizes: Sizes, workdir: Path, profile: bool) -> dict[str, Any]:
    """Every phase against one PostgreSQL cluster; a broken phase is recorded, the others still run."""
    figures: dict[str, Any] = {"errors": {}, "correctness": {}, "load_before": load_average()}
    busy0, own0, began = machine_busy_seconds(), own_cpu_seconds(), time.perf_counter()
    print(f"  generating {sizes.sales:,} signed sales and {sizes.members:,} sign-ups ...", flush=True)
    work = make_workload(sizes)
    figures["workload"] = {
        "sales": len(work.sales),
        "stores": len(work.nodes),
        "members": sizes.members,
        "mean_payload_bytes": work.mean_payload,
        "mean_lines": work.lines / len(work.sales),
        "customer_share": work.customer_sales / len(work.sales),
        "member_sales": work.member_sales,
        "points": work.points,
    }
    payloads = [m.payload for m in work.sales]
    pg = PostgresServer(workdir / "pg", fsync=True, settings=PG_SETTINGS)
    pg_cpu_total = 0.0
    try:
        pg.start()
        with pg.connect() as conn:
            version = conn.execute("SHOW server_version").fetchone()
        figures["postgres"] = str(version[0]) if version else "?"

        def phase(name: str, action: Callable[[], dict[str, Any]]) -> None:
            print(f"  {name} ...", flush=True)
            started = time.perf_counter()
            try:
                figures[name] = action()
                if figures[name].get("problems"):
                    figures["correctness"][name] = "; ".join(figures[name]["problems"])
                    print(f"  {name}: CORRECTNESS FAILURE: {figures['correctness'][name]}", flush=True)
            except Exception as exc:
                figures["errors"][name] = f"{type(exc).__name__}: {exc}"
                print(f"  {name} FAILED: {exc}", flush=True)
            else:
                print(f"  {name} done in {time.perf_counter() - started:.1f} s", flush=True)

        phase("baseline_1", lambda: measure_baseline(pg, payloads, "1"))
        phase("in_process", lambda: measure_in_process(pg, work))
        phase("one_worker", lambda: measure_end_to_end(pg, workdir, work, 1, "one_worker"))
        phase("two_workers", lambda: measure_end_to_end(pg, workdir, work, 2, "two_workers"))
        phase("baseline_2", lambda: measure_baseline(pg, payloads, "2"))
        if profile:
            print("  profiling the in-process ingest (not a figure) ...", flush=True)
            figures["profile"] = profile_in_process(pg, work)
        pg_cpu_total = pg_cpu_seconds(pg)
    finally:
        pg.close()
    wall = time.perf_counter() - began
    other = (machine_busy_seconds() - busy0) - (own_cpu_seconds() - own0) - pg_cpu_total
    figures["other_cpu_percent"] = max(0.0, 100 * other / wall)
    figures["load_after"] = load_average()
    runs = [figures[k]["rate"] for k in ("baseline_1", "baseline_2") if k in figures]
    if runs:
        figures["baseline"] = {"rate": max(runs), "runs": runs}
    return figures


def _verdict(ok: bool | None, void: bool = False) -> str:
    if void:
        return "VOID"  # the database did not hold what was sent: no verdict on a wrong result
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def report(figures: dict[str, Any], quick: bool, wall: float) -> list[dict[str, Any]]:
    """Print the table and the detail lines; returns the judged rows (also written to --json)."""
    base = figures.get("baseline", {}).get("rate")
    inproc, one, two = (figures.get(k) for k in ("in_process", "one_worker", "two_workers"))
    rows: list[dict[str, Any]] = []

    def void(*phases: dict[str, Any] | None) -> bool:
        return any(p is not None and bool(p.get("problems")) for p in phases)

    def row(label: str, value: str, target: str, ok: bool | None, note: str = "", bad: bool = False) -> None:
        result = _verdict(ok, bad)
        rows.append({"figure": label, "value": value, "target": target, "result": result, "note": note})

    if base:
        row(
            f"(base) psycopg bulk INSERT ON CONFLICT DO NOTHING, {BATCH}/txn",
            f"{base:,.0f} env/s",
            "baseline",
            None,
            "runs "
            + " / ".join(f"{r:,.0f}" for r in figures["baseline"]["runs"])
            + " (first, last; best counts)",
            void(figures.get("baseline_1"), figures.get("baseline_2")),
        )
    if inproc:
        note = f"{inproc['rate'] / base:.2f} x (base)" if base else ""
        row(
            f"(a-in) ours in-process: Ingestor.ingest, {BATCH}/txn",
            f"{inproc['rate']:,.0f} sales/s",
            "-",
            None,
            note,
            void(inproc),
        )
    if one:
        row(
            "(a) ours end to end: 1 worker (kiosk-central run)",
            f"{one['per_worker']:,.0f} sales/s",
            f">= {PER_WORKER_TARGET:,.0f} /worker",
            one["per_worker"] >= PER_WORKER_TARGET,
            f"mean batch {one['mean_batch']:.0f}; "
            f"in a transaction {one['in_batch_fraction'][0]:.0%} of the time",
            void(one),
        )
        if base:
            ratio = one["per_worker"] / base
            row(
                "    ratio (a) / (base)",
                f"{ratio:.3f} x",
                f">= {RATIO_TARGET} x",
                ratio >= RATIO_TARGET,
                f"(base) x {RATIO_TARGET} = {RATIO_TARGET * base:,.0f} sales/s",
                void(one, figures.get("baseline_1"), figures.get("baseline_2")),
            )
    if two:
        row(
            "(b) ours end to end: 2 workers, total",
            f"{two['rate']:,.0f} sales/s",
            "-",
            None,
            f"{two['rate'] / one['rate']:.2f} x (a)" if one else "",
            void(two),
        )
        row(
            "    per worker",
            f"{two['per_worker']:,.0f} sales/s",
            f">= {PER_WORKER_TARGET:,.0f} /worker",
            two["per_worker"] >= PER_WORKER_TARGET,
            "stored " + " / ".join(f"{n:,}" for n in two["stored_per_worker"]) + " (from each worker's log)",
            void(two),
        )

    print()
    print(
        f"kiosk-central benchmark{' (--quick)' if quick else ''}: PostgreSQL {figures.get('postgres')} "
        f"(fsync on, shared_buffers {PG_SETTINGS['shared_buffers']}), "
        f"mosquitto {(one or two or {}).get('mosquitto', '?')}, "
        f"paho-mqtt {paho.mqtt.__version__}, psycopg {psycopg.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    header = {"figure": "figure", "value": "value", "target": "target", "result": "result", "note": "note"}
    widths = {k: max(len(r[k]) for r in [header, *rows]) for k in ("figure", "value", "target", "result")}

    def fmt(r: dict[str, Any]) -> str:
        return (
            f"{r['figure']:<{widths['figure']}}  {r['value']:>{widths['value']}}  "
            f"{r['target']:<{widths['target']}}  {r['result']:<{widths['result']}}  {r['note']}"
        )

    print(fmt(header))
    print("-" * len(fmt(header)))
    for r in rows:
        print(fmt(r))
    print()
    w = figures.get("workload")
    if w:
        print(
            f"workload: {w['sales']:,} sales from {w['stores']} stores, "
            f"{w['mean_payload_bytes']:.0f} B per envelope, {w['mean_lines']:.2f} lines per sale, "
            f"{w['customer_share']:.0%} with a customer "
            f"({w['member_sales']:,} of them members' cards; {w['members']:,} members signed up beforehand)"
        )
    print("targets apply to (a): end to end through the broker, one worker process")
    for name in ("one_worker", "two_workers"):
        f = figures.get(name)
        if f:
            print(
                f"{name}: {f['window_seconds']:.2f} s from the first to the last commit (first commit "
                f"{f['first_commit_after']:.2f} s after publishing began); the publisher finished after "
                f"{f['publisher_seconds']:.2f} s ({f['publisher_rate']:,.0f} msg/s); {f['polls']} polls; "
                f"worker peak RSS " + " / ".join(f"{mb:.0f}" for mb in f["worker_peak_rss_mb"]) + " MB"
            )
            if f.get("pushes") is not None:
                print(
                    f"  {f['pushes']:,} member figures pushed to the tills (cmd/member), the "
                    f"last {f['pushes_done_after_last_commit']:.2f} s after the last commit: commits and "
                    f"pushes together {f['sustained_per_worker']:,.0f} sales/s per worker"
                )
    print("CPU per sale (us; % of one core over the phase):")
    for name in ("baseline_1", "in_process", "one_worker", "two_workers", "baseline_2"):
        f = figures.get(name)
        if f:
            parts = ", ".join(
                f"{k} {v:.0f} ({f['cpu_percent'][k]:.0f} %)" for k, v in sorted(f["cpu_us_per_sale"].items())
            )
            print(
                f"  {name}: {parts}; other processes {f['other_cpu_percent']:.0f} %; "
                f"WAL {f['wal_bytes_per_sale']:,.0f} B per sale"
            )
    if inproc and "tables" in inproc:
        print("table sizes after (a-in), VACUUM ANALYZE (pg_total_relation_size: heap + TOAST + indexes):")
        for table, t in inproc["tables"].items():
            per_row = t["total"] / t["rows"] if t["rows"] else 0
            print(
                f"  {table:<14} {t['rows']:>8,} rows  {t['total'] / 1048576:8.2f} MiB  "
                f"({per_row:,.0f} B/row; heap {t['heap'] / 1048576:.2f}, "
                f"indexes {t['indexes'] / 1048576:.2f} MiB)"
            )
        n = inproc["sales"]
        core = sum(inproc["tables"][t]["total"] for t in ("events", "sales", "sale_lines", "ledger"))
        print(f"  events + sales + sale_lines + ledger: {core / n:,.0f} B per sale (sign-up rows included)")
    b1 = figures.get("baseline_1")
    if b1:
        print(f"baseline table: {b1['table_bytes'] / b1['envelopes']:,.0f} B per envelope")
    checks = [
        f"{k}: {v['check']['sales']:,} sales, ledger {v['check']['ledger_points']:,} points"
        for k, v in (("in_process", inproc), ("one_worker", one), ("two_workers", two))
        if v and "check" in v
    ]
    if checks:
        print(
            "verified (sale events == sales == N, lines, ledger == sales points == till points, member "
            "accounts, no dead letters): " + "; ".join(checks)
        )
    other = figures["other_cpu_percent"]
    print(
        f"load average before {figures['load_before']}, after {figures['load_after']}; other processes used "
        f"{other:.0f} % of one core on average"
        + ("  <- BUSY MACHINE: figures are skewed, run again" if other > OTHER_CPU_WARN else "")
    )
    for name, problem in figures["correctness"].items():
        print(f"CORRECTNESS FAILURE in {name}: {problem}")
    for name, error in figures["errors"].items():
        print(f"ERROR in {name}: {error}")
    if "profile" in figures:
        print("\nprofile of the in-process ingest (cumulative, top entries):")
        print(figures["profile"])
    print(f"total wall time {wall:.0f} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 whatever the verdicts, 2 if a phase broke or a correctness check failed."""
    parser = argparse.ArgumentParser(prog="python -m bench.central", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK.sales:,} sales instead of {FULL.sales:,}"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure as JSON")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile the in-process ingest on a fresh database"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    began = time.perf_counter()
    print(f"central benchmark{' --quick' if args.quick else ''}: {sizes}", flush=True)
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-central-") as tmp:
        figures = run(sizes, Path(tmp), args.profile)
    wall = time.perf_counter() - began
    rows = report(figures, args.quick, wall)
    if args.json:
        figures.update(rows=rows, sizes=asdict(sizes), quick=args.quick, wall_seconds=wall)
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    return 2 if figures["errors"] or figures["correctness"] else 0


if __name__ == "__main__":
    sys.exit(main())
