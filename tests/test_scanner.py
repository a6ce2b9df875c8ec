"""The barcode scanner: keymaps, the key-event decoder, and the evdev back end's device loop.

There is no /dev/input on these machines (shared/TESTING-NOTES.md), so the decoder is fed
``evdev.InputEvent`` streams built by tests/support/keystream.py, and the device loop runs against a
fake device whose descriptor is a real pipe, so the loop's select() really waits on it.
"""

# ruff: noqa: RUF001, RUF003  # look-alike characters (ı, İ) are the point of a keyboard layout

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from evdev import InputEvent, ecodes

from edge.devices import keymaps
from edge.devices.scandecode import ScanDecoder, ScanResult
from edge.devices.scanner import EvdevScanner, ScannerMatch, find_device, list_scanners
from edge.scancodes import classify
from tests.support.keystream import Clock, decode, key, keystream, strokes, tap

GTIN = "4006381333931"
PRINTABLE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F))


def texts(results: list[ScanResult]) -> list[str | None]:
    return [r.text for r in results]


# keymaps ------------------------------------------------------------------------------------------


def test_keymap_constants_are_the_kernel_codes() -> None:
    names = [n for n in dir(keymaps) if n.startswith(("KEY_", "EV_", "MSC_"))]
    assert len(names) > 80
    for name in names:
        assert getattr(keymaps, name) == ecodes.ecodes[name], name


@pytest.mark.parametrize("layout", sorted(keymaps.LAYOUTS))
def test_layout_tables_are_well_formed(layout: str) -> None:
    table = keymaps.LAYOUTS[layout]
    for code, chars in table.keys.items():
        assert len(chars) == 3
        for char in chars:
            assert char is None or (len(char) == 1 and char.isprintable()), (code, chars)
        assert code not in keymaps.KEYPAD
    for code, level in table.dead:
        dead_char = table.keys[code][level]
        assert dead_char is not None
        assert dead_char in keymaps.DEAD_COMBINING


def test_unknown_layout_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="us"):
        keymaps.get_layout("fr")
    with pytest.raises(ValueError, match="unknown keyboard layout"):
        ScanDecoder("dvorak")


def test_caps_letters_include_turkish_i_and_exclude_symbols() -> None:
    assert keymaps.is_caps_letter(keymaps.TR.keys[keymaps.KEY_I])  # ı / I
    assert keymaps.is_caps_letter(keymaps.TR.keys[keymaps.KEY_APOSTROPHE])  # i / İ
    assert keymaps.is_caps_letter(keymaps.DE.keys[keymaps.KEY_APOSTROPHE])  # ä / Ä
    assert not keymaps.is_caps_letter(keymaps.DE.keys[keymaps.KEY_MINUS])  # ß / ?
    assert not keymaps.is_caps_letter(keymaps.US.keys[keymaps.KEY_1])


# decoding per layout --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["us", "de", "tr"])
@pytest.mark.parametrize("keypad", [False, True])
def test_gtin_decodes_in_every_layout(layout: str, keypad: bool) -> None:
    results = decode(ScanDecoder(layout), keystream(GTIN, layout, keypad_digits=keypad))
    assert texts(results) == [GTIN]
    assert results[0].ok and results[0].error is None


@pytest.mark.parametrize("layout", ["us", "de", "tr"])
def test_all_printable_ascii_round_trips_in_every_layout(layout: str) -> None:
    # every ASCII character a barcode can carry, each reachable in each layout (some only with AltGr
    # or, in German, as a dead key followed by space)
    results = decode(ScanDecoder(layout), keystream(PRINTABLE_ASCII, layout))
    assert texts(results) == [PRINTABLE_ASCII]


@pytest.mark.parametrize(
    ("layout", "code"),
    [
        ("us", "RC-2024/05:Ab#1@x.y_Z~"),
        ("de", "Zürich-Straße 12/Ä@{y}|z\\~#'"),
        ("tr", "İstanbul ığüşöç ABC-1.2:Ş @#$"),
    ],
)
def test_letters_and_symbols_decode_in_their_layout(layout: str, code: str) -> None:
    assert texts(decode(ScanDecoder(layout), keystream(code, layout))) == [code]


