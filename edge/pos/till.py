"""The till session: which customer is at this till right now.

A tap or a member scan makes the customer *present* for ``window`` seconds (default 120: long enough to
scan a basket, short enough that the next customer's sale is not credited to them), or until a sale
consumes them; the cashier can also attach a member by typing their code, or clear the customer. Only a
pseudonymous token is held — never the raw UID or code — and what the cashier sees is masked.

The session is consumed only *after* the sale is durable (``consume``), so a sale refused by a full
outbox leaves the customer present for the retry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cloud_sync.codes import normalize_member_code
from edge.identity import Pseudonymizer
from edge.notify import IdentityNotice, Notice

Source = Literal["nfc", "barcode", "typed"]


@dataclass(frozen=True, slots=True)
class Customer:
    """A present customer: their identity token and how they identified themselves."""

    token: str
    source: Source
    since: float
    expires: float
    #: the token of the member code printed on the card (NDEF), when a tap carried one
    code_token: str | None = None

    @property
    def masked(self) -> str:
        """What the cashier's screen shows: enough to tell two customers apart, nothing to reuse."""
        return "…" + self.token[-6:]


class TillSession:
    """One till's present customer; thread-safe (device threads, POS requests, the clock)."""

    def __init__(
        self,
        pseudonymizer: Pseudonymizer,
        window: float = 120.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[Customer | None], None] | None = None,
    ) -> None:
        if window <= 0:
            raise ValueError("the till session window must be positive")
        self.window = window
        self._pseudonymizer = pseudonymizer
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._customer: Customer | None = None

    def now(self) -> float:
        """The session's clock (monotonic), for "expires in" figures."""
        return self._clock()

    def on_notice(self, notice: Notice) -> None:
        """Notifier subscriber: an identity notice makes that customer present (replacing another)."""
        if isinstance(notice, IdentityNotice):
            self._set(notice.token, notice.source, notice.code_token)

    def attach_member_code(self, text: str) -> Customer:
        """The cashier typed a member code; a mistyped digit fails the check character (ValueError)."""
        code = normalize_member_code(text) if isinstance(text, str) and len(text) <= 32 else None
        if code is None:
            raise ValueError("not a valid member code (check the digits: the last one is a check digit)")
        return self._set(self._pseudonymizer.barcode_token(code), "typed", None)

    def current(self) -> Customer | None:
        """The present customer, or None when nobody is (or their window has passed)."""
        with self._lock:
            return self._live()

    def clear(self) -> bool:
        """The cashier cleared the customer; False if nobody was present."""
        with self._lock:
            had = self._live() is not None
            self._customer = None
        if had:
            self._changed(None)
        return had

    def consume(self, customer: Customer) -> None:
        """A sale for ``customer`` is durable: end their session, unless someone else arrived meanwhile."""
        with self._lock:
            if self._customer is customer:
                self._customer = None
            else:
                return
        self._changed(None)

    def _set(self, token: str, source: Source, code_token: str | None) -> Customer:
        now = self._clock()
        customer = Customer(token, source, now, now + self.window, code_token)
        with self._lock:
            self._customer = customer
        self._changed(customer)
        return customer

    def _live(self) -> Customer | None:
        customer = self._customer
        if customer is not None and self._clock() >= customer.expires:
            self._customer = customer = None
        return customer

    def _changed(self, customer: Customer | None) -> None:
        if self._on_change is not None:
            self._on_change(customer)
