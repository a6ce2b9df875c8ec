"""The NFC back end against the real PC/SC stack: pcscd + the vpcd virtual reader + a virtual card.

One pcscd serves the whole module (only one can run per machine); the fault tests stop, kill and
restart it and leave it running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ndef
import pytest

from edge.devices.cardread import CardRead, member_code_in
from edge.devices.nfc import PcscReader, list_readers
from tests.support.pcsc import (
    ATR_CLASSIC_1K,
    ATR_ULTRALIGHT,
    GET_UID,
    READER_NAME,
    SW_OK,
    Pcscd,
    VirtualCard,
    ntag_handler,
    ntag_memory,
)

UID_A = bytes.fromhex("04A2B3C4D5E680")
UID_B = bytes.fromhex("DEADBEEF")
MEMBER = "M0123456789"


def _valid_member(code: str) -> bool:
    return code == MEMBER  # the real check-digit rule is tested with cloud_sync.codes


class Recorder:
    """The reader's callbacks: taps and errors, with an event per arrival."""

    def __init__(self) -> None:
        self.taps: list[tuple[float, CardRead]] = []
        self.errors: list[tuple[str, str]] = []
        self.changed = threading.Condition()

    def tap(self, card: CardRead) -> None:
        with self.changed:
            self.taps.append((time.perf_counter(), card))
            self.changed.notify_all()

    def error(self, reason: str, reader: str) -> None:
        with self.changed:
            self.errors.append((reason, reader))
            self.changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


@pytest.fixture(scope="module")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcscd]:
    daemon = Pcscd(tmp_path_factory.mktemp("pcscd"))
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def running_pcscd(pcscd: Pcscd) -> Pcscd:
    """The shared daemon, (re)started with its reader if an earlier test left it otherwise."""
    if not pcscd.running or not (pcscd.conf_dir / "vpcd").exists():
        pcscd.stop()
        pcscd.set_reader(present=True)
        pcscd.start()
    return pcscd