def test_the_layout_matters_qwertz_and_turkish_keys() -> None:
    de_events = keystream("zy", "de")
    key_downs = [e.code for e in de_events if e.type == ecodes.EV_KEY and e.value == 1]
    assert key_downs[:2] == [ecodes.KEY_Y, ecodes.KEY_Z]  # a German scanner presses Y for "z"
    assert texts(decode(ScanDecoder("us"), de_events)) == ["yz"]
    assert texts(decode(ScanDecoder("de"), keystream('"-', "de"))) == ['"-']
    assert texts(decode(ScanDecoder("us"), keystream('"-', "de"))) == ["@/"]
    tr_events = keystream("ıi", "tr")
    assert [e.code for e in tr_events if e.type == ecodes.EV_KEY and e.value == 1][:2] == [
        ecodes.KEY_I,
        ecodes.KEY_APOSTROPHE,
    ]
    assert texts(decode(ScanDecoder("us"), tr_events)) == ["i'"]
    assert texts(decode(ScanDecoder("tr"), keystream("öç.", "tr"))) == ["öç."]


def test_right_shift_works_like_left_shift() -> None:
    clock = Clock()
    events = tap("KEY_A", clock, ["KEY_RIGHTSHIFT"]) + tap("KEY_2", clock, ["KEY_RIGHTSHIFT"])
    events += tap("KEY_ENTER", clock)
    assert texts(decode(ScanDecoder("de"), events)) == ['A"']


def test_releasing_one_shift_while_the_other_is_held_keeps_shift() -> None:
    clock = Clock()
    events = key("KEY_LEFTSHIFT", 1, clock) + key("KEY_RIGHTSHIFT", 1, clock)
    events += key("KEY_LEFTSHIFT", 0, clock) + tap("KEY_A", clock)
    events += key("KEY_RIGHTSHIFT", 0, clock) + tap("KEY_A", clock) + tap("KEY_ENTER", clock)
    assert texts(decode(ScanDecoder("us"), events)) == ["Aa"]


# modifiers --------------------------------------------------------------------------------------


def test_capslock_affects_letters_only_and_shift_inverts_it() -> None:
    clock = Clock()
    events = tap("KEY_CAPSLOCK", clock)
    events += tap("KEY_A", clock) + tap("KEY_1", clock) + tap("KEY_MINUS", clock)  # A 1 ß
    events += tap("KEY_A", clock, ["KEY_LEFTSHIFT"]) + tap("KEY_1", clock, ["KEY_LEFTSHIFT"])  # a !
    events += tap("KEY_SEMICOLON", clock)  # Ö
    events += tap("KEY_CAPSLOCK", clock) + tap("KEY_A", clock) + tap("KEY_ENTER", clock)  # off: a
    assert texts(decode(ScanDecoder("de"), events)) == ["A1ßa!Öa"]


def test_capslock_in_turkish_gives_dotted_and_dotless_capitals() -> None:
    clock = Clock()
    events = tap("KEY_CAPSLOCK", clock) + tap("KEY_I", clock) + tap("KEY_APOSTROPHE", clock)
    events += tap("KEY_I", clock, ["KEY_LEFTSHIFT"]) + tap("KEY_APOSTROPHE", clock, ["KEY_LEFTSHIFT"])
    events += tap("KEY_ENTER", clock)
    assert texts(decode(ScanDecoder("tr"), events)) == ["Iİıi"]


def test_decoder_can_start_with_capslock_on() -> None:
    events = keystream("ab1", "us")
    assert texts(decode(ScanDecoder("us", capslock=True), events)) == ["AB1"]


def test_altgr_types_the_third_level_and_is_refused_where_the_layout_has_none() -> None:
    clock = Clock()
    events = tap("KEY_Q", clock, ["KEY_RIGHTALT"]) + tap("KEY_E", clock, ["KEY_RIGHTALT"])
    events += tap("KEY_ENTER", clock)
    assert texts(decode(ScanDecoder("de"), events)) == ["@€"]
    refused = decode(ScanDecoder("us"), events)
    assert texts(refused) == [None]
    assert refused[0].error == "key code 16 has no character at this level in layout us"


def test_altgr_with_shift_is_refused() -> None:
    clock = Clock()
    events = tap("KEY_Q", clock, ["KEY_RIGHTALT", "KEY_LEFTSHIFT"]) + tap("KEY_ENTER", clock)
    [result] = decode(ScanDecoder("de"), events)
    assert result.error is not None and "AltGr and Shift" in result.error


def test_ctrl_held_rejects_the_scan() -> None:
    clock = Clock()
    events = tap("KEY_1", clock) + tap("KEY_J", clock, ["KEY_LEFTCTRL"]) + tap("KEY_ENTER", clock)
    [result] = decode(ScanDecoder("us"), events)
    assert result.error == "key code 36 pressed with Ctrl, Alt or Meta held"


def test_numlock_presses_are_ignored() -> None:
    clock = Clock()
    events = tap("KEY_NUMLOCK", clock) + keystream("12", "us", clock=clock, keypad_digits=True)
    assert texts(decode(ScanDecoder("us"), events)) == ["12"]


