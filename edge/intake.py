"""Turning device reports into business events: the rules live here, not in views or callbacks."""

from __future__ import annotations

import logging

from cloud_sync.envelope import SignedMessage
from cloud_sync.outbox import Outbox
from edge.identity import Pseudonymizer

log = logging.getLogger(__name__)


class Intake:
    """Pseudonymises identities and queues events durably; every method returns the accepted event."""

    def __init__(self, outbox: Outbox, pseudonymizer: Pseudonymizer) -> None:
        self._outbox = outbox
        self._pseudonymizer = pseudonymizer

    def card_tapped(self, uid: bytes, device: str) -> SignedMessage:
        """A card was presented; only its token goes further (the UID is dropped here)."""
        token = self._pseudonymizer.card_token(uid)
        message = self._outbox.accept("identity", {"source": "nfc", "token": token, "device": device})
        log.info("card tap queued as event seq %d", message.seq)
        return message

    def code_scanned(self, code: str, device: str) -> SignedMessage:
        """A loyalty barcode was scanned; only its token goes further."""
        token = self._pseudonymizer.barcode_token(code)
        message = self._outbox.accept("identity", {"source": "barcode", "token": token, "device": device})
        log.info("member scan queued as event seq %d", message.seq)
        return message

    def assistance_requested(self, device: str) -> SignedMessage:
        """The assistance button was pressed."""
        message = self._outbox.accept("assist", {"source": "button", "device": device})
        log.info("assistance request queued as event seq %d", message.seq)
        return message
