"""Exactly-once ingest: a batch of MQTT messages becomes one database transaction.

The worker hands over what the broker delivered (topic and bytes) and acknowledges it only after
``Ingestor.ingest`` returned, that is after the transaction committed. So a crash anywhere before that
gets the whole batch redelivered, and the unique event id makes the second delivery a no-op: the event
row is inserted with ``ON CONFLICT DO NOTHING``, and only the rows actually inserted have effects (sales,
points, members, cards). Two workers racing on the same event serialise on that primary key; the loser
sees a conflict and does nothing.

Checks that need no database (size, JSON, envelope, topic, signature, body schema) run before the
transaction. A message that fails one becomes a dead-letter row with the reason and its exact bytes, in
the same transaction as the batch's good events, so it is acknowledged (never redelivered forever, never
blocking the queue) and never lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from nacl.signing import VerifyKey
from sqlalchemy import Connection, Engine, func, select

from cloud_sync.central.accounts import add_stamps, bind_token
from cloud_sync.central.db import upsert
from cloud_sync.central.program import LoyaltySection
from cloud_sync.central.schema import (
    cards,
    counters,
    dead_letters,
    events,
    ledger,
    members,
    node_progress,
    nodes,
    redemptions,
    sale_lines,
    sales,
)
from cloud_sync.envelope import MAX_PAYLOAD_BYTES, SCHEMA_PREFIX, decode_public_key, verify
from cloud_sync.errors import EnvelopeError, SignatureError
from cloud_sync.loyalty import points_for
from cloud_sync.messages import BODY_MODELS, RedemptionBody, SaleBody, SignupBody

log = logging.getLogger(__name__)

#: The event types a node publishes under ``event/``; request/reply and presence travel elsewhere.
INGESTED_TYPES = frozenset(BODY_MODELS) - {"redemption_request", "member_lookup", "presence"}

Reason = Literal[
    "oversized",
    "malformed",
    "bad-topic",
    "topic-mismatch",
    "unknown-node",
    "bad-signature",
    "unknown-type",
    "schema",
]


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message as the broker delivered it."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message: stored (first time), duplicate (absorbed) or dead-lettered."""

    status: Literal["stored", "duplicate", "dead"]
    event_type: str | None = None
    reason: Reason | None = None
    event_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class _Accepted:
    doc: dict[str, Any]
    event_type: str


@dataclass(frozen=True, slots=True)
class _Rejected:
    reason: Reason
    detail: str