def test_german_dead_keys_compose() -> None:
    clock = Clock()
    events = tap("KEY_EQUAL", clock) + tap("KEY_E", clock)  # ´ e -> é
    events += tap("KEY_GRAVE", clock) + tap("KEY_A", clock, ["KEY_LEFTSHIFT"])  # ^ A -> Â
    events += tap("KEY_EQUAL", clock, ["KEY_LEFTSHIFT"]) + tap("KEY_SPACE", clock)  # ` space -> `
    events += tap("KEY_ENTER", clock)
    assert texts(decode(ScanDecoder("de"), events)) == ["éÂ`"]


def test_dead_key_that_cannot_combine_or_dangles_is_refused() -> None:
    clock = Clock()
    events = tap("KEY_GRAVE", clock) + tap("KEY_X", clock) + tap("KEY_ENTER", clock)
    events += tap("KEY_1", clock) + tap("KEY_GRAVE", clock) + tap("KEY_ENTER", clock)
    first, second = decode(ScanDecoder("de"), events)
    assert first.error == "dead key code 41 does not combine with key code 45"
    assert second.error == "dead key code 41 not followed by a character"
    # and the decoder is clean afterwards
    assert texts(decode(ScanDecoder("de"), keystream("x", "de"))) == ["x"]


# terminators, ignored events, repeats -------------------------------------------------------------


@pytest.mark.parametrize("terminator", ["KEY_ENTER", "KEY_KPENTER", "KEY_TAB"])
def test_default_terminators(terminator: str) -> None:
    events = keystream("A-1", "us", terminator=terminator)
    assert texts(decode(ScanDecoder("us"), events)) == ["A-1"]


def test_terminators_are_configurable() -> None:
    decoder = ScanDecoder("us", terminators={ecodes.KEY_TAB})
    clock = Clock()
    assert texts(decode(decoder, keystream("12", clock=clock, terminator="KEY_TAB"))) == ["12"]
    assert decode(decoder, keystream("34", clock=clock, terminator="KEY_ENTER")) == []  # not the end
    [result] = decoder.flush(clock.now + 1)
    assert result.error == "key code 28 is not a character key in layout us"


def test_a_character_key_configured_as_terminator_terminates() -> None:
    decoder = ScanDecoder("us", terminators={ecodes.KEY_SPACE, ecodes.KEY_KP0})
    clock = Clock()
    events = keystream("12", clock=clock, terminator="KEY_SPACE")
    events += keystream("34", clock=clock, terminator="KEY_KP0")
    assert texts(decode(decoder, events)) == ["12", "34"]


def test_a_bare_terminator_is_not_a_scan() -> None:
    assert decode(ScanDecoder("us"), tap("KEY_ENTER", Clock())) == []


def test_msc_syn_and_other_event_types_type_nothing() -> None:
    decoder = ScanDecoder("us")
    t = 1_700_000_000.0
    for event_type in (ecodes.EV_SYN, ecodes.EV_MSC, ecodes.EV_LED, ecodes.EV_REP, ecodes.EV_REL):
        # codes and values that would be "1" and a press if they were EV_KEY
        assert decoder.feed(event_type, ecodes.KEY_1, 1, t) == []
        assert decoder.feed(event_type, ecodes.KEY_ENTER, 1, t) == []
    assert decoder.deadline is None  # nothing started


def test_auto_repeat_is_ignored() -> None:
    clock = Clock()
    events = key("KEY_1", 1, clock)
    for _ in range(3):
        events += key("KEY_1", 2, clock)
    events += key("KEY_1", 0, clock) + tap("KEY_2", clock) + tap("KEY_ENTER", clock)
    assert texts(decode(ScanDecoder("us"), events)) == ["12"]


def test_same_code_twice_gives_two_scans() -> None:
    clock = Clock()
    events = keystream(GTIN, clock=clock) + keystream(GTIN, clock=clock)
    first, second = decode(ScanDecoder("us"), events)
    assert (first.text, second.text) == (GTIN, GTIN)
    assert first.started < first.ended < second.started < second.ended


# stray keys, truncation, size --------------------------------------------------------------------


def test_unknown_key_inside_a_scan_rejects_it_naming_the_code_only() -> None:
    clock = Clock()
    events = keystream("SECRET1", terminator=None, clock=clock) + tap("KEY_F5", clock)
    events += keystream("SECRET2", clock=clock)  # same scan (no pause): consumed and discarded
    events += keystream("OK42", clock=clock)
    rejected, good = decode(ScanDecoder("us"), events)
    assert rejected.text is None
    assert rejected.error == f"key code {ecodes.KEY_F5} is not a character key in layout us"
    assert "SECRET" not in repr(rejected) and "F5" not in rejected.error
    assert good.text == "OK42"


