"""Test-only: the evdev event stream a keyboard-wedge scanner sends for a text, in a given layout.

The layouts are written here again, independently of ``edge/devices/keymaps.py`` and in another shape
(keyboard rows as printed on the keycaps, with evdev's own ``ecodes`` names), so that a wrong entry in
either table makes a test fail instead of agreeing with itself.

Each key press or release is what the kernel delivers for a USB HID keyboard: ``EV_MSC/MSC_SCAN`` with
the HID usage, ``EV_KEY`` with the key code, then ``EV_SYN/SYN_REPORT``, all with the same timestamp.
"""

# ruff: noqa: RUF001, RUF003  # look-alike characters (ı, ´, İ) are the point of a keyboard layout

from __future__ import annotations

from collections.abc import Iterable, Sequence

from evdev import InputEvent, ecodes

from edge.devices.scandecode import ScanDecoder, ScanResult

NUMBER = "KEY_GRAVE KEY_1 KEY_2 KEY_3 KEY_4 KEY_5 KEY_6 KEY_7 KEY_8 KEY_9 KEY_0 KEY_MINUS KEY_EQUAL"
TOP = "KEY_Q KEY_W KEY_E KEY_R KEY_T KEY_Y KEY_U KEY_I KEY_O KEY_P KEY_LEFTBRACE KEY_RIGHTBRACE"
HOME = "KEY_A KEY_S KEY_D KEY_F KEY_G KEY_H KEY_J KEY_K KEY_L KEY_SEMICOLON KEY_APOSTROPHE KEY_BACKSLASH"
BOTTOM = "KEY_Z KEY_X KEY_C KEY_V KEY_B KEY_N KEY_M KEY_COMMA KEY_DOT KEY_SLASH"
ISO = "KEY_102ND"  # the extra key left of Z on European keyboards

# layout -> rows of (key names, unshifted characters, shifted characters)
ROWS: dict[str, list[tuple[str, str, str]]] = {
    "us": [
        (NUMBER, "`1234567890-=", "~!@#$%^&*()_+"),
        (TOP, "qwertyuiop[]", "QWERTYUIOP{}"),
        (HOME, "asdfghjkl;'\\", 'ASDFGHJKL:"|'),
        (BOTTOM, "zxcvbnm,./", "ZXCVBNM<>?"),
        ("KEY_SPACE", " ", " "),
    ],
    "de": [
        (NUMBER, "^1234567890ß´", '°!"§$%&/()=?`'),
        (TOP, "qwertzuiopü+", "QWERTZUIOPÜ*"),
        (HOME, "asdfghjklöä#", "ASDFGHJKLÖÄ'"),
        (ISO + " " + BOTTOM, "<yxcvbnm,.-", ">YXCVBNM;:_"),
        ("KEY_SPACE", " ", " "),
    ],
    "tr": [
        (NUMBER, '"1234567890*-', "é!'^+%&/()=?_"),
        (TOP, "qwertyuıopğü", "QWERTYUIOPĞÜ"),
        (HOME, "asdfghjklşi,", "ASDFGHJKLŞİ;"),
        (ISO + " " + BOTTOM, "<zxcvbnmöç.", ">ZXCVBNMÖÇ:"),
        ("KEY_SPACE", " ", " "),
    ],
}

# Characters only reachable with AltGr (RIGHTALT); where a character is also on a plain level, the
# plain level wins, as a scanner would choose.
ALTGR: dict[str, dict[str, str]] = {
    "us": {},
    "de": {
        "@": "KEY_Q",
        "€": "KEY_E",
        "{": "KEY_7",
        "[": "KEY_8",
        "]": "KEY_9",
        "}": "KEY_0",
        "\\": "KEY_MINUS",
        "~": "KEY_RIGHTBRACE",
        "|": "KEY_102ND",
        "µ": "KEY_M",
        "²": "KEY_2",
        "³": "KEY_3",
    },
    "tr": {
        "@": "KEY_Q",
        "€": "KEY_E",
        "₺": "KEY_T",
        "#": "KEY_3",
        "$": "KEY_4",
        "{": "KEY_7",
        "[": "KEY_8",
        "]": "KEY_9",
        "}": "KEY_0",
        "\\": "KEY_MINUS",
        "|": "KEY_EQUAL",
        "~": "KEY_RIGHTBRACE",
        "`": "KEY_BACKSLASH",
    },
}

# German dead keys: the scanner presses the dead key, then space, to type the accent itself.
DEAD: dict[str, set[str]] = {"us": set(), "de": {"^", "´", "`"}, "tr": set()}

KEYPAD = {
    **{str(d): f"KEY_KP{d}" for d in range(10)},
    "-": "KEY_KPMINUS",
    "+": "KEY_KPPLUS",
    ".": "KEY_KPDOT",
    "/": "KEY_KPSLASH",
    "*": "KEY_KPASTERISK",
}

