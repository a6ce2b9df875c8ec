"""The durable outbox: commit before accept, seq survives restarts, bound policy, streaming reads."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from cloud_sync.envelope import Signer, verify
from cloud_sync.errors import EnvelopeError, OutboxClosed, OutboxFull
from cloud_sync.messages import EventClass, event_class
from cloud_sync.outbox import Limits, Outbox, disk_usage, read_stats
from cloud_sync.store import HEAD_REVISION, MIGRATIONS, connect, schema_revision

KEY = SigningKey.generate()
TAP = {"source": "nfc", "token": "ab" * 32, "device": "sim-reader"}
STATUS = {
    "state": "online",
    "version": "0.1.0",
    "uptime_s": 1,
    "alarms": [],
    "devices": {},
    "outbox": {"depth": 0, "bytes": 0, "oldest_age_s": 0},
}


def make(path: Path, limits: Limits | None = None, **kw: object) -> Outbox:
    return Outbox(path / "outbox.sqlite3", Signer(KEY, "store-1", "node-1"), "retail/v1", limits, **kw)  # type: ignore[arg-type]


def rows(path: Path) -> list[tuple[int, str, bytes]]:
    with sqlite3.connect(path / "outbox.sqlite3") as conn:
        return conn.execute("SELECT seq, event_type, payload FROM outbox ORDER BY seq").fetchall()


def test_accept_is_durable_before_it_returns(tmp_path: Path) -> None:
    with make(tmp_path) as ob:
        message = ob.accept("identity", TAP)
        # another connection (another process would do the same) already sees the committed row
        stored = rows(tmp_path)
        assert [(s, t) for s, t, _ in stored] == [(1, "identity")]
        assert stored[0][2] == message.payload
        doc = verify(stored[0][2], KEY.verify_key)
        assert doc["seq"] == 1 and doc["id"] == message.id


def test_schema_is_migrated_by_alembic_and_wal_full_is_on(tmp_path: Path) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, inspect

    from cloud_sync.schema import metadata

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION
    with make(tmp_path):
        pass
    path = tmp_path / "outbox.sqlite3"
    assert schema_revision(path) == HEAD_REVISION
    # the migrated schema is the one cloud_sync.schema declares
    engine = create_engine(f"sqlite:///{path}")
    try:
        inspector = inspect(engine)
        for table in metadata.sorted_tables:
            assert {c["name"] for c in inspector.get_columns(table.name)} == {c.name for c in table.columns}
    finally:
        engine.dispose()
    conn = connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        conn.close()


def test_an_old_schema_is_upgraded_on_open(tmp_path: Path) -> None:
    from cloud_sync.store import upgrade

    path = tmp_path / "outbox.sqlite3"
    upgrade(path, "0001")  # a node from before the POS receipts, with an event still queued
    with make(tmp_path) as ob:
        kept = ob.accept("identity", TAP)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE receipts")
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    with make(tmp_path) as ob:
        assert ob.stats().depth == 1 and ob.last_seq == kept.seq
        ob.accept("identity", TAP)
        assert ob.find_receipt("till-1", "R-1") is None  # the receipts table is there again
    assert schema_revision(path) == HEAD_REVISION


def test_seq_is_monotonic_across_restarts_even_when_empty(tmp_path: Path) -> None:
    with make(tmp_path) as ob:
        seqs = [ob.accept("identity", TAP).seq for _ in range(5)]
        ob.acknowledge(seqs, wait=True)
        assert ob.stats().depth == 0
    with make(tmp_path) as ob:
        assert ob.accept("identity", TAP).seq == 6
        assert ob.last_seq == 6


def test_concurrent_producers_get_unique_gapless_seqs(tmp_path: Path) -> None:
    results: list[int] = []
    lock = threading.Lock()
    with make(tmp_path) as ob:

        def produce() -> None:
            for _ in range(250):
                seq = ob.accept("identity", TAP).seq
                with lock:
                    results.append(seq)

        threads = [threading.Thread(target=produce) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == list(range(1, 2001))
    assert [s for s, _, _ in rows(tmp_path)] == list(range(1, 2001))


def test_reader_streams_in_seq_order_in_bounded_batches(tmp_path: Path) -> None:
    with make(tmp_path) as ob:
        futures = [ob.submit("identity", TAP) for _ in range(1200)]
        for f in futures:
            f.result()
        reader = ob.reader()
        try:
            seen: list[int] = []
            cursor = 0
            while batch := reader.fetch_after(cursor, 500):
                assert len(batch) <= 500
                seen.extend(e.seq for e in batch)
                cursor = batch[-1].seq
                assert batch[0].topic == "retail/v1/store-1/node-1/event/identity"
        finally:
            reader.close()
        assert seen == list(range(1, 1201))


def test_acknowledge_is_idempotent_and_out_of_order(tmp_path: Path) -> None:
    with make(tmp_path) as ob:
        for _ in range(10):
            ob.accept("identity", TAP)
        ob.acknowledge([7, 3, 9], wait=True)
        ob.acknowledge([3, 3, 9, 999], wait=True)  # duplicates and unknown seqs are harmless
        stats = ob.stats()
        assert stats.depth == 7 and stats.by_type == {"identity": 7}
        assert [s for s, _, _ in rows(tmp_path)] == [1, 2, 4, 5, 6, 8, 10]


def test_bad_bodies_are_refused_before_anything_is_stored(tmp_path: Path) -> None:
    with make(tmp_path) as ob:
        for body in ({**TAP, "uid": "04a1"}, {**TAP, "token": "'; DROP TABLE outbox; --"}, {}):
            with pytest.raises(EnvelopeError):
                ob.accept("identity", body)
        assert ob.stats().depth == 0 and ob.last_seq == 0


def test_bound_evicts_low_value_oldest_first_and_refuses_protected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alarms: list[bool] = []
    caplog.set_level(logging.WARNING)
    with make(tmp_path, Limits(max_rows=20, max_bytes=10_000_000), on_alarm=alarms.append) as ob:
        status_seqs = [ob.accept("status", STATUS).seq for _ in range(10)]
        taps = [ob.accept("identity", TAP).seq for _ in range(10)]
        assert ob.stats().depth == 20
        # full: new protected events push out the oldest status events, one by one
        more = [ob.accept("identity", TAP).seq for _ in range(5)]
        stored = rows(tmp_path)
        assert [s for s, t, _ in stored if t == "status"] == status_seqs[5:]
        assert ob.stats().evicted == {"status": 5}
        for _ in range(5):
            ob.accept("identity", TAP)
        # nothing evictable is left: a protected event is refused with the documented error (sales,
        # sign-ups and reservations share the class; their bodies arrive with their issues)
        assert {event_class(t) for t in ("sale", "signup", "reservation")} == {EventClass.PROTECTED}
        with pytest.raises(
            OutboxFull, match=r"outbox full \(20 events, \d+ bytes\): 'identity' event refused"
        ):
            ob.accept("identity", TAP)
        assert ob.stats().full and alarms == [True]
        # a low-value event cannot push out protected ones either: dropped, but counted and logged
        with pytest.raises(OutboxFull):
            ob.accept("status", STATUS)
        stats = ob.stats()
        assert stats.refused == {"identity": 1, "status": 1}
        # nothing protected was lost
        kept = [s for s, t, _ in rows(tmp_path) if t == "identity"]
        assert set(taps + more) <= set(kept) and len(kept) == 20
        # draining below 90 % clears the alarm
        ob.acknowledge(kept[:3], wait=True)
        assert not ob.stats().full and alarms == [True, False]
    text = caplog.text
    assert "ALARM outbox_full" in text and "evicted" in text and "dropped a status event" in text
    assert "alarm outbox_full cleared" in text


def test_byte_bound(tmp_path: Path) -> None:
    size = len(Signer(KEY, "store-1", "node-1").seal("identity", 1, TAP).payload)
    with make(tmp_path, Limits(max_rows=1000, max_bytes=size * 3 + 10)) as ob:
        for _ in range(3):
            ob.accept("identity", TAP)
        with pytest.raises(OutboxFull):
            ob.accept("identity", TAP)
        assert ob.stats().bytes <= size * 3 + 10


def test_close_refuses_new_events_and_finishes_queued(tmp_path: Path) -> None:
    ob = make(tmp_path)
    futures = [ob.submit("identity", TAP) for _ in range(100)]
    ob.close()
    assert all(f.result().seq > 0 for f in futures)
    with pytest.raises(OutboxClosed):
        ob.accept("identity", TAP)
    ob.close()  # idempotent
    assert len(rows(tmp_path)) == 100


def test_read_stats_and_disk_usage_without_a_writer(tmp_path: Path) -> None:
    assert read_stats(tmp_path / "outbox.sqlite3") is None
    with make(tmp_path) as ob:
        ob.accept("identity", TAP)
        ob.accept("status", STATUS)
    stats = read_stats(tmp_path / "outbox.sqlite3")
    assert stats is not None
    assert stats.depth == 2 and stats.by_type == {"identity": 1, "status": 1} and stats.last_seq == 2
    assert stats.oldest_age() >= 0
    assert disk_usage(tmp_path / "outbox.sqlite3") > 0


def test_disk_failure_is_reported_not_accepted(tmp_path: Path) -> None:
    with make(tmp_path) as ob:
        ob.accept("identity", TAP)
        # simulate the database refusing writes (e.g. disk full) with a trigger that aborts inserts
        with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
            conn.execute(
                "CREATE TRIGGER fail BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        from cloud_sync.outbox import OutboxUnavailable

        with pytest.raises(OutboxUnavailable, match="disk full"):
            ob.accept("identity", TAP)
        assert ob.stats().depth == 1
        with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
            conn.execute("DROP TRIGGER fail")
        # the failed event consumed seq 2 (a gap centrally, never a duplicate); nothing else was lost
        assert ob.accept("identity", TAP).seq == 3
    assert [json.loads(p)["seq"] for _, _, p in rows(tmp_path)] == [1, 3]


def test_a_failing_listener_or_writer_bug_never_hangs_producers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cloud_sync.outbox import OutboxUnavailable

    with make(tmp_path) as ob:

        def broken() -> None:
            raise RuntimeError("listener bug")

        ob.add_listener(broken)
        assert ob.accept("identity", TAP).seq == 1  # committed despite the listener
        assert "outbox listener failed" in caplog.text
        original = ob._place

        def exploding(*args: object) -> object:
            raise KeyError("writer bug")

        ob._place = exploding  # type: ignore[method-assign]
        with pytest.raises(OutboxUnavailable):
            ob.accept("identity", TAP)
        ob._place = original  # type: ignore[method-assign]
        assert ob.accept("identity", TAP).seq == 3  # the writer thread is still alive