def _wait_state(reader: PcscReader, state: str, timeout: float) -> float:
    began = time.monotonic()
    while reader.state != state:
        if time.monotonic() - began > timeout:
            raise AssertionError(f"reader state {reader.state!r}, expected {state!r} within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - began


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def reader(running_pcscd: Pcscd, recorder: Recorder) -> Iterator[PcscReader]:
    device = PcscReader(
        recorder.tap,
        recorder.error,
        readers=[READER_NAME],
        find_member_code=lambda text: member_code_in(text, _valid_member),
    )
    device.start()
    try:
        _wait_state(device, "present", 5.0)
        yield device
    finally:
        device.close()
        time.sleep(0.5)  # let pcscd notice the last card left (it polls every ~400 ms)


def test_a_tap_reports_the_uid_reader_and_card_type(
    reader: PcscReader, running_pcscd: Pcscd, recorder: Recorder
):
    card = VirtualCard(running_pcscd.port, UID_A)
    with card:
        assert recorder.wait(lambda: len(recorder.taps) == 1)
    read = recorder.taps[0][1]
    assert read.uid == UID_A
    assert read.reader == READER_NAME
    assert read.card_type == "ntag-ultralight"
    assert GET_UID in card.apdus
    assert UID_A.hex() not in repr(read).lower()  # repr never shows the UID
    assert recorder.errors == []


def test_a_card_held_on_the_reader_is_one_tap(reader: PcscReader, running_pcscd: Pcscd, recorder: Recorder):
    with VirtualCard(running_pcscd.port, UID_A):
        assert recorder.wait(lambda: len(recorder.taps) == 1)
        time.sleep(2.0)  # pcscd polls the card ~every 400 ms the whole time
    assert len(recorder.taps) == 1


def test_a_quick_re_tap_is_the_same_tap_and_a_later_one_is_new(
    reader: PcscReader, running_pcscd: Pcscd, recorder: Recorder
):
    card = VirtualCard(running_pcscd.port, UID_A)
    with card:
        assert recorder.wait(lambda: len(recorder.taps) == 1)
    time.sleep(0.6)  # pcscd notices the removal within ~400 ms
    with card:
        recorder.wait(lambda: reader.ignored_repeats == 1)
        time.sleep(0.3)
    assert len(recorder.taps) == 1
    assert reader.ignored_repeats == 1
    time.sleep(1.3)  # more than the 1 s minimum interval after lifting it
    with card:
        assert recorder.wait(lambda: len(recorder.taps) == 2)


def test_two_different_cards_in_a_row_are_two_taps(
    reader: PcscReader, running_pcscd: Pcscd, recorder: Recorder
):
    with VirtualCard(running_pcscd.port, UID_A):
        assert recorder.wait(lambda: len(recorder.taps) == 1)
    time.sleep(0.6)
    with VirtualCard(running_pcscd.port, UID_B, atr=ATR_CLASSIC_1K):
        assert recorder.wait(lambda: len(recorder.taps) == 2)
    assert [read.uid for _, read in recorder.taps] == [UID_A, UID_B]
    assert recorder.taps[1][1].card_type == "mifare-classic-1k"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"\x6a\x81", "status word 6A 81"),
        (b"\x42", "not a response APDU"),
        (b"\x01\x02\x03\x04\x05" + SW_OK, "5 bytes, not a 4, 7 or 10-byte UID"),
        (b"", "left the reader"),  # vpcd delivers an empty answer only once the card has gone
    ],
    ids=["error-status-word", "garbage", "odd-length-uid", "empty"],
)
def test_a_card_answering_nonsense_gives_one_error_and_no_tap(
    reader: PcscReader,
    running_pcscd: Pcscd,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
    answer: bytes,
    reason: str,
):
    caplog.set_level(logging.INFO)
    card = VirtualCard(running_pcscd.port, UID_A, handler=lambda _apdu: answer)
    with card:
        # an empty answer is "no answer" to vpcd: the transmit waits until the card leaves
        recorder.wait(lambda: len(recorder.errors) == 1, timeout=1.5)
    assert recorder.wait(lambda: len(recorder.errors) == 1)
    time.sleep(0.3)
    assert recorder.taps == []
    assert len(recorder.errors) == 1
    assert reason in recorder.errors[0][0]
    warnings = [r for r in caplog.records if r.name == "edge.devices.nfc" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert reason in warnings[0].getMessage()
    # the reader keeps working afterwards
    time.sleep(0.6)
    with VirtualCard(running_pcscd.port, UID_B):
        assert recorder.wait(lambda: len(recorder.taps) == 1)


def test_a_card_pulled_away_mid_read_gives_an_error_and_no_tap(
    reader: PcscReader, running_pcscd: Pcscd, recorder: Recorder
):
    card = VirtualCard(running_pcscd.port, UID_A, handler=lambda _apdu: None)  # gone at the first APDU
    card.insert()
    try:
        assert recorder.wait(lambda: len(recorder.errors) == 1)
    finally:
        card.remove()
    assert recorder.taps == []
    assert "left the reader" in recorder.errors[0][0] or "could not" in recorder.errors[0][0]


def test_an_ntag_carrying_a_member_code_in_ndef_reports_it(
    reader: PcscReader, running_pcscd: Pcscd, recorder: Recorder
):
    message = b"".join(ndef.message_encoder([ndef.UriRecord(f"https://loyalty.example/m/{MEMBER}")]))
    memory = ntag_memory(message)
    with VirtualCard(running_pcscd.port, UID_A, atr=ATR_ULTRALIGHT, handler=ntag_handler(UID_A, memory)):
        assert recorder.wait(lambda: len(recorder.taps) == 1)
    read = recorder.taps[0][1]
    assert read.member_code == MEMBER
    assert MEMBER not in repr(read)


def test_an_ntag_with_malformed_ndef_still_taps_without_a_member_code(
    reader: PcscReader, running_pcscd: Pcscd, recorder: Recorder
):
    memory = ntag_memory(b"\xd1\x01\x7f\x54\x02en")  # a record claiming 127 payload bytes it does not have
    with VirtualCard(running_pcscd.port, UID_A, handler=ntag_handler(UID_A, memory)):
        assert recorder.wait(lambda: len(recorder.taps) == 1)
    assert recorder.taps[0][1].member_code is None
    assert recorder.errors == []


def test_an_ntag_pulled_away_during_the_ndef_read_gives_no_tap(
    reader: PcscReader, running_pcscd: Pcscd, recorder: Recorder
):
    message = b"".join(ndef.message_encoder([ndef.TextRecord(MEMBER)]))
    inner = ntag_handler(UID_A, ntag_memory(message))

    def handler(apdu: bytes) -> bytes | None:
        return None if apdu[:2] == b"\xff\xb0" else inner(apdu)

    card = VirtualCard(running_pcscd.port, UID_A, handler=handler)
    card.insert()
    try:
        assert recorder.wait(lambda: len(recorder.errors) == 1)
    finally:
        card.remove()
    assert recorder.taps == []


def test_pcscd_killed_and_restarted_taps_work_again(
    reader: PcscReader, running_pcscd: Pcscd, recorder: Recorder
):
    running_pcscd.stop(kill=True)
    _wait_state(reader, "absent", 3.0)
    running_pcscd.start()
    took = _wait_state(reader, "present", 5.0)
    assert took < 5.0
    with VirtualCard(running_pcscd.port, UID_A):
        assert recorder.wait(lambda: len(recorder.taps) == 1)


def test_pcscd_stopped_and_started_taps_work_again(
    reader: PcscReader, running_pcscd: Pcscd, recorder: Recorder
):
    running_pcscd.stop()
    _wait_state(reader, "absent", 3.0)
    assert reader.readers() == []
    running_pcscd.start()
    _wait_state(reader, "present", 5.0)
    with VirtualCard(running_pcscd.port, UID_B):
        assert recorder.wait(lambda: len(recorder.taps) == 1)


def test_no_pcscd_and_no_reader_at_start_then_both_arrive(pcscd: Pcscd, recorder: Recorder, caplog):
    caplog.set_level(logging.INFO)
    pcscd.stop()
    device = PcscReader(recorder.tap, recorder.error)
    device.start()
    try:
        time.sleep(1.5)
        assert device.state == "absent"
        assert "PC/SC service not available" in caplog.text
        assert caplog.text.count("PC/SC service not available") == 1  # said once, not every retry
        # pcscd comes up without any reader: still absent
        pcscd.set_reader(present=False)
        pcscd.start()
        time.sleep(2.5)
        assert device.state == "absent"
        # the reader is "plugged in" (vpcd is a serial driver: pcscd loads it at start-up)
        pcscd.stop()
        pcscd.set_reader(present=True)
        pcscd.start()
        took = _wait_state(device, "present", 5.0)
        assert took < 5.0
        assert {info.name for info in device.readers()} >= {READER_NAME}
        with VirtualCard(pcscd.port, UID_A):
            assert recorder.wait(lambda: len(recorder.taps) == 1)
    finally:
        device.close()


def test_close_is_prompt_and_idempotent(running_pcscd: Pcscd, recorder: Recorder):
    device = PcscReader(recorder.tap, recorder.error, wait_timeout=30.0)
    device.start()
    _wait_state(device, "present", 5.0)
    time.sleep(0.2)  # now blocked in SCardGetStatusChange for up to 30 s
    began = time.perf_counter()
    device.close()
    assert time.perf_counter() - began < 1.0
    device.close()
    assert not any(t.name == "nfc-reader" for t in threading.enumerate())


def test_configured_reader_names_limit_what_is_watched(running_pcscd: Pcscd, recorder: Recorder):
    device = PcscReader(recorder.tap, recorder.error, readers=["Some Other Reader"])
    device.start()
    try:
        time.sleep(1.0)
        assert device.state == "absent"  # pcscd is up, but no configured reader is attached
        with VirtualCard(running_pcscd.port, UID_A):
            time.sleep(1.0)
        assert recorder.taps == []
    finally:
        device.close()


def test_list_readers_for_doctor(running_pcscd: Pcscd, tmp_path: Path):
    names, problem = list_readers()
    assert problem is None
    assert READER_NAME in names
    running_pcscd.stop()
    names, problem = list_readers()
    assert names == []
    assert problem is not None
    assert "pcscd" in problem
