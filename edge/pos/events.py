"""Live events for the cashier's screen: ``GET /pos/v1/events`` (Server-Sent Events) and its console page.

The screen beside the till must learn within a second that a customer identified themselves, what was
scanned, that someone pressed the assistance button, or that the node is in trouble (outbox full, reader
missing), without polling. Each open screen holds one SSE stream with its own small queue, as on the kiosk
(``kiosk_ui.live``): a screen that stops reading loses its oldest events and never blocks the device thread
that publishes; the number of streams is bounded (the oldest is ended when all slots are taken) because each
holds a server thread; ``close`` ends them all so the HTTP server can stop.

On connect a stream gets the current state first (``customer``, ``alarms``), then every change. What goes
out is already safe for the screen: the customer only masked (``…3f9a1c``), scans only classified (a value
only for products, reservations and receipts, never the text of an unknown or rejected scan, and member
codes never: they arrive as a customer), never a card UID, identity token or bearer token.

The bearer token is checked at connect by the POS API's guard and again before every event and keep-alive,
so revoking a till (``kiosk-edge pos revoke``) or pairing it again ends its stream at once.

Events (``event:`` name, JSON ``data:``): ``customer`` ``{present, masked, source, expires_in_s}`` (only
``{present: false}`` when nobody is), ``scan`` ``{kind, value?, error?}``, ``assist`` ``{device}``, ``alarms``
``{active: [...]}``, and ``end`` ``{reason}`` (``revoked``, ``evicted``, ``shutdown``) just before the node
ends a stream.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Literal

from flask import Flask, Response, g, request

from edge.admin import problem
from edge.notify import AssistNotice, Notice, Notifier, ScanNotice
from edge.pos.till import Customer

if TYPE_CHECKING:
    from edge.pos.pairing import Pairing
    from edge.pos.till import TillSession

log = logging.getLogger(__name__)

#: Concurrent streams: a till's screen needs one; a screen that was switched off lingers until a write fails.
MAX_STREAMS: Final = 4
#: A comment this often lets the server notice a closed screen (it only notices when it writes), and is
#: when the till's token is checked again while nothing happens.
KEEPALIVE_S: Final = 15.0
QUEUE_SIZE: Final = 32

EVENTS_PATH: Final = "/pos/v1/events"
CONSOLE_PATH: Final = "/pos/console"
CONSOLE_ASSETS: Final = {
    f"{CONSOLE_PATH}/console.js": ("static/console.js", "text/javascript"),
    f"{CONSOLE_PATH}/console.css": ("static/console.css", "text/css"),
}
#: Served without a token: a static shell with no data in it, which asks for the till's token itself.
CONSOLE_PATHS: Final = frozenset({CONSOLE_PATH, *CONSOLE_ASSETS})
CONSOLE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

EndReason = Literal["revoked", "evicted", "shutdown"]

# What a scan's value may look like on the screen (normalised by ``edge.scancodes``); anything else is
# dropped, so a classification mistake upstream cannot put a member code or free text on the screen.
_SHOWN_VALUES: Final = {
    "gtin": re.compile(r"[0-9]{14}", re.ASCII),
    "reservation": re.compile(r"R[0-9]{8}", re.ASCII),
    "receipt": re.compile(r"[0-9A-Z][0-9A-Z-]{4,47}", re.ASCII),
}
_ALARM: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.ASCII)
_MAX_TEXT: Final = 120


class FeedClosed(Exception):  # noqa: N818 - reads as a condition
    """The feed is closed (the node is stopping): no new streams."""


@dataclass(frozen=True, slots=True)
class _End:
    reason: EndReason


_Item = str | _End


class _Mailbox:
    """One stream's queue: bounded, the oldest entry dropped when full, ``put`` never blocks."""

    __slots__ = ("_items", "_ready")

    def __init__(self, size: int) -> None:
        self._items: deque[_Item] = deque(maxlen=size)
        self._ready = threading.Event()

    def put(self, item: _Item) -> bool:
        """Add ``item``; True if the oldest entry was dropped to make room."""
        full = len(self._items) == self._items.maxlen
        self._items.append(item)
        self._ready.set()
        return full

    def get(self, timeout: float) -> _Item | None:
        """The oldest entry, or None when none came within ``timeout`` seconds (or on a spurious wake-up)."""
        if not self._items:
            self._ready.wait(timeout)
        self._ready.clear()  # before popping: an entry added after this sets it again
        try:
            return self._items.popleft()
        except IndexError:
            return None