def test_stray_keys_before_a_scan_are_reported_separately() -> None:
    clock = Clock()
    events = tap("KEY_X", clock)  # somebody leaning on a key
    clock.advance(0.5)
    events += tap("KEY_F1", clock)  # a lone function key
    clock.advance(0.5)
    events += keystream(GTIN, clock=clock)
    stray, function_key, scan = decode(ScanDecoder("us"), events)
    assert stray.error is not None and stray.error.startswith("truncated scan: 1 characters")
    assert function_key.error == f"key code {ecodes.KEY_F1} is not a character key in layout us"
    assert scan.text == GTIN


def test_truncated_scan_is_reported_by_flush_and_not_merged() -> None:
    decoder = ScanDecoder("us")
    clock = Clock()
    assert decode(decoder, keystream("12345", clock=clock, terminator=None)) == []
    deadline = decoder.deadline
    assert deadline is not None
    assert decoder.flush(deadline - 0.001) == []  # not yet
    [truncated] = decoder.flush(deadline + 0.001)
    assert truncated.text is None
    assert truncated.error == "truncated scan: 5 characters and no terminator within 50 ms"
    assert decoder.deadline is None and decoder.flush(deadline + 10) == []
    clock.advance(1.0)
    assert texts(decode(decoder, keystream("678", clock=clock))) == ["678"]


def test_truncated_scan_is_split_from_the_next_one_without_flush() -> None:
    clock = Clock()
    events = keystream("12345", clock=clock, terminator=None)
    clock.advance(0.2)
    events += keystream("678", clock=clock)
    truncated, scan = decode(ScanDecoder("us"), events)
    assert truncated.error is not None and "truncated" in truncated.error
    assert truncated.ended < scan.started
    assert scan.text == "678"


def test_timeout_is_configurable() -> None:
    clock = Clock(gap=0.08)  # a slow scanner: 80 ms between key events
    events = keystream("123", clock=clock)
    assert texts(decode(ScanDecoder("us", timeout=0.1), events)) == ["123"]
    assert all(r.error for r in decode(ScanDecoder("us"), events))


def test_scan_of_maximum_length_passes_and_one_more_is_refused() -> None:
    clock = Clock(gap=0.0001)
    ok = decode(ScanDecoder("us"), keystream("7" * 128, clock=clock))
    assert texts(ok) == ["7" * 128]
    [long] = decode(ScanDecoder("us"), keystream("7" * 129, clock=clock))
    assert long.error == "scan longer than 128 characters"
    [short] = decode(ScanDecoder("us", max_length=8), keystream("123456789", clock=clock))
    assert short.error == "scan longer than 8 characters"


def test_memory_stays_bounded_on_an_endless_scan() -> None:
    decoder = ScanDecoder("us")
    t = 1_700_000_000.0
    longest = 0
    for _ in range(20_000):
        decoder.feed(ecodes.EV_KEY, ecodes.KEY_1, 1, t)
        decoder.feed(ecodes.EV_KEY, ecodes.KEY_1, 0, t)
        t += 0.001
        longest = max(longest, len(decoder._chars))  # the only buffer the decoder keeps
    assert longest <= 128
    [result] = decoder.feed(ecodes.EV_KEY, ecodes.KEY_ENTER, 1, t)
    assert result.error == "scan longer than 128 characters"


# timestamps -------------------------------------------------------------------------------------


def test_small_backwards_jitter_stays_one_scan() -> None:
    clock = Clock()
    events = keystream("12", clock=clock, terminator=None)
    clock.advance(-0.010)  # timestamps 10 ms backwards (within the timeout)
    events += keystream("34", clock=clock)
    assert texts(decode(ScanDecoder("us"), events)) == ["1234"]


def test_clock_stepped_back_splits_instead_of_merging() -> None:
    clock = Clock()
    events = keystream("12", clock=clock, terminator=None)
    clock.advance(-3600)  # NTP stepped the clock back an hour mid-scan
    events += keystream("34", clock=clock)
    truncated, scan = decode(ScanDecoder("us"), events)
    assert truncated.error is not None and "truncated" in truncated.error
    assert scan.text == "34"
    # a complete scan followed by older timestamps is simply the next scan
    clock.advance(-7200)
    assert texts(decode(ScanDecoder("us"), keystream("56", clock=clock))) == ["56"]


def test_flush_with_a_clock_far_behind_reports_the_pending_scan() -> None:
    decoder = ScanDecoder("us")
    decode(decoder, keystream("12", terminator=None))
    [result] = decoder.flush(0.0)
    assert result.error is not None and "truncated" in result.error


