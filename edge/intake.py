"""Turning device reports into business events: the rules live here, not in views or callbacks.

Every path ends the same way: the raw value (card UID, scanned code) is turned into a token here and
dropped; the event is durable in the outbox before anyone is told; the customer hears the result (a
beep) and the screens beside the till get an in-process notice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cloud_sync.codes import normalize_member_code
from cloud_sync.envelope import SignedMessage
from cloud_sync.errors import CloudSyncError
from cloud_sync.outbox import Outbox
from edge.devices.cardread import CardRead
from edge.identity import Pseudonymizer
from edge.notify import AssistNotice, IdentityNotice, Notifier, ScanNotice
from edge.scancodes import classify

log = logging.getLogger(__name__)

Signal = Literal["tap_ok", "unknown_card", "error", "assist"]
Feedback = Callable[[Signal], object]


@dataclass(frozen=True, slots=True)
class ScanOutcome:
    """What a scan became: an identity event (member codes) or only a notice (everything else)."""

    kind: str
    message: SignedMessage | None
    error: str | None = None


def _silent(_signal: Signal) -> None:
    """Feedback for a node without a buzzer."""


class Intake:
    """Pseudonymises identities, queues events durably, beeps, and tells the screens."""

    def __init__(
        self,
        outbox: Outbox,
        pseudonymizer: Pseudonymizer,
        *,
        notifier: Notifier | None = None,
        feedback: Feedback | None = None,
        receipt_prefix: str = "RC",
    ) -> None:
        self._outbox = outbox
        self._pseudonymizer = pseudonymizer
        self._notifier = notifier or Notifier()
        self._feedback = feedback or _silent
        self._receipt_prefix = receipt_prefix

    def card_tapped(self, card: CardRead) -> SignedMessage:
        """A card was presented; only its token (and its NDEF member code's token) go further."""
        token = self._pseudonymizer.card_token(card.uid)
        code_token = self._pseudonymizer.barcode_token(card.member_code) if card.member_code else None
        body: dict[str, object] = {"source": "nfc", "token": token, "device": card.reader[:64]}
        if card.card_type:
            body["card_type"] = card.card_type
        if code_token:
            body["code_token"] = code_token
        message = self._accept("identity", body)
        log.info("card tap (%s) queued as event seq %d", card.card_type, message.seq)
        self._feedback("tap_ok")
        self._notifier.publish(
            IdentityNotice("nfc", token, card.reader, card.card_type, code_token, message.id, message.seq)
        )
        return message

    def code_scanned(self, code: str, device: str) -> ScanOutcome:
        """A scan: a member code becomes an identity event; other codes only a notice for the screens."""
        scan = classify(code, receipt_prefix=self._receipt_prefix)
        if scan.error is not None:
            log.warning("scan on %s rejected: %s", device, scan.error)  # the reason, never the text
            return self._rejected(scan.kind if scan.kind != "unknown" else "rejected", scan.error, device)
        if scan.kind == "member":
            member = normalize_member_code(scan.value or "")
            assert member is not None  # classify() validated it
            token = self._pseudonymizer.barcode_token(member)
            message = self._accept("identity", {"source": "barcode", "token": token, "device": device[:64]})
            log.info("member scan queued as event seq %d", message.seq)
            self._feedback("tap_ok")
            self._notifier.publish(
                IdentityNotice("barcode", token, device, None, None, message.id, message.seq)
            )
            return ScanOutcome("member", message)
        if scan.kind == "unknown":
            log.info("scan on %s is not a code the node uses", device)
            self._feedback("error")
            self._notifier.publish(ScanNotice("unknown", None, device))
            return ScanOutcome("unknown", None, "not a product, member, reservation or receipt code")
        self._feedback("tap_ok")
        self._notifier.publish(ScanNotice(scan.kind, scan.value, device))
        return ScanOutcome(scan.kind, None)

    def scan_failed(self, reason: str, device: str) -> None:
        """The scanner's decoder rejected a scan (truncated, oversized, stray keys)."""
        log.warning("scan on %s rejected: %s", device, reason)
        self._rejected("rejected", reason, device)

    def card_failed(self, reason: str, reader: str) -> None:
        """A card could not be read (the reader back end has logged why)."""
        self._feedback("error")
        self._notifier.publish(ScanNotice("rejected", None, reader, reason))

    def assistance_requested(self, device: str) -> SignedMessage:
        """The assistance button was pressed."""
        message = self._accept("assist", {"source": "button", "device": device[:64]})
        log.info("assistance request queued as event seq %d", message.seq)
        self._feedback("assist")
        self._notifier.publish(AssistNotice(device, message.id, message.seq))
        return message

    def _accept(self, event_type: str, body: dict[str, object]) -> SignedMessage:
        try:
            return self._outbox.accept(event_type, body)
        except CloudSyncError:
            self._feedback("error")  # the customer must not walk away thinking it worked
            raise

    def _rejected(self, kind: str, reason: str, device: str) -> ScanOutcome:
        self._feedback("error")
        notice_kind = kind if kind in ("gtin", "reservation", "receipt", "unknown") else "rejected"
        self._notifier.publish(ScanNotice(notice_kind, None, device, reason))  # type: ignore[arg-type]
        return ScanOutcome(kind, None, reason)