# HID keyboard usages (USB HID Usage Tables, page 7), sent as MSC_SCAN = 0x70000 | usage.
_HID = {
    **{f"KEY_{chr(ord('A') + i)}": 0x04 + i for i in range(26)},
    **{f"KEY_{d}": 0x1E + d - 1 for d in range(1, 10)},
    "KEY_0": 0x27,
    "KEY_ENTER": 0x28,
    "KEY_ESC": 0x29,
    "KEY_BACKSPACE": 0x2A,
    "KEY_TAB": 0x2B,
    "KEY_SPACE": 0x2C,
    "KEY_MINUS": 0x2D,
    "KEY_EQUAL": 0x2E,
    "KEY_LEFTBRACE": 0x2F,
    "KEY_RIGHTBRACE": 0x30,
    "KEY_BACKSLASH": 0x31,
    "KEY_SEMICOLON": 0x33,
    "KEY_APOSTROPHE": 0x34,
    "KEY_GRAVE": 0x35,
    "KEY_COMMA": 0x36,
    "KEY_DOT": 0x37,
    "KEY_SLASH": 0x38,
    "KEY_CAPSLOCK": 0x39,
    **{f"KEY_F{n}": 0x3A + n - 1 for n in range(1, 13)},
    "KEY_NUMLOCK": 0x53,
    "KEY_KPSLASH": 0x54,
    "KEY_KPASTERISK": 0x55,
    "KEY_KPMINUS": 0x56,
    "KEY_KPPLUS": 0x57,
    "KEY_KPENTER": 0x58,
    **{f"KEY_KP{d}": 0x59 + d - 1 for d in range(1, 10)},
    "KEY_KP0": 0x62,
    "KEY_KPDOT": 0x63,
    "KEY_102ND": 0x64,
    "KEY_LEFTCTRL": 0xE0,
    "KEY_LEFTSHIFT": 0xE1,
    "KEY_LEFTALT": 0xE2,
    "KEY_LEFTMETA": 0xE3,
    "KEY_RIGHTCTRL": 0xE4,
    "KEY_RIGHTSHIFT": 0xE5,
    "KEY_RIGHTALT": 0xE6,
}

Stroke = tuple[str, tuple[str, ...]]
"""One key to tap and the modifier keys to hold around it."""


def strokes(text: str, layout: str = "us", *, keypad_digits: bool = False) -> list[Stroke]:
    """The key taps a scanner configured for ``layout`` makes to type ``text``."""
    plain: dict[str, Stroke] = {}
    for names, lower, upper in ROWS[layout]:
        keys = names.split()
        assert len(keys) == len(lower) == len(upper), (layout, names)
        for key, low, up in zip(keys, lower, upper, strict=True):
            plain.setdefault(low, (key, ()))
            plain.setdefault(up, (key, ("KEY_LEFTSHIFT",)))
    for char, key in ALTGR[layout].items():
        plain.setdefault(char, (key, ("KEY_RIGHTALT",)))
    out: list[Stroke] = []
    for char in text:
        if keypad_digits and char in KEYPAD:
            out.append((KEYPAD[char], ()))
        elif char in DEAD[layout]:
            out.extend([plain[char], ("KEY_SPACE", ())])
        elif char in plain:
            out.append(plain[char])
        else:
            raise ValueError(f"{char!r} cannot be typed in layout {layout}")
    return out


class Clock:
    """Event timestamps in whole microseconds, so streams are exact and comparable."""

    def __init__(self, start: float = 1_700_000_000.0, gap: float = 0.002) -> None:
        self.us = round(start * 1_000_000)
        self.gap_us = round(gap * 1_000_000)

    @property
    def now(self) -> float:
        """The current timestamp as evdev's ``InputEvent.timestamp()`` would give it."""
        return self.us / 1_000_000

    def advance(self, seconds: float) -> None:
        """Move the clock (negative: backwards, as a stepped clock would)."""
        self.us += round(seconds * 1_000_000)


def key(name: str, value: int, clock: Clock) -> list[InputEvent]:
    """One key event as the kernel reports it (MSC_SCAN, EV_KEY, SYN_REPORT), then a gap."""
    sec, usec = divmod(clock.us, 1_000_000)
    code = ecodes.ecodes[name]
    events = [
        InputEvent(sec, usec, ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70000 | _HID.get(name, code)),
        InputEvent(sec, usec, ecodes.EV_KEY, code, value),
        InputEvent(sec, usec, ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
    ]
    clock.us += clock.gap_us
    return events


def tap(name: str, clock: Clock, modifiers: Sequence[str] = ()) -> list[InputEvent]:
    """Press and release ``name`` with ``modifiers`` held around it."""
    events: list[InputEvent] = []
    for mod in modifiers:
        events += key(mod, 1, clock)
    events += key(name, 1, clock) + key(name, 0, clock)
    for mod in reversed(modifiers):
        events += key(mod, 0, clock)
    return events


def keystream(
    text: str,
    layout: str = "us",
    *,
    clock: Clock | None = None,
    terminator: str | None = "KEY_ENTER",
    keypad_digits: bool = False,
) -> list[InputEvent]:
    """The whole stream for one scan of ``text``, ending with ``terminator`` (None: no terminator)."""
    clock = clock or Clock()
    events: list[InputEvent] = []
    for name, modifiers in strokes(text, layout, keypad_digits=keypad_digits):
        events += tap(name, clock, modifiers)
    if terminator is not None:
        events += tap(terminator, clock)
    return events


def decode(decoder: ScanDecoder, events: Iterable[InputEvent]) -> list[ScanResult]:
    """Feed every event as the device loop does; returns the completed scans."""
    out: list[ScanResult] = []
    for event in events:
        out += decoder.feed(event.type, event.code, event.value, event.timestamp())
    return out
