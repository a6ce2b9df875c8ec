"""``kiosk-central run`` against a real Mosquitto: manual acks after commit, crashes, two workers, faults."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from cloud_sync.central.db import make_engine, migrate
from cloud_sync.central.ingest import balance
from cloud_sync.central.schema import events, sales
from cloud_sync.central.stats import collect
from tests.support.broker import Mosquitto, publish_many
from tests.support.central import KIOSK_CENTRAL, CentralProcess, FakeNode, base_env, sale_body, token
from tests.support.node import NodeProcess
from tests.support.postgres import PostgresServer


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "broker").start()
    try:
        yield server
    finally:
        server.stop()


def events_in(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def sales_of(node: FakeNode, first: int, count: int, customer: str) -> list[tuple[str, bytes, bool]]:
    return [
        (node.topic("sale"), node.seal("sale", sale_body(f"R-{i:06d}", customer=customer)).payload, False)
        for i in range(first, first + count)
    ]


def test_events_published_twice_are_ingested_once_and_sigterm_exits_cleanly(
    tmp_path: Path, broker: Mosquitto, db_url: str, engine: Engine
) -> None:
    node = FakeNode(engine=engine)
    worker = CentralProcess(tmp_path / "central", db_url, broker.url, "central-a").start()
    try:
        batch = sales_of(node, 0, 200, token(1))
        publish_many(broker.url, batch + batch[:50])  # a node's retry after a lost PUBACK
        publish_many(broker.url, [(node.topic("sale"), b"not json at all", False)])
        wait_until(lambda: events_in(engine) == 200 and collect(engine).dead_letters, 20, "200 events")
        wait_until(lambda: sum(collect(engine).duplicates.values()) == 50, 10, "50 duplicates absorbed")
    finally:
        started = time.monotonic()
        code = worker.stop()
    assert code == 0
    assert time.monotonic() - started < 5
    assert balance(engine, token(1)) == 200 * 5
    assert collect(engine).dead_letters == {"malformed": 1}
    assert "Traceback" not in worker.log_text()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_worker_stopped_mid_stream_loses_nothing_and_doubles_nothing(
    tmp_path: Path, broker: Mosquitto, db_url: str, engine: Engine, how: str
) -> None:
    node = FakeNode(engine=engine)
    # small batches, so the kill lands between commits with deliveries in flight
    worker = CentralProcess(
        tmp_path / "central", db_url, broker.url, "central-k", MQTT__BATCH_MAX="20", MQTT__BATCH_WAIT_MS="5"
    ).start()
    total = 3000
    publish_many(broker.url, sales_of(node, 0, total, token(2)), timeout=30)
    wait_until(lambda: events_in(engine) > 100, 20, "the first batches")
    if how == "SIGKILL":
        worker.kill()
    else:  # graceful: the batch in its transaction commits and is acknowledged, nothing else is
        assert worker.stop() == 0
    at_kill = events_in(engine)
    assert at_kill < total, "the kill came too late to test anything"
    publish_many(broker.url, sales_of(node, total, 500, token(2)))  # queued in its session while it is down
    worker.start()
    try:
        wait_until(lambda: events_in(engine) == total + 500, 60, "every event after the restart")
        time.sleep(0.5)  # nothing more must arrive
    finally:
        assert worker.stop() == 0
    assert events_in(engine) == total + 500
    assert balance(engine, token(2)) == (total + 500) * 5
    with engine.connect() as conn:
        receipts = conn.execute(select(func.count(func.distinct(sales.c.receipt)))).scalar_one()
    assert receipts == total + 500


def test_two_workers_share_the_subscription_and_each_event_counts_once(
    tmp_path: Path, broker: Mosquitto, db_url: str, engine: Engine
) -> None:
    nodes = [FakeNode(f"store-{i}", "till-1", engine=engine) for i in range(4)]
    workers = [
        CentralProcess(tmp_path / f"w{i}", db_url, broker.url, f"central-{i}", MQTT__BATCH_MAX="50").start()
        for i in range(2)
    ]
    try:
        for round_ in range(5):
            for n, node in enumerate(nodes):
                publish_many(broker.url, sales_of(node, round_ * 100, 100, token(10 + n)))
        wait_until(lambda: events_in(engine) == 2000, 60, "2,000 events")
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]
    # both took part (Mosquitto round-robins a shared subscription), and between them stored each once
    stored = [w.stored() for w in workers]
    assert all(n > 0 for n in stored), stored
    assert sum(stored) == 2000
    for n in range(4):
        assert balance(engine, token(10 + n)) == 500 * 5
    assert collect(engine).duplicates == {}


def test_the_whole_chain_node_to_broker_to_ledger(
    tmp_path: Path, broker: Mosquitto, engine: Engine, db_url: str
) -> None:
    """A real kiosk-edge node, paired POS sales via pos-sim, the real central worker."""
    with NodeProcess(tmp_path / "node", broker.url) as node_proc:
        pubkey = node_proc.cli("keys", "show").stdout.strip()
        registered = subprocess.run(
            [KIOSK_CENTRAL, "nodes", "add", "--db", db_url, "store-7", "till-1", pubkey],
            capture_output=True,
            text=True,
            timeout=60,
            env=base_env(),
        )
        assert registered.returncode == 0, registered.stderr
        worker = CentralProcess(tmp_path / "central", db_url, broker.url, "central-chain").start()
        try:
            url = f"http://127.0.0.1:{node_proc.pos_port}"
            out = node_proc.cli(
                "pos-sim", "--node", url, "--count", "30", "--rate", "0", "--seed", "3", timeout=120
            )
            assert out.returncode == 0, out.stderr
            node_proc.tap("04a1b2c3d4e5f6")
            wait_until(lambda: collect(engine).ingested.get("sale") == 30, 30, "30 sales")
            wait_until(lambda: collect(engine).ingested.get("identity", 0) >= 1, 10, "the tap")
        finally:
            assert worker.stop() == 0
    stats = collect(engine)
    assert stats.dead_letters == {}
    [progress] = stats.nodes
    assert (progress.store, progress.node) == ("store-7", "till-1")
    with engine.connect() as conn:
        rows = conn.execute(
            select(sales.c.points, events.c.body).join(events, events.c.id == sales.c.event_id)
        ).all()
    # the central ledger books exactly what the till showed (one rules module on both sides)
    assert any(points for points, _ in rows)
    assert [points for points, _ in rows] == [body.get("points", 0) for _, body in rows]


def test_a_database_outage_holds_acks_until_the_batch_commits(tmp_path: Path, broker: Mosquitto) -> None:
    with PostgresServer(tmp_path / "pg", fsync=False) as pg:
        url = pg.create_database("central")
        engine = make_engine(url)
        migrate(engine)
        node = FakeNode(engine=engine)
        worker = CentralProcess(tmp_path / "central", url, broker.url, "central-db").start()
        try:
            publish_many(broker.url, sales_of(node, 0, 100, token(3)))
            wait_until(lambda: events_in(engine) == 100, 20, "the first 100")
            engine.dispose()
            pg.stop()
            publish_many(broker.url, sales_of(node, 100, 300, token(3)))
            wait_until(lambda: "not committed" in worker.log_text(), 20, "the worker noticing the outage")
            pg.start()
            wait_until(lambda: events_in(engine) == 400, 60, "all 400 after the database came back")
        finally:
            assert worker.stop() == 0
        assert balance(engine, token(3)) == 400 * 5
        engine.dispose()


def test_a_broker_restart_costs_nothing(
    tmp_path: Path, broker: Mosquitto, db_url: str, engine: Engine
) -> None:
    node = FakeNode(engine=engine)
    worker = CentralProcess(tmp_path / "central", db_url, broker.url, "central-r").start()
    try:
        publish_many(broker.url, sales_of(node, 0, 100, token(4)))
        wait_until(lambda: events_in(engine) == 100, 20, "100 events")
        broker.restart()
        wait_until(
            lambda: "subscribing to" in worker.log_text().split("lost the broker")[-1], 30, "reconnect"
        )
        publish_many(broker.url, sales_of(node, 100, 100, token(4)))
        wait_until(lambda: events_in(engine) == 200, 20, "200 events")
    finally:
        assert worker.stop() == 0
    assert balance(engine, token(4)) == 200 * 5


def test_prometheus_metrics_count_what_the_worker_did(
    tmp_path: Path, broker: Mosquitto, engine: Engine, db_url: str
) -> None:
    import urllib.request

    from tests.support.broker import free_port

    node = FakeNode(engine=engine)
    port = free_port()
    worker = CentralProcess(
        tmp_path / "central", db_url, broker.url, "central-m", METRICS__PORT=str(port)
    ).start()
    try:
        batch = sales_of(node, 0, 30, token(5))
        gap = (
            node.topic("identity"),
            node.seal("identity", {"source": "nfc", "token": token(5), "device": "r"}, seq=40).payload,
            False,
        )
        publish_many(broker.url, [*batch, batch[0], gap, (node.topic("sale"), b"{}", False)])
        wait_until(lambda: events_in(engine) == 31, 20, "31 events")

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return str(response.read().decode())

        wait_until(
            lambda: 'kiosk_central_messages_total{kind="malformed",outcome="dead"} 1.0' in scrape(),
            10,
            "metrics",
        )
        text = scrape()
    finally:
        assert worker.stop() == 0
    assert 'kiosk_central_messages_total{kind="sale",outcome="stored"} 30.0' in text
    assert 'kiosk_central_messages_total{kind="sale",outcome="duplicate"} 1.0' in text
    assert (
        'kiosk_central_node_missing_seqs{node="node-1",store="store-1"} 9.0' in text
    )  # seqs 31..39 never came
    assert 'kiosk_central_node_last_seq{node="node-1",store="store-1"} 40.0' in text
    assert "kiosk_central_broker_connected 1.0" in text
    pushes = re.search(r"^kiosk_central_pushes_total (\S+)$", text, re.M)
    assert pushes and 1 <= float(pushes.group(1)) <= 30  # one customer's figures after each batch
    assert "kiosk_central_requests_queued 0.0" in text