def sse(event: str, data: dict[str, Any]) -> str:
    """One Server-Sent Event; ``json.dumps`` escapes line breaks, so ``data`` is always a single line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _text(value: object, fallback: str) -> str:
    """A short printable string for the screen (device names and error reasons), or ``fallback``."""
    if not isinstance(value, str) or not value or not value.isprintable():
        return fallback
    return value[:_MAX_TEXT]


def customer_data(customer: Customer | None, now: float) -> dict[str, Any]:
    """The ``customer`` event: masked, never the token."""
    if customer is None:
        return {"present": False}
    return {
        "present": True,
        "masked": customer.masked,
        "source": customer.source,
        "expires_in_s": max(0, round(customer.expires - now)),
    }


def scan_data(notice: ScanNotice) -> dict[str, Any]:
    """The ``scan`` event: the classification, a value only where the screen may show one."""
    data: dict[str, Any] = {"kind": notice.kind}
    pattern = _SHOWN_VALUES.get(notice.kind)
    if pattern is not None and notice.value is not None and pattern.fullmatch(notice.value):
        data["value"] = notice.value
    if notice.error is not None:
        data["error"] = _text(notice.error, "rejected")
    return data


class CashierFeed:
    """The cashier screen's events: notices and till changes in, SSE streams out; thread-safe.

    Wiring: ``CashierFeed(notifier)``; the till is created with ``on_change=feed.customer_changed`` and
    then given to ``feed.follow(till)``; the node calls ``set_alarms`` with its active alarms (repeated
    calls with the same list send nothing); ``close`` before the HTTP server stops.
    """

    def __init__(
        self,
        notifier: Notifier | None = None,
        *,
        keepalive: float = KEEPALIVE_S,
        max_streams: int = MAX_STREAMS,
        queue_size: int = QUEUE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if keepalive <= 0 or max_streams < 1 or queue_size < 4:
            raise ValueError("keepalive must be positive, max_streams at least 1, queue_size at least 4")
        self._keepalive = keepalive
        self._max_streams = max_streams
        self._queue_size = queue_size
        self._now = clock
        self._current: Callable[[], Customer | None] | None = None
        self._lock = threading.Lock()
        self._streams: list[_Mailbox] = []
        self._customer: Customer | None = None
        self._alarms: tuple[str, ...] = ()
        self._closed = False
        self.evicted = 0
        self.dropped = 0
        self._unsubscribe = notifier.subscribe(self._on_notice) if notifier is not None else None

    # -- sources (any thread; none of them blocks) ---------------------------------------------------

    def follow(self, till: TillSession) -> None:
        """Show ``till``'s customer: read it back on every change (so two changes racing each other end
        with the till's real state on the screen) and count down on the till's clock."""
        with self._lock:
            self._current = till.current
            self._now = till.now
            self._customer = till.current()

    def customer_changed(self, customer: Customer | None) -> None:
        """``TillSession``'s ``on_change``: a customer became present, or was cleared or consumed."""
        with self._lock:
            if self._current is not None:
                customer = self._current()  # under our lock: the last change wins, whatever the threads
            if customer is self._customer:
                return
            self._customer = customer
            self._broadcast("customer", customer_data(customer, self._now()))

    def set_alarms(self, alarms: Iterable[str]) -> None:
        """The node's active alarms (``outbox_full``, ``nfc-reader_absent``…); sent only when they change."""
        active: list[str] = []
        for alarm in alarms:
            if isinstance(alarm, str) and _ALARM.fullmatch(alarm) and alarm not in active:
                active.append(alarm)
            else:
                log.debug("cashier feed: alarm name %r not shown", str(alarm)[:80])
        with self._lock:
            if tuple(active) == self._alarms:
                return
            self._alarms = tuple(active)
            self._broadcast("alarms", {"active": active})

    def _on_notice(self, notice: Notice) -> None:
        if isinstance(notice, ScanNotice):
            event, data = "scan", scan_data(notice)
        elif isinstance(notice, AssistNotice):
            event, data = "assist", {"device": _text(notice.device, "button")}
        else:
            return  # an identity: it reaches the screen as the till's customer (masked), not from here
        with self._lock:
            self._broadcast(event, data)

    def _broadcast(self, event: str, data: dict[str, Any]) -> None:
        """Queue one event on every stream (caller holds the lock): a full queue loses its oldest entry.

        Queuing under the lock keeps every stream's order the order of the state changes; it never blocks.
        """
        message = sse(event, data)
        for stream in self._streams:
            if stream.put(message):
                self.dropped += 1

    def _expire(self) -> None:
        """The present customer's window has passed: tell the screens (the till forgets them silently)."""
        with self._lock:
            customer = self._customer
            if customer is None or self._now() < customer.expires:
                return
            self._customer = None
            self._broadcast("customer", {"present": False})

    def _seconds_left(self) -> float | None:
        with self._lock:
            customer = self._customer
            return None if customer is None else customer.expires - self._now()

    # -- to the screens --------------------------------------------------------------------------------

    def stream(self, allowed: Callable[[], bool] | None = None) -> Iterator[str]:
        """An SSE body for one screen; ``allowed`` is asked before every event and keep-alive (the till's
        token still valid?) and ends the stream when it says no. Raises ``FeedClosed`` once closed."""
        with self._lock:
            if self._closed:
                raise FeedClosed("the node is stopping")
        return self._serve(allowed)

    def _serve(self, allowed: Callable[[], bool] | None) -> Iterator[str]:
        mine = _Mailbox(self._queue_size)
        with self._lock:  # the state and the registration together: no change is missed or sent twice
            if self._closed:
                yield sse("end", {"reason": "shutdown"})
                return
            if len(self._streams) >= self._max_streams:
                # The newest screen is the one someone is looking at: end the oldest (likely switched off,
                # its stream lingering until the next write fails) rather than refusing the new one.
                self.evicted += 1
                self._streams.pop(0).put(_End("evicted"))
            self._streams.append(mine)
            hello = (
                ": connected\n\n"
                + sse("customer", customer_data(self._live_customer(), self._now()))
                + sse("alarms", {"active": list(self._alarms)})
            )
        try:
            yield hello
            next_beat = time.monotonic() + self._keepalive
            while True:
                wait = next_beat - time.monotonic()
                left = self._seconds_left()
                if left is not None:
                    wait = min(wait, left + 0.05)
                item = mine.get(max(0.01, wait))
                if item is None:
                    self._expire()
                    if time.monotonic() < next_beat:
                        continue
                    if not _still(allowed):
                        yield sse("end", {"reason": "revoked"})
                        return
                    yield ": keep-alive\n\n"
                    next_beat = time.monotonic() + self._keepalive
                    continue
                if isinstance(item, _End):
                    yield sse("end", {"reason": item.reason})
                    return
                if not _still(allowed):
                    yield sse("end", {"reason": "revoked"})
                    return
                yield item
        finally:
            with self._lock:
                if mine in self._streams:
                    self._streams.remove(mine)

    def _live_customer(self) -> Customer | None:
        """The present customer for a new screen (caller holds the lock).

        Read, never stored: a change whose ``on_change`` is on its way, or an expiry, is still sent to
        every other screen by ``customer_changed`` / ``_expire``.
        """
        customer = self._current() if self._current is not None else self._customer
        if customer is not None and self._now() >= customer.expires:
            return None
        return customer

    @property
    def open_streams(self) -> int:
        """How many screens are listening."""
        with self._lock:
            return len(self._streams)

    def close(self) -> None:
        """Unsubscribe and end every stream (so the HTTP server can stop without waiting). Idempotent."""
        with self._lock:
            self._closed = True
            streams, self._streams = self._streams, []
            unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        for stream in streams:
            stream.put(_End("shutdown"))


