"""Reader hot-plug while pcscd keeps running: a USB reader unplugged and plugged back.

The virtual reader cannot do this: pcscd loads serial drivers such as vpcd only at start-up (measured
with pcsc-lite 1.9.9: SIGUSR1 / ``pcscd --hotplug`` do not re-read the serial reader config). So this
test drives ``PcscReader`` through a stand-in for pyscard's ``smartcard.scard`` module that behaves as
pcscd does for a USB reader: the reader vanishes from ``SCardListReaders``, a pending
``SCardGetStatusChange`` reports it ``UNKNOWN | CHANGED``, and the PnP pseudo-reader's count changes.
Everything else (the real daemon, real cards, pcscd restarts) is in tests/test_nfc.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from smartcard import scard as real

from edge.devices.cardread import CardRead
from edge.devices.nfc import PNP_READER, PcscReader

READER = "ACS ACR122U PICC Interface 00 00"
UID = bytes.fromhex("04A2B3C4D5E680")
ATR = bytes.fromhex("3B8F8001804F0CA0000003060300030000000068")


class FakePcsc:
    """The part of ``smartcard.scard`` PcscReader uses, with pcscd's hot-plug semantics."""

    def __getattr__(self, name: str) -> Any:  # constants and error messages come from pyscard itself
        if name.startswith("SCARD_") or name == "SCardGetErrorMessage":
            return getattr(real, name)
        raise AttributeError(name)

    def __init__(self) -> None:
        self.readers: list[str] = [READER]
        self.card = False
        self.cancelled = False
        self.changed = threading.Condition()
        self.calls = 0

    # -- the test's hands --------------------------------------------------------------------------

    def plug(self, present: bool) -> None:
        with self.changed:
            self.readers = [READER] if present else []
            self.card = False
            self.changed.notify_all()

    def put_card(self, present: bool) -> None:
        with self.changed:
            self.card = present
            self.changed.notify_all()

    # -- the API -------------------------------------------------------------------------------------

    def SCardEstablishContext(self, _scope: int) -> tuple[int, int]:
        return real.SCARD_S_SUCCESS, 1

    def SCardReleaseContext(self, _context: int) -> int:
        return real.SCARD_S_SUCCESS

    def SCardCancel(self, _context: int) -> int:
        with self.changed:
            self.cancelled = True
            self.changed.notify_all()
        return real.SCARD_S_SUCCESS

    def SCardListReaders(self, _context: int, _groups: list[str]) -> tuple[int, list[str]]:
        with self.changed:
            if not self.readers:
                return real.SCARD_E_NO_READERS_AVAILABLE, []
            return real.SCARD_S_SUCCESS, list(self.readers)

    def _answer(self, states: list[tuple[str, int]]) -> list[tuple[str, int, list[int]]] | None:
        out: list[tuple[str, int, list[int]]] = []
        changed = False
        for name, current in states:
            if name == PNP_READER:
                count = len(self.readers) << 16
                if current != count:
                    changed = True
                    out.append((name, count | real.SCARD_STATE_CHANGED, []))
                else:
                    out.append((name, current, []))
                continue
            if name not in self.readers:
                changed = True
                out.append((name, real.SCARD_STATE_UNKNOWN | real.SCARD_STATE_CHANGED, []))
                continue
            state = real.SCARD_STATE_PRESENT if self.card else real.SCARD_STATE_EMPTY
            if current & ~real.SCARD_STATE_CHANGED != state:
                changed = True
                out.append((name, state | real.SCARD_STATE_CHANGED, list(ATR) if self.card else []))
            else:
                out.append((name, state, []))
        return out if changed else None

    def SCardGetStatusChange(
        self, _context: int, timeout_ms: int, states: list[tuple[str, int]]
    ) -> tuple[int, list[tuple[str, int, list[int]]]]:
        self.calls += 1
        deadline = time.monotonic() + timeout_ms / 1000
        with self.changed:
            while True:
                if self.cancelled:
                    self.cancelled = False
                    return real.SCARD_E_CANCELLED, []
                answer = self._answer(states)
                if answer is not None:
                    return real.SCARD_S_SUCCESS, answer
                left = deadline - time.monotonic()
                if left <= 0:
                    return real.SCARD_E_TIMEOUT, []
                self.changed.wait(left)

    def SCardConnect(self, _context: int, reader: str, _share: int, _protocols: int) -> tuple[int, int, int]:
        with self.changed:
            if reader not in self.readers or not self.card:
                return real.SCARD_E_NO_SMARTCARD, 0, 0
        return real.SCARD_S_SUCCESS, 7, real.SCARD_PROTOCOL_T1

    def SCardTransmit(self, _card: int, _protocol: int, apdu: list[int]) -> tuple[int, list[int]]:
        if bytes(apdu) == bytes.fromhex("FFCA000000"):
            return real.SCARD_S_SUCCESS, list(UID + b"\x90\x00")
        return real.SCARD_S_SUCCESS, [0x6D, 0x00]

    def SCardDisconnect(self, _card: int, _disposition: int) -> int:
        return real.SCARD_S_SUCCESS


def _wait(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    began = time.monotonic()
    while not predicate():
        assert time.monotonic() - began < timeout, "timed out"
        time.sleep(0.01)
    return time.monotonic() - began


@pytest.fixture
def rig():  # type: ignore[no-untyped-def]
    pcsc = FakePcsc()
    taps: list[CardRead] = []
    reader = PcscReader(taps.append, lambda *_: None, pcsc=pcsc, wait_timeout=30.0)
    reader.start()
    yield pcsc, reader, taps
    reader.close()


def test_a_reader_unplugged_and_plugged_back_resumes_without_restart(rig, caplog) -> None:  # type: ignore[no-untyped-def]
    pcsc, reader, taps = rig
    _wait(lambda: reader.state == "present", 2.0)
    pcsc.put_card(True)
    _wait(lambda: len(taps) == 1, 2.0)
    pcsc.put_card(False)
    pcsc.plug(False)
    # noticed at once through the pending wait (not after its 30 s timeout)
    assert _wait(lambda: reader.state == "absent", 2.0) < 1.0
    assert "reader detached" in caplog.text
    pcsc.plug(True)
    assert _wait(lambda: reader.state == "present", 5.0) < 1.0  # the PnP notification wakes the wait
    pcsc.put_card(True)
    _wait(lambda: len(taps) == 2, 2.0)
    assert [t.uid for t in taps] == [UID, UID] and taps[1].reader == READER


def test_no_reader_at_start_then_one_is_plugged_in() -> None:
    pcsc = FakePcsc()
    pcsc.plug(False)
    taps: list[CardRead] = []
    reader = PcscReader(taps.append, lambda *_: None, pcsc=pcsc, wait_timeout=30.0)
    reader.start()
    try:
        time.sleep(0.3)
        assert reader.state == "absent"
        calls = pcsc.calls
        time.sleep(0.5)
        assert pcsc.calls - calls <= 1  # blocked in the wait on the PnP pseudo-reader, not polling
        pcsc.plug(True)
        assert _wait(lambda: reader.state == "present", 5.0) < 1.0
        pcsc.put_card(True)
        _wait(lambda: len(taps) == 1, 2.0)
    finally:
        reader.close()
