"""Reservation pick-up at the till: the cashier scans (or types) the reservation code, the node records it.

Once per code: the pick-up is committed as a ``pickup`` event together with its answer, keyed by the code
(scope: this node), so a second scan of the same slip — at this till or another — returns the first
answer instead of recording the product as collected twice. The code's Damm check digit catches a
mistyped digit before anything is recorded.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from cloud_sync.codes import reservation_code_is_valid
from cloud_sync.envelope import SignedMessage
from cloud_sync.outbox import Outbox, ReceiptSpec
from edge.pos.sale import FieldError, SaleInvalid, optional_receipt, small_object

_SCOPE = "node"  # a slip is collected once per node, whichever till scans it


@dataclass(frozen=True, slots=True)
class PickupResult:
    """The answer for the POS, and whether it is the stored one (the slip was scanned before)."""

    response: dict[str, Any]
    replayed: bool


def parse_pickup(code: str, raw: bytes) -> tuple[str, str | None]:
    """The normalised code and the optional ``{"receipt": …}`` body; SaleInvalid names each bad field."""
    errors: list[FieldError] = []
    normalised = code.strip().upper() if len(code) <= 16 else ""
    if not reservation_code_is_valid(normalised):
        errors.append(
            FieldError("/code", "not a valid reservation code (R + 8 digits; the last is a check digit)")
        )
    receipt = None
    if raw.strip():
        shape = "the body, when sent, must be a JSON object of at most 1 KiB"
        doc, problems = small_object(raw, frozenset({"receipt"}), 1024, shape)
        errors += problems
        if doc is not None:
            receipt = optional_receipt(doc, errors)
    if errors:
        raise SaleInvalid(errors)
    return normalised, receipt


class PickupService:
    """Records pick-ups once per code; thread-safe."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._lock = threading.Lock()  # pick-ups are rare: one lock is plenty

    def pick_up(self, pos_id: str, code: str, raw: bytes) -> PickupResult:
        """Record the pick-up of ``code`` (or return the earlier answer for it)."""
        normalised, receipt = parse_pickup(code, raw)
        key = "pickup:" + normalised
        with self._lock:
            stored = self._outbox.find_receipt(_SCOPE, key)
            if stored is not None:
                return PickupResult(json.loads(stored.response), replayed=True)
            body: dict[str, Any] = {"code": normalised, "pos": pos_id}
            if receipt is not None:
                body["receipt"] = receipt

            def respond(message: SignedMessage) -> bytes:
                answer = {
                    "code": normalised,
                    "event_id": message.id,
                    "pos": pos_id,
                    "picked_up_at": message.ts,
                }
                answered[message.id] = json.dumps(answer, separators=(",", ":")).encode()
                return answered[message.id]

            answered: dict[str, bytes] = {}  # built once, with the event: stored and returned alike

            future = self._outbox.submit(
                "pickup", body, receipt=ReceiptSpec(_SCOPE, key, normalised, respond)
            )
            message = future.result(timeout=30.0)
        return PickupResult(json.loads(answered[message.id]), replayed=False)