def _still(allowed: Callable[[], bool] | None) -> bool:
    if allowed is None:
        return True
    try:
        return allowed()
    except Exception:  # e.g. the pairing database closed under a stopping node: stop serving
        log.exception("cashier feed: could not check the till's token; ending its stream")
        return False


def _asset(name: str) -> bytes:
    return resources.files("edge.pos").joinpath(name).read_bytes()


def register_events(app: Flask, feed: CashierFeed, pairing: Pairing) -> None:
    """Add ``GET /pos/v1/events`` (behind the API's token guard) and the public console shell to ``app``."""
    from edge.pos.api import PROBLEM_BASE  # here: edge.pos.api imports this module

    page = _asset("templates/console.html")
    assets = {path: (_asset(name), mimetype) for path, (name, mimetype) in CONSOLE_ASSETS.items()}

    @app.get(EVENTS_PATH)
    def events() -> Response:
        # The guard has accepted this token; keep it (in memory only) to ask again while streaming.
        token = request.headers.get("Authorization", "").partition(" ")[2].strip()
        pos_id: str = g.pos_id

        def still_paired() -> bool:
            return pairing.authenticate(token) == pos_id

        try:
            body = feed.stream(still_paired)
        except FeedClosed as exc:
            response = problem(503, "Not available", str(exc), type=PROBLEM_BASE + "stopping")
            response.headers["Retry-After"] = "5"
            return response
        log.info("POS %s opened the cashier events stream", pos_id)
        response = Response(body, mimetype="text/event-stream")
        response.headers["X-Accel-Buffering"] = "no"  # a reverse proxy must not hold events back
        return response

    def _static(body: bytes, mimetype: str) -> Response:
        response = Response(body, mimetype=mimetype)
        response.headers["Content-Security-Policy"] = CONSOLE_CSP
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.get(CONSOLE_PATH)
    def console() -> Response:
        return _static(page, "text/html")

    for path, (body, mimetype) in assets.items():
        endpoint = f"console_{path.rsplit('.', 1)[1]}"
        app.add_url_rule(path, endpoint, functools.partial(_static, body, mimetype), methods=["GET"])
