"""Recording a sale from the paired POS: exactly once, durable before the answer, customer attached.

The POS names each sale by its receipt id (the ``Idempotency-Key`` header). The first request for a key
validates the sale, attaches the customer present at the till, computes the provisional points with the
central ledger's own rules (``cloud_sync.loyalty``) and commits the event **and** its answer in one
transaction (``Outbox.submit(receipt=…)``). A retry with the same key and the same sale gets the stored
answer and creates nothing; the same key with a different sale is a conflict (a till bug that must not
silently overwrite a sale). Requests for the same key are serialised, so two that race (a till that timed
out and retried while the first was still committing) also produce one event.

The stored answer holds no readable personal data: the member's first name is looked up again when a
retry is answered.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from cloud_sync.envelope import SignedMessage
from cloud_sync.loyalty import DEFAULT_RULES, EarnRules, points_for
from cloud_sync.outbox import Outbox, ReceiptSpec
from edge.errors import EdgeError
from edge.members import MemberDirectory
from edge.pos.sale import Sale, parse_sale
from edge.pos.till import Customer, TillSession

#: Receipts (and so idempotent retries) are kept this long; a till retries within minutes.
RECEIPT_RETENTION_S = 7 * 24 * 3600
_STRIPES = 64


class ReceiptConflict(EdgeError):  # noqa: N818 - reads as the outcome
    """The Idempotency-Key was used before for a different sale."""


@dataclass(frozen=True, slots=True)
class SaleResult:
    """The answer for the POS, and whether it is a stored one (a retry)."""

    response: dict[str, Any]
    replayed: bool


@dataclass(frozen=True, slots=True)
class RecordedSale:
    """What the screens hear about a recorded sale (points on the kiosk, the survey prompt)."""

    receipt: str
    customer: Customer | None
    points: int
    survey: bool


class SaleService:
    """Turns POS sale requests into durable ``sale`` events; thread-safe."""

    def __init__(
        self,
        outbox: Outbox,
        till: TillSession,
        members: MemberDirectory,
        *,
        rules: EarnRules = DEFAULT_RULES,
        on_recorded: Callable[[RecordedSale], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._till = till
        self._members = members
        #: replaced whole when the central receiver publishes new earn rules (a reference swap: atomic)
        self.rules = rules
        self._on_recorded = on_recorded
        self._clock = clock
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]

    def record(self, pos_id: str, receipt: str, raw: bytes) -> SaleResult:
        """Validate and record one sale; raises ``SaleInvalid``, ``ReceiptConflict`` or an outbox error."""
        sale = parse_sale(raw)
        fingerprint = hashlib.sha256(msgspec.json.encode(sale)).hexdigest()
        with self._stripes[hash((pos_id, receipt)) % _STRIPES]:
            stored = self._outbox.find_receipt(pos_id, receipt)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise ReceiptConflict(
                        f"receipt {receipt} was already recorded with a different sale; "
                        "use a new Idempotency-Key for a new sale"
                    )
                return SaleResult(self._reanswer(stored.response), replayed=True)
            return self._record_new(pos_id, receipt, sale, fingerprint)

    def prune(self) -> int:
        """Forget receipts past the retention period (the node calls this now and then)."""
        return self._outbox.prune_receipts(self._clock() - RECEIPT_RETENTION_S)

    def _record_new(self, pos_id: str, receipt: str, sale: Sale, fingerprint: str) -> SaleResult:
        customer = self._till.current()
        member = self._members.lookup(customer.token) if customer is not None else None
        # the sale time decides promotions, as in the ledger: the POS's sold_at, else now
        at = (
            datetime.fromisoformat(sale.sold_at.replace("Z", "+00:00")) if sale.sold_at else datetime.now(UTC)
        )
        points = points_for(sale.lines, sale.discount, member.tier if member else None, self.rules, at=at)
        body: dict[str, Any] = {
            "receipt": receipt,
            "pos": pos_id,
            "lines": sale.event_lines(),
            "total": sale.total,
            "currency": sale.currency,
            "payment": sale.payment,
        }
        if sale.discount:
            body["discount"] = sale.discount
        if sale.sold_at is not None:
            body["sold_at"] = sale.sold_at
        if sale.survey:
            body["survey"] = True
        if customer is not None:
            who: dict[str, Any] = {"source": customer.source, "token": customer.token}
            if customer.code_token is not None:
                who["code_token"] = customer.code_token
            body["customer"] = who
            body["points"] = points

        def respond(message: SignedMessage) -> bytes:
            stored: dict[str, Any] = {
                "receipt": receipt,
                "event_id": message.id,
                "seq": message.seq,
                "survey": sale.survey,
                "customer": None,
            }
            if customer is not None:
                stored["customer"] = {
                    "masked": customer.masked,
                    "source": customer.source,
                    "points_earned": points,
                    "member": None,
                }
                stored["_member_token"] = customer.token  # pseudonymous; swapped for the summary on replay
            answered[message.id] = json.dumps(stored, separators=(",", ":")).encode()
            return answered[message.id]

        answered: dict[str, bytes] = {}  # built once, with the event: stored and returned alike

        future = self._outbox.submit("sale", body, receipt=ReceiptSpec(pos_id, receipt, fingerprint, respond))
        message = future.result(timeout=30.0)
        if customer is not None:
            self._till.consume(customer)
        if self._on_recorded is not None:
            self._on_recorded(RecordedSale(receipt, customer, points if customer else 0, sale.survey))
        return SaleResult(self._reanswer(answered[message.id]), replayed=False)

    def _reanswer(self, stored: bytes) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(stored)
        token = answer.pop("_member_token", None)
        if token is not None and answer.get("customer") is not None:
            member = self._members.lookup(token)
            answer["customer"]["member"] = member.public() if member is not None else None
        return answer
