"""Tables of the central ledger database (PostgreSQL in a chain, SQLite for a demo); Alembic creates them.

Nothing here is readable personal data: customers appear as pseudonymous identity tokens (HMAC of a card
UID or member code, made on the node) and accounts; names and contacts live sealed in the PII vault, a
separate database. SQLAlchemy Core rather than the ORM: ingest writes a batch of rows per transaction and
Core keeps that to one statement per table.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

Json = JSON().with_variant(JSONB(), "postgresql")
Ident = String(64)
EventId = String(36)
Token = String(64)

#: The node registry: only messages signed by a registered node's key are accepted.
nodes = Table(
    "nodes",
    metadata,
    Column("store", Ident, primary_key=True),
    Column("node", Ident, primary_key=True),
    Column("public_key", String(64), nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
)

#: Every accepted event once: the envelope ``id`` is the primary key, so redelivery, replay and two
#: workers racing insert it once (``ON CONFLICT DO NOTHING``) and only the first insert has effects.
events = Table(
    "events",
    metadata,
    Column("id", EventId, primary_key=True),
    Column("type", String(32), nullable=False),
    Column("store", Ident, nullable=False),
    Column("node", Ident, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("body", Json, nullable=False),
)
Index("ix_events_node_seq", events.c.store, events.c.node, events.c.seq)
Index("ix_events_type_ts", events.c.type, events.c.ts)

#: What could not be ingested, with the reason and the exact bytes, so nothing blocks the queue and an
#: operator can see, fix and replay it.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("topic", String(512), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
)
Index("ix_dead_letters_reason", dead_letters.c.reason)

#: Per node: the sequence numbers seen, for gap reporting (``missing = highest - first + 1 - events``).
node_progress = Table(
    "node_progress",
    metadata,
    Column("store", Ident, primary_key=True),
    Column("node", Ident, primary_key=True),
    Column("first_seq", BigInteger, nullable=False),
    Column("highest_seq", BigInteger, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
)

#: Monotonic counters the stats report (duplicates absorbed per event type).
counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

#: Members as the ledger knows them: a member token (the HMAC of the member code), no personal data.
members = Table(
    "members",
    metadata,
    Column("member_token", Token, primary_key=True),
    Column("joined_at", DateTime(timezone=True), nullable=False),
    Column("store", Ident, nullable=False),
    Column("node", Ident, nullable=False),
    Column("event_id", EventId, ForeignKey("events.id"), nullable=False),
    Column("language", String(8), nullable=False),
    Column("heard_via", String(16), nullable=False),
    Column("marketing_email", Boolean, nullable=False),
    Column("marketing_sms", Boolean, nullable=False),
    Column("notice_version", String(64), nullable=False),
    Column("consent_at", DateTime(timezone=True), nullable=False),
    Column("tier", String(32), nullable=True),
    #: when the current tier was reached (a tier is kept at least 12 months; docs/loyalty.md)
    Column("tier_since", DateTime(timezone=True), nullable=True),
)

#: Identity tokens (cards, member barcodes) and the member each is bound to; a lost card is blocked.
cards = Table(
    "cards",
    metadata,
    Column("token", Token, primary_key=True),
    Column("member_token", Token, ForeignKey("members.member_token"), nullable=True),
    Column("status", String(16), nullable=False),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("last_store", Ident, nullable=False),
)
Index("ix_cards_member", cards.c.member_token)

#: Sales and returns as the tills reported them (amounts in integer minor units).
sales = Table(
    "sales",
    metadata,
    Column("event_id", EventId, ForeignKey("events.id"), primary_key=True),
    Column("store", Ident, nullable=False),
    Column("node", Ident, nullable=False),
    Column("pos", Ident, nullable=False),
    Column("receipt", String(48), nullable=False),
    Column("sold_at", DateTime(timezone=True), nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("discount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment", String(16), nullable=False),
    Column("customer_token", Token, nullable=True),
    # whose points: the bound member's token, else the identity token itself (a card not yet joined)
    Column("account", Token, nullable=True),
    Column("points", BigInteger, nullable=False),
)
Index("ix_sales_account_sold_at", sales.c.account, sales.c.sold_at)
Index("ix_sales_store_sold_at", sales.c.store, sales.c.sold_at)

sale_lines = Table(
    "sale_lines",
    metadata,
    Column("event_id", EventId, ForeignKey("sales.event_id"), primary_key=True),
    Column("line_no", Integer, primary_key=True, autoincrement=False),
    Column("gtin", String(14), nullable=True),
    Column("sku", String(32), nullable=True),
    Column("name", String(120), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    Column("category", String(32), nullable=False),
)

#: The points ledger: append-only entries, the balance is their sum per account. An entry comes from a
#: node's event (a sale, an offline redemption) or from a central decision (an approved redemption,
#: expiry), which ``ref`` names instead.
ledger = Table(
    "ledger",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("account", Token, nullable=False),
    Column("event_id", EventId, ForeignKey("events.id"), nullable=True),
    Column("ref", String(64), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("booked_at", DateTime(timezone=True), nullable=False),
    Column("store", Ident, nullable=False),
)
Index("ix_ledger_account", ledger.c.account)
Index("ix_ledger_event", ledger.c.event_id)

#: Reward redemptions, one per request id (the idempotency key of the till's request), approved centrally
#: over request/response or handed over offline and settled when the node's ``redemption`` event arrives.
redemptions = Table(
    "redemptions",
    metadata,
    Column("request_id", String(32), primary_key=True),
    Column("account", Token, nullable=True),
    Column("reward", String(32), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("approved", Boolean, nullable=False),
    Column("reason", String(48), nullable=True),
    Column("approval", String(16), nullable=False),
    Column("store", Ident, nullable=False),
    Column("node", Ident, nullable=False),
    Column("pos", Ident, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    #: the node's ``redemption`` event once it arrived (the reward was really handed over)
    Column("event_id", EventId, nullable=True),
)
Index("ix_redemptions_account", redemptions.c.account)

#: Stamp cards: net units bought per account and card (returns subtract). Stamps earned are
#: ``units // stamps``, progress ``units % stamps``; rewards left = earned - approved redemptions.
stamps = Table(
    "stamps",
    metadata,
    Column("account", Token, primary_key=True),
    Column("card", String(32), primary_key=True),
    Column("units", BigInteger, nullable=False),
)
