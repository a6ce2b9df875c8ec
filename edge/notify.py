"""In-process notifications: what the kiosk screen and the till session learn the moment a device reports.

The outbox is for the central receiver; these are for the screens beside the till, which must react in
milliseconds and must not read the database to do it. Subscribers run in the device's thread, so they
only hand the notice on (to a queue, an SSE stream) and return; one that raises is logged, the others
still get the notice, and the device loop never sees the exception.

Notices carry tokens and classifications, never a raw UID or a scanned member code.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IdentityNotice:
    """A customer identified themselves: a card tap or a member-code scan (already an accepted event)."""

    source: Literal["nfc", "barcode"]
    token: str
    device: str
    card_type: str | None
    code_token: str | None
    event_id: str
    seq: int
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ScanNotice:
    """A scan that is not an identity: a product (GTIN), a reservation or a receipt code, or a rejection."""

    kind: Literal["gtin", "reservation", "receipt", "unknown", "rejected"]
    value: str | None  # the normalised code for gtin/reservation/receipt; None otherwise
    device: str
    error: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class AssistNotice:
    """The assistance button was pressed (already an accepted ``assist`` event)."""

    device: str
    event_id: str
    seq: int
    at: float = field(default_factory=time.time)


Notice = IdentityNotice | ScanNotice | AssistNotice
Subscriber = Callable[[Notice], object]


class Notifier:
    """A tiny synchronous publish/subscribe hub; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Register ``callback``; returns the function that unregisters it."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, notice: Notice) -> None:
        """Hand ``notice`` to every subscriber; a failing one is logged, never propagated."""
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(notice)
            except Exception:
                log.exception("a notification subscriber failed")