# results and privacy ----------------------------------------------------------------------------


def test_scan_result_has_exactly_one_of_text_and_error() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ScanResult("a", "b", 0.0, 0.0)
    with pytest.raises(ValueError, match="exactly one"):
        ScanResult(None, None, 0.0, 0.0)
    assert "M0000000427" not in repr(ScanResult("M0000000427", None, 0.0, 1.0))


@pytest.mark.parametrize("hostile", ["'; DROP TABLE--", "<script>alert(1)</script>", "${jndi:ldap://x}"])
def test_hostile_text_is_just_text(hostile: str) -> None:
    [result] = decode(ScanDecoder("us"), keystream(hostile))
    assert result.text == hostile
    assert classify(hostile).kind == "unknown"


def test_reset_rejects_a_scan_in_progress_and_clears_modifiers() -> None:
    decoder = ScanDecoder("us")
    clock = Clock()
    decode(decoder, keystream("12", clock=clock, terminator=None) + key("KEY_LEFTSHIFT", 1, clock))
    [result] = decoder.reset("unplugged")
    assert result.error == "unplugged"
    assert decoder.reset("again") == []
    assert texts(decode(decoder, keystream("a", clock=clock))) == ["a"]  # shift no longer held


def test_fuzz_random_events_never_raise_and_keep_the_invariants() -> None:
    rng = random.Random(20240603)
    interesting_codes = [*range(0, 130), 0x160, 0x2FF, -1, 2**31, 2**63]
    weird_times = [float("nan"), float("inf"), float("-inf"), -1.0, 0.0, 1e300]
    for layout in ("us", "de", "tr"):
        decoder = ScanDecoder(layout, max_length=16)
        t = 1_700_000_000.0
        for _ in range(60_000):
            roll = rng.random()
            event_type = rng.choice((0, 1, 1, 1, 1, 4, 17, 20, -3, 2**40))
            code = rng.choice(interesting_codes)
            value = rng.choice((0, 1, 1, 2, -1, 3, 2**33))
            if roll < 0.01:
                timestamp = rng.choice(weird_times)
            else:
                t += rng.choice((0.0005, 0.002, 0.02, 0.3, -0.01, -5.0))
                timestamp = t
            for result in decoder.feed(event_type, code, value, timestamp) + decoder.flush(timestamp):
                assert (result.text is None) != (result.error is None)
                assert result.text is None or len(result.text) <= 16
            assert len(decoder._chars) <= 16
        decoder.reset("fuzz over")
        assert texts(decode(decoder, keystream("RC-1", layout, clock=Clock(t + 10)))) == ["RC-1"]


def test_strokes_refuses_a_character_the_layout_cannot_type() -> None:
    # the test helper itself must not silently drop characters
    with pytest.raises(ValueError, match="cannot be typed"):
        strokes("ğ", "us")


# the device loop (fake evdev device) ------------------------------------------------------------


class FakeDevice:
    """Stands in for ``evdev.InputDevice``: a pipe for select(), queued events, recorded calls."""

    def __init__(self, *, grab_error: int | None = None) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._events: list[InputEvent] = []
        self._lock = threading.Lock()
        self.calls: list[str] = []
        self.unplugged = False
        self.closed = False
        self.grab_error = grab_error

    def fileno(self) -> int:
        return self._r

    def push(self, events: Iterable[InputEvent]) -> None:
        with self._lock:
            self._events.extend(events)
        os.write(self._w, b"x")

    def unplug(self) -> None:
        self.unplugged = True
        os.write(self._w, b"x")

    def read(self) -> list[InputEvent]:
        self.calls.append("read")
        if self.unplugged:
            raise OSError(errno.ENODEV, "No such device")
        with contextlib.suppress(BlockingIOError):
            os.read(self._r, 4096)
        with self._lock:
            events, self._events = self._events, []
        if not events:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return events

    def grab(self) -> None:
        self.calls.append("grab")
        if self.grab_error is not None:
            raise OSError(self.grab_error, os.strerror(self.grab_error))

    def ungrab(self) -> None:
        self.calls.append("ungrab")
        if self.unplugged:
            raise OSError(errno.ENODEV, "No such device")

    def close(self) -> None:
        self.calls.append("close")
        if not self.closed:
            self.closed = True
            os.close(self._r)
            os.close(self._w)


