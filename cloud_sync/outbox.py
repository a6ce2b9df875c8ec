"""The durable outbox: an event is committed to SQLite before anyone is told it was accepted.

One writer thread owns every write (appends, acknowledgements, evictions) and commits them in groups:
callers that arrive while a commit is in flight share the next one, so eight concurrent producers pay
for one fsync, not eight ("group commit"). The relay reads through its own connection
(``OutboxReader``) and hands PUBACKed sequence numbers back with ``acknowledge``; rows leave the
table only then.

Bound policy (documented in docs/architecture.md): when ``max_rows`` or ``max_bytes`` would be exceeded,
low-value events (status, telemetry) are evicted oldest-first to make room. If that is not enough, the new
event is refused with ``OutboxFull`` — protected events (sales, sign-ups, reservations, taps, …) are never
evicted — and the ``outbox_full`` alarm is raised until the backlog drains below 90 % of the bound.
Every eviction and refusal is logged and counted; nothing is dropped silently.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_sync.envelope import MAX_PAYLOAD_BYTES, SignedMessage, Signer
from cloud_sync.errors import CloudSyncError, OutboxClosed, OutboxFull
from cloud_sync.messages import EventClass, event_class, validate_body
from cloud_sync.store import connect, ensure_schema

log = logging.getLogger(__name__)

#: Most requests folded into one transaction; bounds the latency a large burst adds to its first caller.
MAX_GROUP = 512
#: An accept that has not committed by then fails (a stuck disk must not hang a till forever).
ACCEPT_TIMEOUT = 30.0
#: The alarm clears once the backlog is below this share of the bound (hysteresis, so it does not flap).
CLEAR_RATIO = 0.9


class OutboxUnavailable(CloudSyncError, OSError):  # noqa: N818
    """The database refused the write (disk full, I/O error); the event was not accepted."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The outbox bound; both apply."""

    max_rows: int = 1_000_000
    max_bytes: int = 512 * 1024 * 1024


