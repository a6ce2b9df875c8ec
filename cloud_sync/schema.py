"""SQLAlchemy table definitions of the node's SQLite store; Alembic migrations create them."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, Integer, LargeBinary, MetaData, String, Table

metadata = MetaData()

#: One row per accepted event, removed only after the broker's PUBACK (or evicted by policy).
outbox = Table(
    "outbox",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("event_id", String(36), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("evictable", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("topic", String(255), nullable=False),
    Column("payload", LargeBinary, nullable=False),
)
Index("ix_outbox_evictable_seq", outbox.c.seq, sqlite_where=outbox.c.evictable.is_(True))

#: Durable counters; ``last_seq`` keeps the per-node sequence monotonic after the outbox empties.
counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", Integer, nullable=False),
)

#: The answer to each idempotent POS request (scope = the POS, key = its Idempotency-Key), written in the
#: same transaction as the event it created, so a retry after a crash gets the same answer and no second
#: event. Pruned after a retention period; holds no readable personal data.
receipts = Table(
    "receipts",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("response", LargeBinary, nullable=False),
)
Index("ix_receipts_created_at", receipts.c.created_at)