class Port:
    """A USB port: open_device() returns the plugged device until it is unplugged or closed."""

    def __init__(self) -> None:
        self.device: FakeDevice | None = None
        self.opens = 0
        self.error: OSError | None = None

    def plug(self, device: FakeDevice | None = None) -> FakeDevice:
        self.device = device or FakeDevice()
        return self.device

    def open(self) -> FakeDevice | None:
        self.opens += 1
        if self.error is not None:
            raise self.error
        device = self.device
        if device is None or device.unplugged or device.closed:
            return None
        return device


class Recorder:
    """Collects callbacks from the scanner thread."""

    def __init__(self) -> None:
        self.scans: list[tuple[str, str]] = []
        self.errors: list[tuple[str, str]] = []
        self.changed = threading.Condition()

    def on_scan(self, text: str, name: str) -> None:
        with self.changed:
            self.scans.append((text, name))
            self.changed.notify_all()

    def on_error(self, reason: str, name: str) -> None:
        with self.changed:
            self.errors.append((reason, name))
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), "timed out waiting for a callback"


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def live_stream(text: str, **kwargs: Any) -> list[InputEvent]:
    """A scan stamped with the real clock (as the kernel would), 0.1 ms between key events."""
    return keystream(text, clock=Clock(start=time.time() - 0.002, gap=0.0001), **kwargs)


def make_scanner(port: Port, recorder: Recorder, **kwargs: Any) -> EvdevScanner:
    kwargs.setdefault("retry_interval", 0.02)
    return EvdevScanner(
        recorder.on_scan,
        recorder.on_error,
        match=ScannerMatch(path="/dev/kiosk-scanner"),
        name="till-scanner",
        open_device=port.open,
        **kwargs,
    )


def test_scanner_grabs_decodes_and_always_ungrabs_and_closes() -> None:
    port, recorder = Port(), Recorder()
    device = port.plug()
    scanner = make_scanner(port, recorder, layout="de")
    assert scanner.state == "absent"
    with scanner:
        wait_until(lambda: scanner.state == "present")
        device.push(live_stream("Zürich-1", layout="de"))
        device.push(live_stream(GTIN, layout="de"))
        recorder.wait_for(lambda: len(recorder.scans) == 2)
    assert recorder.scans == [("Zürich-1", "till-scanner"), (GTIN, "till-scanner")]
    assert recorder.errors == []
    calls = [c for c in device.calls if c != "read"]
    assert calls == ["grab", "ungrab", "close"]
    assert scanner.state == "absent"


def test_absent_at_start_then_plugged_in() -> None:
    port, recorder = Port(), Recorder()
    scanner = make_scanner(port, recorder)
    scanner.start()
    try:
        wait_until(lambda: port.opens >= 3)  # it keeps looking, at the retry interval
        assert scanner.state == "absent"
        device = port.plug()
        wait_until(lambda: scanner.state == "present")
        device.push(live_stream("A1"))
        recorder.wait_for(lambda: recorder.scans == [("A1", "till-scanner")])
    finally:
        scanner.close()


def test_retry_is_paced_not_a_busy_loop() -> None:
    port, recorder = Port(), Recorder()
    scanner = make_scanner(port, recorder, retry_interval=0.1)
    scanner.start()
    time.sleep(0.55)
    scanner.close()
    assert 3 <= port.opens <= 8


def test_unplug_mid_scan_reports_it_then_replug_resumes() -> None:
    port, recorder = Port(), Recorder()
    first = port.plug()
    scanner = make_scanner(port, recorder, timeout=5.0)  # the half scan must not time out first
    scanner.start()
    try:
        wait_until(lambda: scanner.state == "present")
        first.push(live_stream("12", terminator=None))
        wait_until(lambda: "read" in first.calls)
        first.unplug()
        recorder.wait_for(lambda: len(recorder.errors) == 1)
        wait_until(lambda: scanner.state == "absent")
        assert recorder.errors == [("scanner disconnected in the middle of a scan", "till-scanner")]
        assert first.closed and first.calls[0] == "grab" and first.calls[-2:] == ["ungrab", "close"]
        second = port.plug()
        wait_until(lambda: scanner.state == "present")
        second.push(live_stream(GTIN))
        recorder.wait_for(lambda: recorder.scans == [(GTIN, "till-scanner")])
    finally:
        scanner.close()
    assert second.calls[-2:] == ["ungrab", "close"]


def test_truncated_scan_is_reported_without_further_events() -> None:
    port, recorder = Port(), Recorder()
    device = port.plug()
    with make_scanner(port, recorder) as scanner:
        wait_until(lambda: scanner.state == "present")
        device.push(live_stream("123", terminator=None))
        recorder.wait_for(lambda: len(recorder.errors) == 1, timeout=1.0)
    [(reason, name)] = recorder.errors
    assert reason.startswith("truncated scan: 3 characters") and name == "till-scanner"
    assert recorder.scans == []


