"""Reserving a product at the kiosk for pick-up in this store: the rules, outside the Flask views."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from cloud_sync.envelope import SignedMessage
from cloud_sync.outbox import Outbox
from edge.membercodes import MemberCodeIssuer
from edge.scancodes import classify
from edge.signup import Vault

log = logging.getLogger(__name__)

MAX_QUANTITY = 20
MAX_DAYS_AHEAD = 30


def parse_item(text: str) -> tuple[str | None, str | None]:
    """``(gtin, sku)`` for what was scanned or typed: a GTIN with a valid check digit, or a store SKU."""
    value = text.strip()
    scan = classify(value) if value else None
    if scan is not None and scan.kind == "gtin":
        return (scan.value, None) if scan.error is None else (None, None)
    if (
        value
        and len(value) <= 32
        and value.replace("-", "").replace(".", "").replace("_", "").isalnum()
        and value.isascii()
    ):
        return None, value.upper()
    return None, None


def pickup_window(today: dt.date) -> tuple[dt.date, dt.date]:
    """The first and last pick-up date a customer may choose (tomorrow to 30 days ahead)."""
    return today + dt.timedelta(days=1), today + dt.timedelta(days=MAX_DAYS_AHEAD)


@dataclass(frozen=True, slots=True)
class ReservationRequest:
    """A validated reservation (the form layer checked every field)."""

    gtin: str | None
    sku: str | None
    quantity: int
    pickup_date: dt.date
    name: str
    email: str | None
    phone: str | None
    language: str

    def __post_init__(self) -> None:
        if not (self.gtin or self.sku):
            raise ValueError("a reservation needs a product")
        if not 1 <= self.quantity <= MAX_QUANTITY:
            raise ValueError(f"quantity must be 1..{MAX_QUANTITY}")
        if not (self.email or self.phone):
            raise ValueError("a reservation needs an e-mail address or a phone number")

    def __repr__(self) -> str:  # never print personal data, even in a traceback
        return "ReservationRequest(<personal data hidden>)"


@dataclass(frozen=True, slots=True)
class Reservation:
    """What the customer sees: the confirmation code."""

    code: str
    message: SignedMessage


class ReservationService:
    """Issues the reservation code, seals name and contact, queues the ``reservation`` event."""

    def __init__(self, outbox: Outbox, issuer: MemberCodeIssuer, vault: Vault) -> None:
        self._outbox = outbox
        self._issuer = issuer
        self._vault = vault

    def reserve(self, request: ReservationRequest, member_token: str | None) -> Reservation:
        """Reserve; ``member_token`` is the identified customer (a tap or member scan just before), if any."""
        code = self._issuer.issue_reservation()
        personal = {"name": request.name, "reservation_code": code}
        if request.email:
            personal["email"] = request.email
        if request.phone:
            personal["phone"] = request.phone
        item: dict[str, object] = {"quantity": request.quantity}
        if request.gtin:
            item["gtin"] = request.gtin
        else:
            item["sku"] = request.sku
        body: dict[str, object] = {
            "code": code,
            "item": item,
            "pickup_date": request.pickup_date.isoformat(),
            "language": request.language,
            "sealed": self._vault.seal(personal),
            "vault_key": self._vault.key_id,
        }
        if member_token:
            body["member_token"] = member_token
        message = self._outbox.accept("reservation", body)
        log.info("reservation %s queued as event seq %d", code, message.seq)
        return Reservation(code, message)