class NodeKeys:
    """The registry's public keys, cached: a registered node is found at once, a removed one within
    ``max_age`` seconds (the cache is reloaded on a miss at most once a second, and whole every
    ``max_age``)."""

    def __init__(self, engine: Engine, *, max_age: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self._engine = engine
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str], VerifyKey] = {}
        self._loaded = -1e18
        self._last_miss_reload = -1e18

    def _reload(self) -> None:
        with self._engine.connect() as conn:
            rows = conn.execute(select(nodes.c.store, nodes.c.node, nodes.c.public_key)).all()
        keys: dict[tuple[str, str], VerifyKey] = {}
        for store, node, text in rows:
            try:
                keys[(store, node)] = decode_public_key(text)
            except EnvelopeError:
                log.error(
                    "node %s/%s has an unusable key in the registry; its messages are refused", store, node
                )
        self._keys = keys
        self._loaded = self._clock()

    def get(self, store: str, node: str) -> VerifyKey | None:
        """The node's key, or None if it is not registered."""
        with self._lock:
            now = self._clock()
            if now - self._loaded > self._max_age:
                self._reload()
            key = self._keys.get((store, node))
            if key is None and now - self._last_miss_reload > 1.0:
                self._last_miss_reload = now
                self._reload()
                key = self._keys.get((store, node))
            return key


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Ingestor:
    """Turns batches of delivered messages into committed rows (see the module docstring).

    Thread-safe: the worker calls it from one thread, the tests from several.
    """

    def __init__(
        self,
        engine: Engine,
        topic_root: str,
        *,
        program: LoyaltySection | None = None,
        on_commit: Callable[[Sequence[dict[str, Any]]], None] | None = None,
    ) -> None:
        self._engine = engine
        self._root = topic_root.split("/")
        self.program = program or LoyaltySection()
        self._rules = self.program.earn_rules
        self._on_commit = on_commit
        self.keys = NodeKeys(engine)

    # -- checks outside the transaction ------------------------------------------------------------
    def _check(self, message: Incoming) -> _Accepted | _Rejected:
        if len(message.payload) > MAX_PAYLOAD_BYTES:
            return _Rejected("oversized", f"{len(message.payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
        parts = message.topic.split("/")
        root_len = len(self._root)
        if len(parts) != root_len + 4 or parts[:root_len] != self._root or parts[root_len + 2] != "event":
            return _Rejected("bad-topic", f"not {'/'.join(self._root)}/STORE/NODE/event/TYPE")
        store, node, topic_type = parts[root_len], parts[root_len + 1], parts[root_len + 3]
        key = self.keys.get(store, node)  # a database error here fails the batch: retried, not lost
        if key is None:
            return _Rejected("unknown-node", f"{store}/{node} is not in the node registry")
        try:
            doc = verify(message.payload, key)
        except SignatureError as exc:
            return _Rejected("bad-signature", str(exc))
        except EnvelopeError as exc:
            return _Rejected("malformed", str(exc))
        event_type = doc["schema"].removeprefix(SCHEMA_PREFIX)
        if (doc["store"], doc["node"], event_type) != (store, node, topic_type):
            return _Rejected(
                "topic-mismatch",
                f"envelope says {doc['store']}/{doc['node']} {event_type}, topic says "
                f"{store}/{node} {topic_type}",
            )
        if event_type not in INGESTED_TYPES:
            return _Rejected("unknown-type", f"event type {event_type!r} is not ingested")
        try:
            msgspec.convert(doc["body"], BODY_MODELS[event_type], strict=True)
        except msgspec.ValidationError as exc:
            return _Rejected("schema", f"{event_type} body: {exc}")
        return _Accepted(doc, event_type)

    # -- the transaction -----------------------------------------------------------------------------
    def ingest(self, batch: Sequence[Incoming], *, dead_letter: bool = True) -> list[Outcome]:
        """Check and commit ``batch`` in one transaction; an exception means nothing was committed.

        ``dead_letter=False`` (a replay of dead letters) reports failures without writing new letters.
        """
        checked = [self._check(message) for message in batch]
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            outcomes, fresh = self._write(conn, batch, checked, now, dead_letter=dead_letter)
        if self._on_commit is not None and fresh:
            # After the commit, outside the transaction: a consumer that fails (the vault database
            # down, say) cannot undo ingest; it catches up from the events table instead.
            try:
                self._on_commit([accepted.doc for accepted in fresh])
            except Exception:
                log.exception("post-commit consumer failed for %d events; it will catch up", len(fresh))
        return outcomes

    def _write(
        self,
        conn: Connection,
        batch: Sequence[Incoming],
        checked: Sequence[_Accepted | _Rejected],
        now: datetime,
        *,
        dead_letter: bool = True,
    ) -> tuple[list[Outcome], list[_Accepted]]:
        outcomes: list[Outcome | None] = [None] * len(batch)
        dead_rows = []
        first_index: dict[str, int] = {}
        for i, (message, result) in enumerate(zip(batch, checked, strict=True)):
            if isinstance(result, _Rejected):
                dead_rows.append(
                    {
                        "received_at": now,
                        "topic": message.topic[:512],
                        "reason": result.reason,
                        "detail": result.detail[:2000],
                        "payload": message.payload,
                    }
                )
                outcomes[i] = Outcome("dead", reason=result.reason, detail=result.detail)
            elif result.doc["id"] in first_index:  # the same event twice in one batch
                outcomes[i] = Outcome("duplicate", result.event_type, event_id=result.doc["id"])
            else:
                first_index[result.doc["id"]] = i
        if dead_rows and dead_letter:
            conn.execute(dead_letters.insert(), dead_rows)

        fresh: list[_Accepted] = []
        if first_index:
            rows = []
            for i in first_index.values():
                accepted = checked[i]
                assert isinstance(accepted, _Accepted)
                doc = accepted.doc
                rows.append(
                    {
                        "id": doc["id"],
                        "type": accepted.event_type,
                        "store": doc["store"],
                        "node": doc["node"],
                        "seq": doc["seq"],
                        "ts": _parse_ts(doc["ts"]),
                        "received_at": now,
                        "body": doc["body"],
                    }
                )
            stmt = upsert(conn, events).on_conflict_do_nothing(index_elements=["id"]).returning(events.c.id)
            inserted = {row[0] for row in conn.execute(stmt, rows)}
            for event_id, i in first_index.items():
                accepted = checked[i]
                assert isinstance(accepted, _Accepted)
                if event_id in inserted:
                    fresh.append(accepted)
                    outcomes[i] = Outcome("stored", accepted.event_type, event_id=event_id)
                else:
                    outcomes[i] = Outcome("duplicate", accepted.event_type, event_id=event_id)
        if fresh:
            self._progress(conn, fresh, now)
            self._effects(conn, fresh, now)
        duplicates = Counter(o.event_type for o in outcomes if o is not None and o.status == "duplicate")
        if duplicates:
            self._count(conn, {f"duplicates:{t}": n for t, n in duplicates.items()})
        return [o for o in outcomes if o is not None], fresh

    def _count(self, conn: Connection, increments: dict[str, int]) -> None:
        stmt = upsert(conn, counters)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={"value": counters.c.value + stmt.excluded.value}
        )
        conn.execute(stmt, [{"name": k, "value": v} for k, v in sorted(increments.items())])

    def _progress(self, conn: Connection, fresh: Iterable[_Accepted], now: datetime) -> None:
        per_node: dict[tuple[str, str], list[int]] = {}
        for accepted in fresh:
            seqs = per_node.setdefault((accepted.doc["store"], accepted.doc["node"]), [])
            seqs.append(accepted.doc["seq"])
        least, greatest = (
            (func.least, func.greatest) if conn.dialect.name == "postgresql" else (func.min, func.max)
        )
        stmt = upsert(conn, node_progress)
        stmt = stmt.on_conflict_do_update(
            index_elements=["store", "node"],
            set_={
                "first_seq": least(node_progress.c.first_seq, stmt.excluded.first_seq),
                "highest_seq": greatest(node_progress.c.highest_seq, stmt.excluded.highest_seq),
                "events": node_progress.c.events + stmt.excluded.events,
                "last_seen": stmt.excluded.last_seen,
            },
        )
        # sorted, so two workers lock the same rows in the same order (no deadlock between them)
        conn.execute(
            stmt,
            [
                {
                    "store": store,
                    "node": node,
                    "first_seq": min(seqs),
                    "highest_seq": max(seqs),
                    "events": len(seqs),
                    "last_seen": now,
                }
                for (store, node), seqs in sorted(per_node.items())
            ],
        )

    # -- effects of first-time events --------------------------------------------------------------------
    def _effects(self, conn: Connection, fresh: Sequence[_Accepted], now: datetime) -> None:
        seen: dict[str, tuple[datetime, str]] = {}
        for accepted in fresh:
            doc = accepted.doc
            if accepted.event_type == "identity":
                seen[doc["body"]["token"]] = (now, doc["store"])
            elif accepted.event_type == "signup":
                self._signup(conn, doc, now)
        if seen:
            self._touch_cards(conn, seen)
        sale_docs = [a.doc for a in fresh if a.event_type == "sale"]
        if sale_docs:
            self._sales(conn, sale_docs, now)
        for accepted in fresh:
            if accepted.event_type == "redemption":
                self._settle_redemption(conn, accepted.doc, now)

    def _settle_redemption(self, conn: Connection, doc: dict[str, Any], now: datetime) -> None:
        """A reward was handed over at a till: confirm the central approval, or book an offline one."""
        body = msgspec.convert(doc["body"], RedemptionBody)
        decided = conn.execute(
            select(redemptions.c.approved).where(redemptions.c.request_id == body.request_id)
        ).one_or_none()
        if decided is not None and decided.approved:
            conn.execute(
                redemptions.update()
                .where(redemptions.c.request_id == body.request_id)
                .values(event_id=doc["id"])
            )
            return
        # Offline (the node's daily allowance), or a central approval we have no record of (flagged in
        # the reason): the reward is gone either way, so its cost is booked now. The balance may go
        # below zero; later earning pays it back (docs/loyalty.md).
        account = self._account_for(conn, [body.customer.token, body.customer.code_token])
        reward = self.program.reward(body.reward)
        priced = reward.cost(body.points) if reward is not None else 0
        # what the till handed over is booked: a variable reward at the points it names, even when the
        # central receiver would have refused that number (the reason says so)
        cost = priced if isinstance(priced, int) else (body.points or 0)
        reason = "offline" if body.approval == "offline" else "unrecorded-central-approval"
        if isinstance(priced, str):
            reason = priced
        if reward is None:
            reason = "unknown-reward"
            log.warning(
                "redemption %s names unknown reward %r; recorded at no cost", body.request_id, body.reward
            )
        values = {
            "account": account,
            "reward": body.reward,
            "points": cost,
            "approved": True,
            "reason": reason,
            "approval": body.approval,
            "store": doc["store"],
            "node": doc["node"],
            "pos": body.pos,
            "decided_at": now,
            "event_id": doc["id"],
        }
        if decided is None:
            conn.execute(redemptions.insert().values(request_id=body.request_id, **values))
        else:  # declined centrally, handed over anyway (offline allowance after a timeout): the till decides
            conn.execute(
                redemptions.update().where(redemptions.c.request_id == body.request_id).values(**values)
            )
        if cost:
            conn.execute(
                ledger.insert().values(
                    account=account,
                    event_id=doc["id"],
                    ref=body.request_id,
                    kind="redeem",
                    points=-cost,
                    booked_at=now,
                    store=doc["store"],
                )
            )

    def _account_for(self, conn: Connection, tokens: Sequence[str | None]) -> str:
        """Whose points: the member a token is bound to, else the first token itself."""
        present = [t for t in tokens if t]
        rows = dict(
            conn.execute(select(cards.c.token, cards.c.member_token).where(cards.c.token.in_(present))).all()
        )
        for token in present:
            if rows.get(token):
                return str(rows[token])
        return present[0]

    def _touch_cards(self, conn: Connection, seen: dict[str, tuple[datetime, str]]) -> None:
        stmt = upsert(conn, cards)
        stmt = stmt.on_conflict_do_update(
            index_elements=["token"],
            set_={"last_seen": stmt.excluded.last_seen, "last_store": stmt.excluded.last_store},
        )
        conn.execute(
            stmt,
            [
                {
                    "token": token,
                    "member_token": None,
                    "status": "active",
                    "first_seen": at,
                    "last_seen": at,
                    "last_store": store,
                }
                for token, (at, store) in sorted(seen.items())
            ],
        )

    def _signup(self, conn: Connection, doc: dict[str, Any], now: datetime) -> None:
        body = msgspec.convert(doc["body"], SignupBody)
        joined = _parse_ts(doc["ts"])
        conn.execute(
            upsert(conn, members).on_conflict_do_nothing(index_elements=["member_token"]),
            {
                "member_token": body.member_token,
                "joined_at": joined,
                "store": doc["store"],
                "node": doc["node"],
                "event_id": doc["id"],
                "language": body.language,
                "heard_via": body.heard_via,
                "marketing_email": body.consent.marketing_email,
                "marketing_sms": body.consent.marketing_sms,
                "notice_version": body.consent.notice_version,
                "consent_at": joined,
                "tier": self.program.tiers[0].name,
                "tier_since": joined,
            },
        )
        tokens = [body.member_token] + ([body.card_token] if body.card_token else [])
        for token in tokens:
            self._bind(conn, token, body.member_token, doc, now)

    def _bind(
        self, conn: Connection, token: str, member_token: str, doc: dict[str, Any], now: datetime
    ) -> None:
        if not bind_token(conn, token, member_token, now=now, store=doc["store"], event_id=doc["id"]):
            log.warning("card already bound to another member; sign-up %s keeps it unbound", doc["id"])

    def _sales(self, conn: Connection, docs: Sequence[dict[str, Any]], now: datetime) -> None:
        bodies = [msgspec.convert(doc["body"], SaleBody) for doc in docs]
        tokens = {b.customer.token for b in bodies if b.customer} | {
            b.customer.code_token for b in bodies if b.customer and b.customer.code_token
        }
        # token -> (member token, tier) for tokens bound to a member (cards, and member codes themselves)
        bound: dict[str, tuple[str, str | None]] = {}
        if tokens:
            rows = conn.execute(
                select(cards.c.token, cards.c.member_token, members.c.tier)
                .select_from(cards.join(members, cards.c.member_token == members.c.member_token))
                .where(cards.c.token.in_(sorted(tokens)))
            ).all()
            bound = {token: (member, tier) for token, member, tier in rows}
        member_accounts = {member for member, _tier in bound.values()}
        sale_rows: list[dict[str, Any]] = []
        line_rows: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        for doc, body in zip(docs, bodies, strict=True):
            account: str | None = None
            tier: str | None = None
            if body.customer is not None:
                candidates = [body.customer.token, body.customer.code_token]
                known = [bound[t] for t in candidates if t and t in bound]
                account, tier = known[0] if known else (body.customer.token, None)
            sold_at = _parse_ts(body.sold_at or doc["ts"])
            points = points_for(body.lines, body.discount, tier, self._rules, at=sold_at) if account else 0
            sale_rows.append(
                {
                    "event_id": doc["id"],
                    "store": doc["store"],
                    "node": doc["node"],
                    "pos": body.pos,
                    "receipt": body.receipt,
                    "sold_at": sold_at,
                    "total": body.total,
                    "discount": body.discount,
                    "currency": body.currency,
                    "payment": body.payment,
                    "customer_token": body.customer.token if body.customer else None,
                    "account": account,
                    "points": points,
                }
            )
            line_rows.extend(
                {
                    "event_id": doc["id"],
                    "line_no": n,
                    "gtin": line.gtin,
                    "sku": line.sku,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                    "category": line.category,
                }
                for n, line in enumerate(body.lines, start=1)
            )
            if account and points:
                entries.append(
                    {
                        "account": account,
                        "event_id": doc["id"],
                        "kind": "earn" if points > 0 else "return",
                        "points": points,
                        "booked_at": now,
                        "store": doc["store"],
                    }
                )
        conn.execute(sales.insert(), sale_rows)
        conn.execute(sale_lines.insert(), line_rows)
        if entries:
            conn.execute(ledger.insert(), entries)
        stamp_units: dict[tuple[str, str], int] = {}
        for row, body in zip(sale_rows, bodies, strict=True):
            if row["account"] is None:
                continue
            for card in self.program.stamp_cards:
                units = sum(line.quantity for line in body.lines if line.category in card.categories)
                if units:
                    key = (row["account"], card.id)
                    stamp_units[key] = stamp_units.get(key, 0) + units
        if stamp_units:
            add_stamps(conn, stamp_units)
        members_in_batch = {row["account"] for row in sale_rows if row["account"] in member_accounts}
        if members_in_batch:
            self._upgrade_tiers(conn, sorted(members_in_batch), now)

    def _upgrade_tiers(self, conn: Connection, accounts: list[str], now: datetime) -> None:
        """Raise members whose 12-month spend now reaches a higher tier (downgrades: ``loyalty maintain``)."""
        since = self.program.spend_window_start(now)
        spend = dict(
            conn.execute(
                select(sales.c.account, func.sum(sales.c.total))
                .where(sales.c.account.in_(accounts), sales.c.sold_at >= since)
                .group_by(sales.c.account)
            ).all()
        )
        current = dict(
            conn.execute(
                select(members.c.member_token, members.c.tier).where(members.c.member_token.in_(accounts))
            ).all()
        )
        for account in accounts:
            earned = self.program.tier_for(int(spend.get(account) or 0))
            if self.program.rank(earned) > self.program.rank(current.get(account)):
                conn.execute(
                    members.update()
                    .where(members.c.member_token == account)
                    .values(tier=earned, tier_since=now)
                )


def balance(engine: Engine, account: str) -> int:
    """The points balance of ``account`` (a member token, or a card's token before it joined)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.coalesce(func.sum(ledger.c.points), 0)).where(ledger.c.account == account)
            ).scalar_one()
        )