@pytest.mark.parametrize("plugged", [True, False])
def test_close_returns_promptly(plugged: bool) -> None:
    port, recorder = Port(), Recorder()
    if plugged:
        port.plug()
    scanner = make_scanner(port, recorder, retry_interval=30.0)
    scanner.start()
    wait_until(lambda: port.opens >= 1)
    if plugged:
        wait_until(lambda: scanner.state == "present")
    time.sleep(0.05)  # let it settle into select() / the retry wait
    began = time.monotonic()
    scanner.close()
    assert time.monotonic() - began < 0.5
    assert not any(t.name == "scanner-till-scanner" for t in threading.enumerate())


def test_start_and_close_are_idempotent() -> None:
    port, recorder = Port(), Recorder()
    port.plug()
    scanner = make_scanner(port, recorder)
    scanner.close()  # before start: nothing to do
    scanner.start()
    scanner.start()
    assert sum(t.name == "scanner-till-scanner" for t in threading.enumerate()) == 1
    scanner.close()
    scanner.close()
    assert scanner.state == "absent"
    assert not any(t.name == "scanner-till-scanner" for t in threading.enumerate())


def test_grab_refused_is_an_error_state_and_the_device_is_closed() -> None:
    port, recorder = Port(), Recorder()
    device = port.plug(FakeDevice(grab_error=errno.EBUSY))
    scanner = make_scanner(port, recorder)
    scanner.start()
    try:
        wait_until(lambda: scanner.state == "error")
    finally:
        scanner.close()
    assert device.calls[:2] == ["grab", "close"]  # not grabbed, so no ungrab, but closed
    assert "ungrab" not in device.calls


def test_open_failure_is_an_error_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    port, recorder = Port(), Recorder()
    port.error = PermissionError(errno.EACCES, "Permission denied")
    scanner = make_scanner(port, recorder)
    with caplog.at_level(logging.DEBUG, logger="edge.devices.scanner"):
        scanner.start()
        try:
            wait_until(lambda: port.opens >= 5)
            assert scanner.state == "error"
        finally:
            scanner.close()
    messages = [r.getMessage() for r in caplog.records if "cannot open" in r.getMessage()]
    assert messages == ["scanner till-scanner: cannot open the device: Permission denied"]


def test_callback_errors_are_logged_without_the_text_and_do_not_stop_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = Port()
    device = port.plug()
    seen: list[str] = []

    def failing_on_scan(text: str, name: str) -> None:
        seen.append(text)
        raise ValueError(f"no such member {text}")

    def failing_on_error(reason: str, name: str) -> None:
        raise RuntimeError("intake closed")

    scanner = EvdevScanner(
        failing_on_scan,
        failing_on_error,
        match=ScannerMatch(name="*scanner*"),
        open_device=port.open,
        retry_interval=0.02,
    )
    with caplog.at_level(logging.DEBUG, logger="edge.devices.scanner"), scanner:
        wait_until(lambda: scanner.state == "present")
        device.push(live_stream("M0000000427"))
        device.push(live_stream("SECRET", terminator="KEY_TAB"))
        device.push(live_stream("M0000000427"))
        wait_until(lambda: len(seen) == 3)
        device.push(live_stream("9", terminator="KEY_F5"))  # rejected -> on_error raises
        wait_until(lambda: any("on_error callback" in r.getMessage() for r in caplog.records))
        assert scanner.state == "present"
    log_text = "\n".join(r.getMessage() for r in caplog.records)
    assert "on_scan callback raised ValueError" in log_text
    assert "on_error callback raised RuntimeError" in log_text
    assert "M0000000427" not in log_text and "SECRET" not in log_text  # frames only, no message


# finding the device ----------------------------------------------------------------------------


class FakeInfo:
    def __init__(self, vendor: int, product: int) -> None:
        self.vendor, self.product = vendor, product


class FakeInput:
    """What find_device reads from ``evdev.InputDevice``."""

    def __init__(self, path: str, name: str, vendor: int, product: int, keys: list[int]) -> None:
        self.path, self.name, self.info = path, name, FakeInfo(vendor, product)
        self._keys = keys
        self.closed = False

    def capabilities(self) -> dict[int, list[int]]:
        return {ecodes.EV_KEY: self._keys, ecodes.EV_MSC: [ecodes.MSC_SCAN]}

    def close(self) -> None:
        self.closed = True


KEYBOARD = [ecodes.KEY_A, ecodes.KEY_ENTER]