@dataclass(slots=True)
class OutboxStats:
    """A consistent snapshot of the backlog for status pages, metrics and the CLI."""

    depth: int
    bytes: int
    by_type: dict[str, int]
    oldest_created: float | None
    last_seq: int
    full: bool
    evicted: dict[str, int]
    refused: dict[str, int]

    def oldest_age(self, now: float | None = None) -> float:
        """Seconds since the oldest queued event was accepted (0 when empty)."""
        if self.oldest_created is None:
            return 0.0
        return max(0.0, (now or time.time()) - self.oldest_created)


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One row as the relay needs it."""

    seq: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class ReceiptSpec:
    """An idempotency receipt to commit with the event: ``respond`` builds the stored answer from it."""

    scope: str
    key: str
    fingerprint: str
    respond: Callable[[SignedMessage], bytes]


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    """What a retried request gets back."""

    fingerprint: str
    event_id: str
    created_at: float
    response: bytes


@dataclass(slots=True)
class _Append:
    event_type: str
    message: SignedMessage
    receipt: tuple[str, str, str, str, float, bytes] | None = None
    future: Future[SignedMessage] = field(default_factory=Future)


@dataclass(slots=True)
class _Prune:
    before: float
    future: Future[int] = field(default_factory=Future)


@dataclass(slots=True)
class _Ack:
    seqs: list[int]
    future: Future[None] | None = None


_SENTINEL = object()
_INSERT_HEAD = "INSERT INTO outbox (seq, event_id, event_type, evictable, created_at, topic, payload) VALUES "
_SAVE_SEQ = (
    "INSERT INTO counters (name, value) VALUES ('last_seq', ?) "
    "ON CONFLICT(name) DO UPDATE SET value = excluded.value"
)
_OLDEST_EVICTABLE = "SELECT seq FROM outbox WHERE evictable = 1 ORDER BY seq LIMIT ?"
_FETCH = "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?"
_OLDEST_CREATED = "SELECT created_at FROM outbox ORDER BY seq LIMIT 1"
_INSERT_RECEIPT = "INSERT OR IGNORE INTO receipts VALUES (?, ?, ?, ?, ?, ?)"
_FIND_RECEIPT = "SELECT fingerprint, event_id, created_at, response FROM receipts WHERE scope = ? AND key = ?"
_COUNT_BY_TYPE = (
    "SELECT event_type, count(*), coalesce(sum(length(payload)), 0) FROM outbox GROUP BY event_type"
)


class Outbox:
    """Durable, bounded event queue; thread-safe for any number of producers and one relay."""

    def __init__(
        self,
        path: Path,
        signer: Signer,
        topic_root: str,
        limits: Limits | None = None,
        *,
        on_alarm: Callable[[bool], None] | None = None,
        isolated_migration: bool = False,
    ) -> None:
        self.path = path
        self._signer = signer
        self._topic_prefix = f"{topic_root}/{signer.store}/{signer.node}/event/"
        self.limits = limits or Limits()
        self._on_alarm = on_alarm
        if ensure_schema(path, isolated=isolated_migration):
            log.info("outbox %s: schema migrated to the newest revision", path)
        self._stats_conn = connect(path)
        self._stats_lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._listeners: list[Callable[[], None]] = []
        self._closed = threading.Event()
        self._lock = threading.Lock()  # guards the counters read by stats() from other threads
        self._rows = 0
        self._bytes = 0
        self._by_type: Counter[str] = Counter()
        self._evicted: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._full = False
        self._last_seq = 0
        self._seal_lock = threading.Lock()
        self._load_counters()
        self._next_seq = self._last_seq + 1
        self._writer = threading.Thread(target=self._run_writer, name="outbox-writer", daemon=True)
        self._writer.start()

    # -- producers -------------------------------------------------------------------------------

    def accept(self, event_type: str, body: dict[str, Any]) -> SignedMessage:
        """Validate, seal and durably store one event; returns only after the commit is on disk.

        Raises ``EnvelopeError`` for a bad body, ``OutboxFull`` when the bound refuses it,
        ``OutboxUnavailable`` when the disk refused it and ``OutboxClosed`` during shutdown.
        """
        request = self.submit(event_type, body)
        try:
            return request.result(timeout=ACCEPT_TIMEOUT)
        except TimeoutError:
            raise OutboxUnavailable(f"the outbox did not commit within {ACCEPT_TIMEOUT:g} s") from None

    def submit(
        self, event_type: str, body: dict[str, Any], *, receipt: ReceiptSpec | None = None
    ) -> Future[SignedMessage]:
        """Like ``accept`` but returns a future; the event counts as accepted only once it resolves.

        With ``receipt``, the answer it builds is committed in the same transaction as the event, so an
        idempotent caller (the POS) can never see one without the other, whatever crashes when.
        """
        clean = validate_body(event_type, body)
        # Sealing (the Ed25519 signature is most of an event's CPU cost) happens here, in the producer's
        # thread, so it overlaps the writer's fsync instead of adding to it. The lock hands out seqs and
        # queues in the same order, so the writer always commits in seq order and the relay never skips
        # one. A refused or failed event has consumed its seq: a gap centrally means refusals (see the
        # outbox_full alarm) or a disk error, never a lost accepted event.
        with self._seal_lock:
            if self._closed.is_set():
                raise OutboxClosed("the outbox is closing and accepts no new events")
            seq = self._next_seq
            self._next_seq += 1
            message = self._signer.seal(event_type, seq, clean)
            stored = None
            if receipt is not None:
                response = receipt.respond(message)
                stored = (receipt.scope, receipt.key, receipt.fingerprint, message.id, time.time(), response)
            request = _Append(event_type, message, stored)
            self._queue.put(request)
        return request.future

    # -- relay -----------------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the writer thread, keep it cheap) after each commit that added events."""
        self._listeners.append(callback)

    def acknowledge(self, seqs: Iterable[int], *, wait: bool = False) -> None:
        """Remove delivered events; batched into the writer's next transaction."""
        items = list(seqs)
        if not items:
            return
        future: Future[None] | None = Future() if wait else None
        self._queue.put(_Ack(items, future))
        if future is not None:
            future.result()

    def find_receipt(self, scope: str, key: str) -> StoredReceipt | None:
        """The receipt committed for ``(scope, key)``, if any."""
        with self._stats_lock:
            row = self._stats_conn.execute(_FIND_RECEIPT, (scope, key)).fetchone()
            self._stats_conn.rollback()
        if row is None:
            return None
        return StoredReceipt(str(row[0]), str(row[1]), float(row[2]), bytes(row[3]))

    def prune_receipts(self, before: float) -> int:
        """Forget receipts created before ``before`` (epoch seconds); returns how many."""
        request = _Prune(before)
        self._queue.put(request)
        return request.future.result(timeout=ACCEPT_TIMEOUT)

    def reader(self) -> OutboxReader:
        """A read-only cursor over the backlog for one thread (the relay); close it when done."""
        return OutboxReader(connect(self.path))

    def seal_request(self, kind: str, body: dict[str, Any]) -> SignedMessage:
        """Validate and sign a request that is not an event (never queued), at the current seq."""
        return self._signer.seal(kind, self._last_seq, validate_body(kind, body))

    def seal_presence(self, body: dict[str, Any]) -> SignedMessage:
        """Sign a presence message (not queued: it is retained state, not an event) at the current seq."""
        return self._signer.seal("presence", self._last_seq, body)

    # -- introspection -----------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        """Whether the ``outbox_full`` alarm is raised (no database query: for frequent polling)."""
        return self._full

    @property
    def last_seq(self) -> int:
        """The highest sequence number committed so far (survives restarts)."""
        return self._last_seq

    def stats(self) -> OutboxStats:
        """Counters kept by the writer plus the oldest row's age from the database."""
        with self._stats_lock:
            row = self._stats_conn.execute(_OLDEST_CREATED).fetchone()
        oldest = None if row is None else float(row[0])
        with self._lock:
            return OutboxStats(
                depth=self._rows,
                bytes=self._bytes,
                by_type=dict(self._by_type),
                oldest_created=oldest,
                last_seq=self._last_seq,
                full=self._full,
                evicted=dict(self._evicted),
                refused=dict(self._refused),
            )

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Finish what is queued, refuse what comes after, close the database. Idempotent."""
        if self._closed.is_set():
            return
        with self._seal_lock:  # after this, no producer can queue behind the sentinel
            self._closed.set()
        self._queue.put(_SENTINEL)
        self._writer.join(timeout)
        if self._writer.is_alive():
            raise RuntimeError(f"outbox writer did not stop within {timeout:.1f} s")
        with self._stats_lock:
            self._stats_conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer thread -----------------------------------------------------------------------------

    def _load_counters(self) -> None:
        with self._stats_lock:
            conn = self._stats_conn
            for etype, count, size in conn.execute(_COUNT_BY_TYPE):
                self._by_type[etype] = int(count)
                self._rows += int(count)
                self._bytes += int(size)
            stored = conn.execute("SELECT value FROM counters WHERE name = 'last_seq'").fetchone()
            max_seq = conn.execute("SELECT max(seq) FROM outbox").fetchone()
        self._last_seq = max(int(stored[0]) if stored else 0, int(max_seq[0] or 0) if max_seq else 0)
        self._full = self._over_clear_mark()

    def _run_writer(self) -> None:
        conn = connect(self.path)
        try:
            stop = False
            while not stop:
                batch = [self._queue.get()]
                while len(batch) < MAX_GROUP:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if _SENTINEL in batch:
                    stop = True
                    batch = [item for item in batch if item is not _SENTINEL]
                    batch.extend(self._drain_remaining())
                if batch:
                    try:
                        self._commit_batch(conn, batch)
                    except Exception as exc:  # a bug must not leave producers waiting forever
                        log.exception("outbox writer: unexpected error; the batch was not accepted")
                        _fail(batch, OutboxUnavailable(f"outbox writer error: {exc}"))
        finally:
            conn.close()

    def _drain_remaining(self) -> list[Any]:
        rest: list[Any] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return rest
            if item is not _SENTINEL:
                rest.append(item)

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        appends = [item for item in batch if isinstance(item, _Append)]
        acks = [item for item in batch if isinstance(item, _Ack)]
        prunes = [item for item in batch if isinstance(item, _Prune)]
        saved = (self._rows, self._bytes, self._by_type.copy(), self._last_seq, self._evicted.copy())
        accepted: list[tuple[_Append, SignedMessage]] = []
        refused: list[tuple[_Append, Exception]] = []
        try:
            seqs = [seq for ack in acks for seq in ack.seqs]
            if seqs:
                self._delete(conn, seqs)
            pending: list[tuple[Any, ...]] = []
            now = time.time()
            for request in appends:
                message = self._place(conn, request, pending, now)
                if isinstance(message, Exception):
                    refused.append((request, message))
                else:
                    accepted.append((request, message))
            if pending:
                _insert_rows(conn, pending)
            receipts = [request.receipt for request, _m in accepted if request.receipt is not None]
            if receipts:
                conn.executemany(_INSERT_RECEIPT, receipts)
            pruned = [
                conn.execute("DELETE FROM receipts WHERE created_at < ?", (p.before,)).rowcount
                for p in prunes
            ]
            deleted = bool(seqs) or self._evicted != saved[4]
            if deleted:
                # max(seq) of the table is the last seq as long as nothing is deleted; a transaction that
                # deletes rows records it, so the sequence survives an outbox that empties.
                conn.execute(_SAVE_SEQ, (self._last_seq,))
            conn.commit()
        except Exception as exc:  # the database refused: nothing of this batch is durable
            conn.rollback()
            with self._lock:
                self._rows, self._bytes, self._by_type, self._last_seq, self._evicted = saved
            log.error("outbox write failed, %d event(s) not accepted: %s", len(appends), exc)
            failure = OutboxUnavailable(f"outbox write failed: {exc}")
            for request in appends:
                request.future.set_exception(failure)
            for ack in acks:
                if ack.future is not None:
                    ack.future.set_exception(failure)
            for prune in prunes:
                prune.future.set_exception(failure)
            return
        # Alarm and relay first: a caller that sees its future resolve also sees their effects, and the
        # relay starts publishing while the producers wake up.
        self._update_alarm()
        if accepted:
            for listener in self._listeners:
                try:
                    listener()
                except Exception:  # the events are committed; a broken listener must not undo that
                    log.exception("outbox listener failed")
        for request, message in accepted:
            request.future.set_result(message)
        for request, error in refused:
            request.future.set_exception(error)
        for ack in acks:
            if ack.future is not None:
                ack.future.set_result(None)
        for prune, count in zip(prunes, pruned, strict=True):
            prune.future.set_result(count)

    def _place(
        self, conn: sqlite3.Connection, request: _Append, pending: list[tuple[Any, ...]], now: float
    ) -> SignedMessage | Exception:
        """Reserve room for ``request``, evicting low-value rows if the bound needs it."""
        message = request.message
        seq = message.seq
        size = len(message.payload)
        if not self._fits(size):
            if pending:  # evictions must see this batch's rows too
                _insert_rows(conn, pending)
                pending.clear()
            self._evict(conn, size)
        if not self._fits(size):
            with self._lock:
                self._refused[request.event_type] += 1
            if event_class(request.event_type) is EventClass.LOW_VALUE:
                log.warning("outbox full: dropped a %s event (nothing older to evict)", request.event_type)
            else:
                log.error("outbox full: refused the new %s event", request.event_type)
            self._set_full(True)
            return OutboxFull(request.event_type, self._rows, self._bytes)
        evictable = event_class(request.event_type) is EventClass.LOW_VALUE
        topic = self._topic_prefix + request.event_type
        pending.append((seq, message.id, request.event_type, evictable, now, topic, message.payload))
        with self._lock:
            self._last_seq = max(self._last_seq, seq)
            self._rows += 1
            self._bytes += size
            self._by_type[request.event_type] += 1
        return message

    def _fits(self, size: int) -> bool:
        return self._rows + 1 <= self.limits.max_rows and self._bytes + size <= self.limits.max_bytes

    def _evict(self, conn: sqlite3.Connection, size: int) -> None:
        while not self._fits(size):
            # Evict no more than needed: each row is at most MAX_PAYLOAD_BYTES, so this never overshoots.
            over_bytes = self._bytes + size - self.limits.max_bytes
            limit = max(1, self._rows + 1 - self.limits.max_rows, over_bytes // MAX_PAYLOAD_BYTES)
            victims = [row[0] for row in conn.execute(_OLDEST_EVICTABLE, (limit,))]
            if not victims:
                return
            removed = self._delete(conn, victims)
            for etype, count in removed.items():
                self._evicted[etype] += count
                log.warning("outbox bound reached: evicted %d oldest %s event(s)", count, etype)

    def _delete(self, conn: sqlite3.Connection, seqs: list[int]) -> Counter[str]:
        removed: Counter[str] = Counter()
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"DELETE FROM outbox WHERE seq IN ({marks}) RETURNING event_type, length(payload)"  # noqa: S608 - only "?" placeholders
            rows = conn.execute(sql, chunk).fetchall()
            with self._lock:
                for etype, size in rows:
                    self._rows -= 1
                    self._bytes -= int(size)
                    self._by_type[etype] -= 1
                    if self._by_type[etype] <= 0:
                        del self._by_type[etype]
                    removed[etype] += 1
        return removed

    def _over_clear_mark(self) -> bool:
        return (
            self._rows >= self.limits.max_rows * CLEAR_RATIO
            or self._bytes >= self.limits.max_bytes * CLEAR_RATIO
        )

    def _update_alarm(self) -> None:
        if self._full and not self._over_clear_mark():
            self._set_full(False)

    def _set_full(self, full: bool) -> None:
        if full == self._full:
            return
        self._full = full
        if full:
            log.error(
                "ALARM outbox_full: bound reached (%d/%d events, %d/%d bytes); protected events are refused",
                self._rows,
                self.limits.max_rows,
                self._bytes,
                self.limits.max_bytes,
            )
        else:
            log.warning("alarm outbox_full cleared: backlog below %d%% of the bound", int(CLEAR_RATIO * 100))
        if self._on_alarm is not None:
            self._on_alarm(full)


def _fail(batch: list[Any], error: Exception) -> None:
    """Resolve every still-pending future of ``batch`` with ``error``."""
    for item in batch:
        future = getattr(item, "future", None)
        if future is not None and not future.done():
            future.set_exception(error)


def _insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    # One multi-row INSERT per chunk instead of executemany: a single statement step, so the writer
    # gives up the GIL once per chunk rather than once per row (which costs a re-acquisition each time
    # producers are waiting).
    for start in range(0, len(rows), 128):
        chunk = rows[start : start + 128]
        values = ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        conn.execute(_INSERT_HEAD + values, [value for row in chunk for value in row])


class OutboxReader:
    """Streams the backlog in ``seq`` order in bounded batches, never the whole table at once."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def fetch_after(self, seq: int, limit: int) -> list[QueuedEvent]:
        """Up to ``limit`` events with a sequence number above ``seq``."""
        rows = self._conn.execute(_FETCH, (seq, limit)).fetchall()
        self._conn.rollback()  # end the read transaction so the WAL can be checkpointed
        return [QueuedEvent(s, t, p) for s, t, p in rows]

    def close(self) -> None:
        """Release the connection."""
        self._conn.close()


