"""NFC readers through pcscd: one thread blocking in ``SCardGetStatusChange``, never busy-polling.

pyscard's ``CardMonitor`` is not used on purpose: its thread dies silently when pcscd restarts and never
stops after ``deleteObserver`` (LudovicRousseau/pyscard#82, #128). This loop owns its PC/SC context, waits
for card and reader changes (with the ``\\\\?PnP?\\Notification`` pseudo-reader, plus a re-list on every
timeout for drivers that do not signal hot-plug), and when pcscd goes away it releases the context and
tries again every ``retry_interval`` — so a reader unplugged, pcscd restarted or no reader at start-up
only makes the device ``absent`` until it is back; the node never needs a restart. ``close`` wakes the
loop with ``SCardCancel``.

A card lying on the reader is one tap. The same card back within ``min_interval`` of being lifted is the
same tap (a card wobbling at the edge of the field, an accidental double tap); after that it is a new one.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edge.devices.base import DeviceState
from edge.devices.cardread import CardRead, CardReadError, CardRemovedError, MemberCodeFinder, read_card

log = logging.getLogger(__name__)

PNP_READER = "\\\\?PnP?\\Notification"

TapCallback = Callable[[CardRead], object]
ErrorCallback = Callable[[str, str], object]


@dataclass(frozen=True, slots=True)
class ReaderInfo:
    """What ``doctor`` and ``status`` show about one PC/SC reader."""

    name: str
    watched: bool
    card_present: bool


class PcscReader:
    """Every matching PC/SC reader on the machine, as one device (``state`` present when any is)."""

    def __init__(
        self,
        on_tap: TapCallback,
        on_error: ErrorCallback,
        *,
        readers: Sequence[str] = (),
        min_interval: float = 1.0,
        find_member_code: MemberCodeFinder | None = None,
        name: str = "nfc-reader",
        wait_timeout: float = 2.0,
        retry_interval: float = 1.0,
        pcsc: Any = None,
    ) -> None:
        self.name = name
        # pyscard's low-level module, or a stand-in with the same functions (tests of reader hot-plug,
        # which vpcd cannot do: pcscd loads serial drivers only at start-up)
        self._pcsc = pcsc
        self._on_tap = on_tap
        self._on_error = on_error
        self._wanted = tuple(readers)
        self._min_interval = min_interval
        self._find_member_code = find_member_code
        self._wait_ms = int(wait_timeout * 1000)
        self._retry = retry_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._context: Any = None
        self._watched: list[str] = []
        self._present: set[str] = set()
        self._service_up = False
        self._failed = False
        # the last card lifted from each reader, as a keyed digest (not the UID) and when
        self._salt = secrets.token_bytes(16)
        self._lifted: dict[str, tuple[bytes, float]] = {}
        self._on_reader: dict[str, bytes] = {}
        self.taps = 0
        self.ignored_repeats = 0
        self.read_errors = 0

    # -- Device -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching; returns at once, whether or not pcscd and a reader are there."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="nfc-reader", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the loop (``SCardCancel`` wakes it) and release the PC/SC context. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._cancel()
        thread.join(timeout)
        if thread.is_alive():
            log.error("%s: the PC/SC loop did not stop within %.1f s", self.name, timeout)

    @property
    def state(self) -> DeviceState:
        """``present`` while at least one matching reader is attached and pcscd answers."""
        with self._lock:
            if self._failed:
                return "error"
            return "present" if self._service_up and self._watched else "absent"

    def readers(self) -> list[ReaderInfo]:
        """The readers currently watched (for status and ``doctor``)."""
        with self._lock:
            return [ReaderInfo(r, True, r in self._present) for r in self._watched]

    # -- the loop -------------------------------------------------------------------------------------

    def _scard(self) -> Any:
        if self._pcsc is None:
            from smartcard import scard

            self._pcsc = scard
        return self._pcsc

    def _run(self) -> None:
        scard = self._scard()
        announced_absent = False
        while not self._stop.is_set():
            hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if hresult != scard.SCARD_S_SUCCESS:
                if not announced_absent:
                    log.warning(
                        "%s: PC/SC service not available (%s); card taps are off until pcscd is back",
                        self.name,
                        _message(hresult),
                    )
                    announced_absent = True
                self._set_service(up=False)
                self._stop.wait(self._retry)
                continue
            with self._lock:
                self._context = context
            if self._stop.is_set():  # close() ran before the context was visible to its cancel
                scard.SCardReleaseContext(context)
                break
            announced_absent = False
            try:
                self._set_service(up=True)
                self._watch(scard, context)
            except Exception:  # a bug or an unexpected library error: report, back off, try again
                log.exception("%s: PC/SC loop failed; retrying", self.name)
                with self._lock:
                    self._failed = True
                self._stop.wait(self._retry)
            finally:
                with self._lock:
                    self._context = None
                scard.SCardReleaseContext(context)
                self._set_service(up=False)
        log.debug("%s: PC/SC loop stopped", self.name)

    def _watch(self, scard: Any, context: Any) -> None:
        """Wait for changes until pcscd goes away or ``close``; returns to re-establish the context."""
        known: dict[str, int] = {}
        pnp_state = scard.SCARD_STATE_UNAWARE
        readers = self._list(scard, context)
        gone = {
            scard.SCARD_E_NO_SERVICE,
            scard.SCARD_E_SERVICE_STOPPED,
            scard.SCARD_E_INVALID_HANDLE,
            scard.SCARD_F_COMM_ERROR,
        }
        while not self._stop.is_set():
            states = [(r, known.get(r, scard.SCARD_STATE_UNAWARE)) for r in readers]
            states.append((PNP_READER, pnp_state))
            hresult, changes = scard.SCardGetStatusChange(context, self._wait_ms, states)
            if self._stop.is_set() or hresult == scard.SCARD_E_CANCELLED:
                return
            if hresult in gone:  # SCARD_F_COMM_ERROR is "RPC transport error": pcscd died
                log.warning("%s: lost pcscd (%s); reconnecting", self.name, _message(hresult))
                return
            if hresult == scard.SCARD_E_TIMEOUT:
                fresh = self._list(scard, context)
                if fresh != readers:
                    readers = fresh
                    known = {r: s for r, s in known.items() if r in readers}
                continue
            if hresult != scard.SCARD_S_SUCCESS:
                # an unplugged reader makes the call fail (unknown reader): list again, then wait
                log.debug("%s: SCardGetStatusChange: %s", self.name, _message(hresult))
                readers = self._list(scard, context)
                known = {r: s for r, s in known.items() if r in readers}
                self._stop.wait(0.05)
                continue
            relist = False
            for reader, event, atr in changes:
                if reader == PNP_READER:
                    if event & scard.SCARD_STATE_CHANGED:
                        relist = True
                    pnp_state = event & ~scard.SCARD_STATE_CHANGED
                    continue
                if event & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_IGNORE):
                    relist = True
                    continue
                first_look = reader not in known
                before = known.get(reader, scard.SCARD_STATE_UNAWARE)
                known[reader] = event & ~scard.SCARD_STATE_CHANGED
                had_card = bool(before & scard.SCARD_STATE_PRESENT)
                has_card = bool(event & scard.SCARD_STATE_PRESENT) and not event & scard.SCARD_STATE_MUTE
                if has_card and first_look:
                    # Already lying there when we (re)connected: not a tap, or every node or pcscd restart
                    # would count a card left on the reader again.
                    with self._lock:
                        self._present.add(reader)
                    log.info(
                        "%s: a card was already on %s; lift it and tap again to use it", self.name, reader
                    )
                elif has_card and not had_card:
                    self._arrived(scard, context, reader, bytes(atr))
                elif had_card and not has_card:
                    self._left(reader)
            if relist:
                readers = self._list(scard, context)
                known = {r: s for r, s in known.items() if r in readers}

    def _list(self, scard: Any, context: Any) -> list[str]:
        hresult, names = scard.SCardListReaders(context, [])
        if hresult != scard.SCARD_S_SUCCESS:
            names = []  # SCARD_E_NO_READERS_AVAILABLE, or pcscd going away (the wait will tell)
        watched = sorted(n for n in names if self._matches(n))
        with self._lock:
            before = self._watched
            self._watched = watched
            self._present &= set(watched)
            self._failed = False
        for added in sorted(set(watched) - set(before)):
            log.info("%s: reader attached: %s", self.name, added)
        for removed in sorted(set(before) - set(watched)):
            log.warning("%s: reader detached: %s", self.name, removed)
            self._on_reader.pop(removed, None)
        if before and not watched:
            log.warning("%s: no card reader attached; card taps are off until one is plugged in", self.name)
        return watched

    def _matches(self, reader: str) -> bool:
        return not self._wanted or any(reader == w or reader.startswith(w) for w in self._wanted)

    def _set_service(self, *, up: bool) -> None:
        with self._lock:
            self._service_up = up
            if not up:
                self._watched = []
                self._present.clear()

    def _cancel(self) -> None:
        with self._lock:
            context = self._context
        if context is not None:
            self._scard().SCardCancel(context)

    # -- one card -------------------------------------------------------------------------------------

    def _arrived(self, scard: Any, context: Any, reader: str, atr: bytes) -> None:
        with self._lock:
            self._present.add(reader)
        try:
            card = self._read(scard, context, reader, atr)
        except CardReadError as exc:
            self.read_errors += 1
            log.warning("%s: card on %s not read: %s", self.name, reader, exc)
            self._report_error(str(exc), reader)
            return
        digest = hashlib.blake2b(card.uid, key=self._salt, digest_size=16).digest()
        self._on_reader[reader] = digest
        lifted = self._lifted.get(reader)
        if lifted is not None and lifted[0] == digest and time.monotonic() - lifted[1] < self._min_interval:
            self.ignored_repeats += 1
            log.debug(
                "%s: same card back on %s within %.1f s: same tap", self.name, reader, self._min_interval
            )
            return
        self.taps += 1
        try:
            self._on_tap(card)
        except Exception:  # the intake logs its own refusals; a bug there must not stop the reader
            log.exception("%s: handling a tap failed", self.name)

    def _left(self, reader: str) -> None:
        with self._lock:
            self._present.discard(reader)
        digest = self._on_reader.pop(reader, None)
        if digest is not None:
            self._lifted[reader] = (digest, time.monotonic())

    def _read(self, scard: Any, context: Any, reader: str, atr: bytes) -> CardRead:
        protocols = scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
        hresult, card, protocol = scard.SCardConnect(context, reader, scard.SCARD_SHARE_SHARED, protocols)
        if hresult != scard.SCARD_S_SUCCESS:
            if hresult in (scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD):
                raise CardRemovedError("the card left the reader before it could be read")
            raise CardReadError(f"could not connect to the card ({_message(hresult)})")
        removed = {scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_RESET_CARD}

        def transmit(apdu: bytes) -> bytes:
            result, response = scard.SCardTransmit(card, protocol, list(apdu))
            if result != scard.SCARD_S_SUCCESS:
                if result in removed:
                    raise CardRemovedError("the card left the reader in the middle of the read")
                raise CardReadError(f"the reader could not talk to the card ({_message(result)})")
            if not response:
                # not even a status word: readers (vpcd among them) answer so when the card is lifted
                # mid-exchange, before pcscd has noticed it is gone
                raise CardRemovedError("no answer: the card left the reader in the middle of the read")
            return bytes(response)

        try:
            return read_card(transmit, atr, reader, self._find_member_code)
        finally:
            scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)

    def _report_error(self, reason: str, reader: str) -> None:
        try:
            self._on_error(reason, reader)
        except Exception:
            log.exception("%s: error feedback failed", self.name)


def list_readers() -> tuple[list[str], str | None]:
    """Every PC/SC reader pcscd knows, or the reason there are none (for ``kiosk-edge doctor``)."""
    try:
        from smartcard import scard
    except ImportError as exc:  # pragma: no cover - pyscard is a dependency; a broken install says so
        return [], f"pyscard is not importable: {exc}"
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return [], f"PC/SC service not available: {_message(hresult)} (is pcscd installed and running?)"
    try:
        hresult, names = scard.SCardListReaders(context, [])
        if hresult != scard.SCARD_S_SUCCESS:
            return [], _message(hresult)
        return sorted(names), None
    finally:
        scard.SCardReleaseContext(context)


def _unsigned(hresult: int) -> int:
    return hresult & 0xFFFFFFFF


def _message(hresult: int) -> str:
    from smartcard import scard

    return f"{scard.SCardGetErrorMessage(hresult).rstrip('. ')} [{_unsigned(hresult):#010x}]"
