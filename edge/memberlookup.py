"""Asking the central receiver who is behind a token the node has never seen (``request/member``).

A tap or member scan of a token the node's cache does not know starts a lookup in the background, so
the device thread and the screen never wait: the welcome page shows "your points will update shortly"
and turns into the member's greeting (or the invitation to join, for a card that is not a member) when
the answer arrives, usually within a few tens of milliseconds. Offline, nothing happens: the cache fills
again from the pushes after the next sale.

Lookups are coalesced (one request for a token at a time) and bounded (a queue of ``MAX_PENDING``): a
burst of taps never builds an unbounded backlog, and a stale lookup is simply dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable

import msgspec

from cloud_sync.errors import CloudSyncError
from cloud_sync.messages import MemberInfo, MemberLookupReply
from cloud_sync.outbox import Outbox

log = logging.getLogger(__name__)

MAX_PENDING = 32

#: (topic, payload, timeout) -> reply bytes; ``Relay.request``
Requester = Callable[[str, bytes, float], bytes]


class MemberLookups:
    """Owns one background thread; ``start`` and ``stop`` are its lifecycle."""

    def __init__(
        self,
        outbox: Outbox,
        requester: Requester,
        topic: str,
        on_info: Callable[[MemberInfo], None],
        *,
        timeout: float = 3.0,
    ) -> None:
        self._outbox = outbox
        self._request = requester
        self._topic = topic
        self._on_info = on_info
        self._timeout = timeout
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=MAX_PENDING)
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.answered = 0
        self.failed = 0

    def want(self, token: str) -> None:
        """Look ``token`` up soon (no-op if it is already being looked up or the queue is full)."""
        with self._lock:
            if token in self._pending:
                return
            self._pending.add(token)
        try:
            self._queue.put_nowait(token)
        except queue.Full:
            with self._lock:
                self._pending.discard(token)

    def _lookup(self, token: str) -> None:
        request_id = uuid.uuid4().hex
        message = self._outbox.seal_request("member_lookup", {"request_id": request_id, "tokens": [token]})
        try:
            raw = self._request(self._topic, message.payload, self._timeout)
            reply = msgspec.json.decode(raw, type=MemberLookupReply)
        except (CloudSyncError, TimeoutError, OSError) as exc:
            self.failed += 1
            log.debug("member lookup not answered (%s)", exc)
            return
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self.failed += 1
            log.warning("malformed member lookup reply: %s", exc)
            return
        if reply.request_id != request_id:
            self.failed += 1
            log.warning("member lookup reply for another request ignored")
            return
        for info in reply.members:
            if info.token == token:
                self.answered += 1
                self._on_info(info)

    def _run(self) -> None:
        while True:
            token = self._queue.get()
            if token is None:
                return
            try:
                self._lookup(token)
            except Exception:
                log.exception("member lookup failed")
            finally:
                with self._lock:
                    self._pending.discard(token)

    def start(self) -> None:
        """Start the lookup thread."""
        self._thread = threading.Thread(target=self._run, name="member-lookups", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the lookup in progress (pending ones are dropped: the cache is only a cache)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