@pytest.fixture
def inputs() -> dict[str, FakeInput]:
    return {
        "/dev/input/event0": FakeInput(
            "/dev/input/event0", "AT Translated Keyboard", 0x0001, 0x0001, KEYBOARD
        ),
        "/dev/input/event3": FakeInput(
            "/dev/input/event3", "Symbol Bar Code Scanner Consumer Control", 0x05E0, 0x1200, [ecodes.KEY_MUTE]
        ),
        "/dev/input/event4": FakeInput(
            "/dev/input/event4", "Symbol Bar Code Scanner", 0x05E0, 0x1200, KEYBOARD
        ),
    }


def opener(inputs: dict[str, FakeInput], denied: Iterable[str] = ()) -> Callable[[str], FakeInput]:
    def open_path(path: str) -> FakeInput:
        if path in denied:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        if path not in inputs:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return inputs[path]

    return open_path


@pytest.mark.parametrize(
    "match",
    [
        ScannerMatch(vendor=0x05E0, product=0x1200),
        ScannerMatch(name="*bar code*"),
        ScannerMatch(path="/dev/kiosk-missing", vendor=0x05E0),
    ],
)
def test_find_device_picks_the_scanners_keyboard_interface(
    inputs: dict[str, FakeInput], match: ScannerMatch
) -> None:
    found = find_device(match, list_devices=lambda: list(inputs), open_path=opener(inputs))
    assert found is inputs["/dev/input/event4"]
    assert inputs["/dev/input/event0"].closed and inputs["/dev/input/event3"].closed
    assert not found.closed


def test_find_device_by_path_first_and_none_when_absent(inputs: dict[str, FakeInput]) -> None:
    inputs["/dev/kiosk-scanner"] = inputs["/dev/input/event0"]
    by_path = ScannerMatch(path="/dev/kiosk-scanner", vendor=0x05E0)
    found = find_device(by_path, list_devices=lambda: list(inputs), open_path=opener(inputs))
    assert found is inputs["/dev/kiosk-scanner"]
    missing = ScannerMatch(path="/dev/kiosk-nothing")
    assert find_device(missing, list_devices=lambda: list(inputs), open_path=opener(inputs)) is None
    nobody = ScannerMatch(vendor=0xDEAD)
    assert find_device(nobody, list_devices=lambda: list(inputs), open_path=opener(inputs)) is None
    with pytest.raises(PermissionError):
        find_device(
            ScannerMatch(path="/dev/kiosk-scanner"),
            list_devices=lambda: [],
            open_path=opener(inputs, denied=["/dev/kiosk-scanner"]),
        )


def test_list_scanners_reports_ids_matches_and_unreadable_devices(inputs: dict[str, FakeInput]) -> None:
    paths = [*inputs, "/dev/input/event9"]
    found = list_scanners(
        ScannerMatch(vendor=0x05E0, product=0x1200),
        list_devices=lambda: paths,
        open_path=opener(inputs, denied=["/dev/input/event9"]),
    )
    table = {(i.path, i.vendor_product, i.has_enter_key, i.matches) for i in found}
    assert table == {
        ("/dev/input/event0", "0001:0001", True, False),
        ("/dev/input/event3", "05e0:1200", False, False),
        ("/dev/input/event4", "05e0:1200", True, True),
        ("/dev/input/event9", "?", False, False),
    }
    assert [i.error for i in found if i.path == "/dev/input/event9"] == ["Permission denied"]
    assert all(d.closed for d in inputs.values())


def test_scanner_match_needs_a_criterion_and_sane_ids() -> None:
    with pytest.raises(ValueError, match="needs"):
        ScannerMatch()
    with pytest.raises(ValueError, match="vendor"):
        ScannerMatch(vendor=0x10000)
    assert ScannerMatch(name="*SCANNER*").matches(vendor=1, product=2, name="Honeywell Scanner")
    assert not ScannerMatch(vendor=1, name="*scanner*").matches(vendor=2, product=2, name="scanner")
    assert not ScannerMatch(path="/dev/x").matches(vendor=1, product=1, name="x")


def test_real_evdev_back_end_on_a_machine_without_input_devices() -> None:
    # No /dev/input here: the real finder must report absent, and close promptly, never crash.
    if os.path.exists("/dev/input"):
        pytest.skip("this machine has input devices; the absent case is covered with fakes")
    assert list_scanners(ScannerMatch(vendor=0x05E0)) == []
    recorder = Recorder()
    scanner = EvdevScanner(
        recorder.on_scan, recorder.on_error, match=ScannerMatch(path="/dev/kiosk-scanner", vendor=0x05E0)
    )
    scanner.start()
    time.sleep(0.05)
    assert scanner.state == "absent"
    began = time.monotonic()
    scanner.close()
    assert time.monotonic() - began < 0.5
