"""Reward redemptions at the till: approved by the central receiver, or under a small offline allowance.

Points live in the central ledger, so a reward is handed over only when the central receiver says yes:
the node asks over MQTT v5 request/response (``Relay.request``: correlation data, a reply topic, a
message expiry equal to the timeout, about 3 s). When the broker is unreachable or the answer does not
come in time the till must still give an answer at once: declined with the reason — unless the chain
allows an **offline allowance** (``pos.offline_redemptions_per_day`` per member per day, default 1; 0 turns
it off), counted durably on the node, so a till cut off from the network can still honour a regular's
coffee. Every redemption handed over, online or offline, becomes a durable ``redemption`` event committed
together with the till's receipt (so a retry returns the same answer and hands over nothing twice); the
central receiver settles offline ones when they arrive and de-duplicates on ``request_id``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_sync.envelope import SignedMessage
from cloud_sync.errors import EnvelopeError
from cloud_sync.messages import decode_reply
from cloud_sync.outbox import Outbox, ReceiptSpec
from cloud_sync.relay import RequestUnavailable
from edge.errors import EdgeError
from edge.pos.sale import FieldError, SaleInvalid, optional_receipt, small_object
from edge.pos.sales import ReceiptConflict
from edge.pos.till import Customer, TillSession

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 3.0
_REWARD = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")
_STRIPES = 32

#: (topic, payload, timeout) -> reply payload; raises RequestUnavailable or TimeoutError
Requester = Callable[[str, bytes, float], bytes]


class NoMemberPresent(EdgeError):  # noqa: N818 - reads as the condition
    """A redemption needs a member at the till (tap, scan or typed code) first."""


@dataclass(frozen=True, slots=True)
class RedemptionResult:
    """The answer for the POS, and whether it is a stored one (a retry)."""

    response: dict[str, Any]
    replayed: bool


@dataclass(frozen=True, slots=True)
class _Ask:
    """Who asks, under which idempotency receipt, for which request (fingerprint)."""

    pos_id: str
    scope_key: str
    fingerprint: str


class OfflineAllowance:
    """Redemptions handed over without the central receiver's approval, per member token and day."""

    def __init__(self, path: Path, per_day: int, *, today: Callable[[], dt.date] = dt.date.today) -> None:
        self.per_day = per_day
        self._today = today
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS offline_redemptions "
            "(token TEXT NOT NULL, day TEXT NOT NULL, used INTEGER NOT NULL, PRIMARY KEY (token, day))"
        )

    def take(self, token: str) -> bool:
        """Use one of today's offline redemptions for ``token``; False when none is left."""
        if self.per_day <= 0:
            return False
        day = self._today().isoformat()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT used FROM offline_redemptions WHERE token = ? AND day = ?", (token, day)
                ).fetchone()
                used = int(row[0]) if row else 0
                if used >= self.per_day:
                    self._conn.execute("ROLLBACK")
                    return False
                self._conn.execute(
                    "INSERT INTO offline_redemptions VALUES (?, ?, 1) "
                    "ON CONFLICT(token, day) DO UPDATE SET used = used + 1",
                    (token, day),
                )
                # yesterday's counts are of no use any more: keep the table small
                self._conn.execute("DELETE FROM offline_redemptions WHERE day < ?", (day,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return True

    def give_back(self, token: str) -> None:
        """Undo one ``take`` of today (the hand-over could not be recorded, so it did not happen)."""
        day = self._today().isoformat()
        with self._lock:
            self._conn.execute(
                "UPDATE offline_redemptions SET used = used - 1 WHERE token = ? AND day = ? AND used > 0",
                (token, day),
            )

    def close(self) -> None:
        """Release the database. Idempotent."""
        with self._lock:
            self._conn.close()


MAX_SPEND_POINTS = 10_000_000


def parse_redemption(raw: bytes) -> tuple[str, str | None, int | None]:
    """The request body ``{"reward": "coffee", "receipt": "RC-1"?, "points": 500?}``; SaleInvalid names each
    bad field. ``points`` is for a variable reward (the member spends a chosen number of points); whether
    the reward takes it is the central receiver's decision."""
    doc, errors = small_object(
        raw,
        frozenset({"reward", "receipt", "points"}),
        4096,
        "the body must be a JSON object of at most 4 KiB",
    )
    if doc is None:
        raise SaleInvalid(errors)
    receipt = optional_receipt(doc, errors)
    reward = doc.get("reward")
    if not isinstance(reward, str) or not _REWARD.match(reward):
        errors.append(
            FieldError("/reward", "reward must be a reward id: 1-32 lower-case letters, digits, _ or -")
        )
    points = doc.get("points")
    if "points" in doc and (  # null is refused like a null receipt: leave the member out instead
        not isinstance(points, int) or isinstance(points, bool) or not 1 <= points <= MAX_SPEND_POINTS
    ):
        errors.append(FieldError("/points", f"points must be an integer from 1 to {MAX_SPEND_POINTS:,}"))
    if errors:
        raise SaleInvalid(errors)
    return str(reward), receipt, points


class RedemptionService:
    """Asks, falls back, records; thread-safe."""

    def __init__(
        self,
        outbox: Outbox,
        till: TillSession,
        requester: Requester,
        request_topic: str,
        allowance: OfflineAllowance,
        *,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self._outbox = outbox
        self._till = till
        self._request = requester
        self._topic = request_topic
        self._allowance = allowance
        self._timeout = timeout
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]

    def redeem(self, pos_id: str, key: str, raw: bytes) -> RedemptionResult:
        """Approve (centrally or offline) and record, or decline with the reason."""
        reward, receipt, points = parse_redemption(raw)
        scope_key = "redeem:" + key
        fingerprint = hashlib.sha256(json.dumps([reward, receipt, points]).encode()).hexdigest()
        with self._stripes[hash((pos_id, key)) % _STRIPES]:
            # a retry is answered from its receipt even when the member has left the till meanwhile
            stored = self._outbox.find_receipt(pos_id, scope_key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise ReceiptConflict(
                        f"Idempotency-Key {key} was used for another redemption; use a new key"
                    )
                return RedemptionResult(json.loads(stored.response), replayed=True)
            customer = self._till.current()
            if customer is None:
                raise NoMemberPresent("no member is present at this till: tap, scan or type their code first")
            return self._decide(_Ask(pos_id, scope_key, fingerprint), reward, receipt, customer, points)

    def _decide(
        self, ask: _Ask, reward: str, receipt: str | None, customer: Customer, points: int | None = None
    ) -> RedemptionResult:
        pos_id = ask.pos_id
        request_id = uuid.uuid4().hex
        who: dict[str, Any] = {"source": customer.source, "token": customer.token}
        if customer.code_token is not None:
            who["code_token"] = customer.code_token
        body: dict[str, Any] = {"request_id": request_id, "reward": reward, "pos": pos_id, "customer": who}
        if receipt is not None:
            body["receipt"] = receipt
        if points is not None:
            body["points"] = points
        request = self._outbox.seal_request("redemption_request", body)
        try:
            reply = decode_reply(self._request(self._topic, request.payload, self._timeout))
        except (RequestUnavailable, TimeoutError) as exc:
            why = "timeout" if isinstance(exc, TimeoutError) else "offline"
            log.warning("redemption %s: central receiver unavailable (%s)", request_id, exc)
            # a chosen number of points is never spent blind: only fixed rewards have an offline allowance
            if points is not None or not self._allowance.take(customer.token):
                return self._declined(request_id, reward, why)
            log.info("redemption %s approved under the offline allowance", request_id)
            try:
                return self._record(ask, body, "offline", None)
            except BaseException:
                self._allowance.give_back(customer.token)  # not recorded, not handed over: not used up
                raise
        except EnvelopeError as exc:
            log.error("redemption %s: malformed reply from the central receiver: %s", request_id, exc)
            return self._declined(request_id, reward, "central-error")
        if reply.request_id != request_id:
            log.error("redemption %s: the reply is for request %s", request_id, reply.request_id)
            return self._declined(request_id, reward, "central-error")
        if not reply.approved:
            return self._declined(request_id, reward, reply.reason or "declined", reply.points_balance)
        return self._record(ask, body, "central", reply.points_balance)

    def _declined(
        self, request_id: str, reward: str, reason: str, balance: int | None = None
    ) -> RedemptionResult:
        answer = {"approved": False, "request_id": request_id, "reward": reward, "reason": reason}
        if balance is not None:
            answer["points_balance"] = balance
        return RedemptionResult(answer, replayed=False)

    def _record(
        self, ask: _Ask, body: dict[str, Any], approval: str, balance: int | None
    ) -> RedemptionResult:
        event = {**body, "approval": approval}

        def respond(message: SignedMessage) -> bytes:
            answer: dict[str, Any] = {
                "approved": True,
                "request_id": body["request_id"],
                "reward": body["reward"],
                "approval": approval,
                "event_id": message.id,
            }
            if "points" in body:
                answer["points"] = body["points"]
            if balance is not None:
                answer["points_balance"] = balance
            answered[message.id] = json.dumps(answer, separators=(",", ":")).encode()
            return answered[message.id]

        answered: dict[str, bytes] = {}  # built once, with the event: stored and returned alike
        future = self._outbox.submit(
            "redemption", event, receipt=ReceiptSpec(ask.pos_id, ask.scope_key, ask.fingerprint, respond)
        )
        message = future.result(timeout=30.0)
        return RedemptionResult(json.loads(answered[message.id]), replayed=False)
