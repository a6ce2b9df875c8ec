"""Live updates for the kiosk screen: device notices in, Server-Sent Events out.

The screen must react to a tap within a second without polling, so each open page holds one SSE stream
fed from the node's in-process ``Notifier``. Each stream has its own small queue: a page that stops
reading (a crashed tab) loses its oldest updates, never blocks the device thread that publishes. The
number of streams is bounded because every stream holds one server thread.

The screen never learns who tapped: an SSE event says only what to show (``pending`` / ``unknown``),
and the "current visitor" kept here for ``/welcome`` is a token with a time, forgotten after the idle
timeout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from edge.notify import IdentityNotice, Notice, Notifier, ScanNotice

log = logging.getLogger(__name__)

#: Concurrent SSE streams; the kiosk browser needs one, pages it just left linger until a write fails.
MAX_STREAMS = 4
#: A comment line this often lets the server notice a closed page (it only notices when it writes).
KEEPALIVE_S = 15.0
QUEUE_SIZE = 16

VisitorState = Literal["pending", "unknown"]


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who is at the screen right now, as far as the screen needs to know."""

    state: VisitorState
    source: str
    token: str  # pseudonymous; used only to look the member up, never rendered
    at: float


class TooManyStreams(Exception):  # noqa: N818 - reads as a condition, like queue.Full
    """Every stream slot is taken."""


class LiveFeed:
    """Owns the subscription to the notifier and the open streams; ``close`` ends them all."""

    def __init__(
        self,
        notifier: Notifier | None,
        idle_timeout: float,
        *,
        keepalive: float = KEEPALIVE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_timeout = idle_timeout
        self._keepalive = keepalive
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: list[queue.Queue[str | None]] = []
        self._visitor: Visitor | None = None
        self._product: tuple[str, float] | None = None
        self._closed = False
        self.evicted = 0
        self._unsubscribe = notifier.subscribe(self._on_notice) if notifier is not None else None

    # -- from the devices (any thread) ---------------------------------------------------------------

    def _on_notice(self, notice: Notice) -> None:
        if isinstance(notice, ScanNotice):
            if notice.kind == "gtin" and notice.value:
                # a product scanned at the kiosk: the reservation form takes it (not personal data)
                with self._lock:
                    self._product = (notice.value, self._clock())
                self.broadcast("product", {"gtin": notice.value})
            return
        if not isinstance(notice, IdentityNotice):
            return  # an assistance press: for the cashier's screen, not the customer's
        # No member cache yet (it is filled from the central receiver): every identity is "pending",
        # i.e. "your points will update shortly". "unknown" is for a directory that says "not a member".
        visitor = Visitor("pending", notice.source, notice.token, self._clock())
        with self._lock:
            self._visitor = visitor
        self.broadcast("identity", {"state": visitor.state})

    # -- to the pages ------------------------------------------------------------------------------------

    def visitor(self) -> Visitor | None:
        """The current visitor, or None once the idle timeout has passed since the tap."""
        with self._lock:
            visitor = self._visitor
            if visitor is not None and self._clock() - visitor.at > self.idle_timeout:
                self._visitor = visitor = None
        return visitor

    def last_product(self) -> str | None:
        """The GTIN scanned in the last idle period, to prefill a reservation."""
        with self._lock:
            product = self._product
        if product is None or self._clock() - product[1] > self.idle_timeout:
            return None
        return product[0]

    def member_updated(self, token: str, known: bool) -> None:
        """The central receiver answered for ``token``: if that customer is at the screen, show it now."""
        visitor = self.visitor()
        if visitor is None or visitor.token != token:
            return
        if not known:
            with self._lock:
                if self._visitor is visitor:
                    self._visitor = Visitor("unknown", visitor.source, visitor.token, visitor.at)
        self.broadcast("identity", {"state": "member" if known else "unknown"})

    def forget_tokens(self, tokens: Iterable[str]) -> None:
        """An erased customer: if they are on the screen, the screen goes back to attract at once."""
        visitor = self.visitor()
        if visitor is not None and visitor.token in set(tokens):
            self.forget_visitor()
            self.broadcast("identity", {"state": "gone"})

    def forget_visitor(self) -> None:
        """The screen went back to attract (idle timeout, "done"): the next customer starts clean."""
        with self._lock:
            self._visitor = None
            self._product = None

    def survey_requested(self, receipt: str) -> None:
        """The till asked for the NPS survey after a sale: the screen opens it for that receipt."""
        self.broadcast("survey", {"receipt": receipt})

    def broadcast(self, event: str, data: dict[str, object]) -> None:
        """Send one event to every open stream; a full queue drops its oldest entry."""
        message = f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            while True:
                try:
                    stream.put_nowait(message)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        stream.get_nowait()

    def stream(self) -> Iterator[str]:
        """An SSE body for one page (ending the oldest open one when all slots are taken).

        Raises ``TooManyStreams`` only while the kiosk shuts down.
        """
        mine: queue.Queue[str | None] = queue.Queue(QUEUE_SIZE)
        with self._lock:
            if self._closed:
                raise TooManyStreams("the kiosk is shutting down")
            if len(self._streams) >= MAX_STREAMS:
                # The newest page is the one on screen: a page the kiosk browser left keeps its stream
                # until the next write fails (up to a keep-alive later), so end the oldest instead of
                # refusing the page the customer is looking at.
                oldest = self._streams.pop(0)
                self.evicted += 1
                _end(oldest)
            self._streams.append(mine)
        return self._serve(mine)

    def _serve(self, mine: queue.Queue[str | None]) -> Iterator[str]:
        try:
            yield "retry: 2000\n: connected\n\n"
            while True:
                try:
                    item = mine.get(timeout=self._keepalive)
                except queue.Empty:
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                yield item
        finally:
            with self._lock:
                if mine in self._streams:
                    self._streams.remove(mine)

    @property
    def open_streams(self) -> int:
        """How many pages are listening."""
        with self._lock:
            return len(self._streams)

    def close(self) -> None:
        """Unsubscribe and end every stream (so the HTTP server can stop without waiting). Idempotent."""
        with self._lock:
            self._closed = True
            streams = list(self._streams)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for stream in streams:
            _end(stream)


def _end(stream: queue.Queue[str | None]) -> None:
    """Make ``stream``'s generator return at its next read (dropping an update if its queue is full)."""
    try:
        stream.put_nowait(None)
    except queue.Full:
        with contextlib.suppress(queue.Empty):
            stream.get_nowait()
        stream.put_nowait(None)