def read_stats(path: Path) -> OutboxStats | None:
    """Backlog figures straight from the file, for ``kiosk-edge outbox`` when no node is running.

    Never migrates or writes; returns None when the file or its schema does not exist yet.
    """
    if not path.exists():
        return None
    conn = connect(path)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchone():
            return None
        by_type: dict[str, int] = {}
        size = 0
        for etype, count, type_bytes in conn.execute(_COUNT_BY_TYPE):
            by_type[str(etype)] = int(count)
            size += int(type_bytes)
        oldest = conn.execute(_OLDEST_CREATED).fetchone()
        last = conn.execute(
            "SELECT max(coalesce((SELECT value FROM counters WHERE name = 'last_seq'), 0),"
            " coalesce((SELECT max(seq) FROM outbox), 0))"
        ).fetchone()
    finally:
        conn.close()
    return OutboxStats(
        depth=sum(by_type.values()),
        bytes=size,
        by_type=by_type,
        oldest_created=None if oldest is None else float(oldest[0]),
        last_seq=int(last[0]) if last else 0,
        full=False,
        evicted={},
        refused={},
    )


def disk_usage(path: Path) -> int:
    """Bytes the database occupies on disk, including its WAL and shared-memory files."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            total += candidate.stat().st_size
    return total


__all__ = [
    "Limits",
    "Outbox",
    "OutboxClosed",
    "OutboxFull",
    "OutboxReader",
    "OutboxStats",
    "QueuedEvent",
    "ReceiptSpec",
    "StoredReceipt",
]
