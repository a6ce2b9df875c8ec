"""Turn the key events of a keyboard-wedge barcode scanner into scans (pure Python, no evdev).

A scanner "types" its code as key presses followed by a terminator key (Enter by default). The
decoder applies the scanner's keyboard layout, the Shift/CapsLock/AltGr state and the German dead
keys, and splits the stream into scans. Why the extra rules:

- **Timeout**: a scanner types a whole code within a few milliseconds per key. Characters followed by a
  silence longer than ``timeout`` without a terminator are a truncated scan (a cable pulled mid-code,
  or somebody leaning on a keyboard): it is reported as rejected, never silently dropped and never
  glued to the next scan. A timestamp that jumps backwards by more than ``timeout`` (a clock step)
  separates scans the same way; small jitter does not.
- **Anything unexpected rejects the scan**, with a reason naming only the key code: a function key in
  the middle of a code means the code is not what was printed. The rest of that scan is consumed and
  discarded, so the next scan starts clean.
- **Bounded**: a scan longer than ``max_length`` is rejected and its characters are dropped at once, so
  a stuck key or a hostile device cannot grow memory.
- **Privacy**: scanned text may be a loyalty code. Nothing here logs, and :class:`ScanResult` keeps the
  text out of its ``repr``, so a result written to a log by accident does not leak it.

Only key presses (value 1) produce characters; auto-repeat (value 2) is ignored, since a scanner
never holds a key down and a repeating keyboard key is not part of a printed code. EV_MSC/MSC_SCAN,
EV_SYN and every other event type are ignored. ``feed`` never raises, whatever it is given.

Not thread-safe: one decoder per device, fed by the one thread that reads that device.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from edge.devices import keymaps
from edge.devices.keymaps import ALTGR, SHIFTED, UNSHIFTED, Layout

DEFAULT_TIMEOUT: Final = 0.050
DEFAULT_MAX_LENGTH: Final = 128
DEFAULT_TERMINATORS: Final = frozenset({keymaps.KEY_ENTER, keymaps.KEY_KPENTER, keymaps.KEY_TAB})

_SHIFT_BITS: Final[Mapping[int, int]] = {keymaps.KEY_LEFTSHIFT: 1, keymaps.KEY_RIGHTSHIFT: 2}
_OTHER_MOD_BITS: Final[Mapping[int, int]] = {
    keymaps.KEY_LEFTCTRL: 1,
    keymaps.KEY_RIGHTCTRL: 2,
    keymaps.KEY_LEFTALT: 4,
    keymaps.KEY_LEFTMETA: 8,
    keymaps.KEY_RIGHTMETA: 16,
}
_MODIFIERS: Final = frozenset({*_SHIFT_BITS, *_OTHER_MOD_BITS, keymaps.KEY_RIGHTALT})
# Lock keys a scanner may press to set up its own state; they type nothing (CapsLock is handled).
_IGNORED_KEYS: Final = frozenset({keymaps.KEY_NUMLOCK, keymaps.KEY_SCROLLLOCK})

# Table index: bit 0 Shift held, bit 1 CapsLock on, bit 2 AltGr held.
_SHIFT: Final = 1
_CAPS: Final = 2
_ALTGR: Final = 4
_EMPTY: Final[Mapping[int, str]] = {}
_SPACING: Final[Mapping[str, str]] = {mark: char for char, mark in keymaps.DEAD_COMBINING.items()}


@dataclass(frozen=True, slots=True)
class ScanResult:
    """One scan: either ``text`` (accepted) or ``error`` (rejected, with why), never both.

    ``started``/``ended`` are the timestamps of the scan's first and last key event. ``text`` is left
    out of ``repr`` on purpose (privacy: it may be a loyalty code).
    """

    text: str | None = field(repr=False)
    error: str | None
    started: float
    ended: float

    def __post_init__(self) -> None:
        if (self.text is None) == (self.error is None):
            raise ValueError("a ScanResult has exactly one of text and error")

    @property
    def ok(self) -> bool:
        """Whether the scan was accepted."""
        return self.error is None


def _build_tables(
    layout: Layout, terminators: frozenset[int]
) -> tuple[list[dict[int, str]], dict[tuple[int, int], str]]:
    """Precompute one code->character dict per modifier state, so a key press costs one lookup.

    Returns the eight tables (indexed by the Shift/CapsLock/AltGr bits) and, for the dead keys, the
    combining mark per (code, state).
    """
    tables: list[dict[int, str]] = []
    dead: dict[tuple[int, int], str] = {}
    for state in range(8):
        table: dict[int, str] = {}
        for code, chars in layout.keys.items():
            if code in terminators:
                continue
            if state & _ALTGR:
                level = ALTGR if not state & _SHIFT else None  # AltGr+Shift (level 4) is not modelled
            else:
                shifted = bool(state & _SHIFT)
                if state & _CAPS and keymaps.is_caps_letter(chars):
                    shifted = not shifted
                level = SHIFTED if shifted else UNSHIFTED
            if level is None:
                continue
            char = chars[level]
            if char is None:
                continue
            if (code, level) in layout.dead:
                dead[code, state] = keymaps.DEAD_COMBINING[char]
            else:
                table[code] = char
        for code, char in keymaps.KEYPAD.items():
            if code not in terminators:
                table[code] = char
        tables.append(table)
    return tables, dead


class ScanDecoder:
    """Key events in, :class:`ScanResult` out; see the module docstring for the rules."""

    __slots__ = (
        "_active",
        "_altgr",
        "_caps",
        "_chars",
        "_dead",
        "_dead_code",
        "_dead_marks",
        "_error",
        "_initial_caps",
        "_last",
        "_layout",
        "_max",
        "_other_mods",
        "_shift",
        "_started",
        "_table",
        "_tables",
        "_terminators",
        "_timeout",
    )

    def __init__(
        self,
        layout: str | Layout = "us",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_length: int = DEFAULT_MAX_LENGTH,
        terminators: Iterable[int] = DEFAULT_TERMINATORS,
        capslock: bool = False,
    ) -> None:
        """``capslock`` is the CapsLock state the scanner starts in (normally off)."""
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, not {max_length!r}")
        self._layout = keymaps.get_layout(layout) if isinstance(layout, str) else layout
        self._timeout = float(timeout)
        self._max = max_length
        self._terminators = frozenset(terminators)
        self._tables, self._dead_marks = _build_tables(self._layout, self._terminators)
        self._initial_caps = capslock
        self._chars: list[str] = []
        self._active = False
        self._error: str | None = None
        self._started = 0.0
        self._last = 0.0
        self._shift = 0
        self._other_mods = 0
        self._altgr = False
        self._caps = capslock
        self._dead: str | None = None
        self._dead_code = 0
        self._table: Mapping[int, str] = self._tables[_CAPS if capslock else 0]

    @property
    def layout(self) -> str:
        """The name of the layout the scanner is configured for."""
        return self._layout.name

    @property
    def deadline(self) -> float | None:
        """When the scan in progress times out (same clock as the timestamps), or None when idle.

        The device loop sleeps until then so that a truncated scan is reported promptly.
        """
        return self._last + self._timeout if self._active else None

    def feed(self, event_type: int, code: int, value: int, timestamp: float) -> list[ScanResult]:
        """Take one input event; returns the scans it completed (usually none, at most two)."""
        if event_type != 1:  # EV_KEY; SYN, MSC_SCAN and everything else carry nothing for us
            return []
        out: list[ScanResult] = []
        if self._active:
            gap = timestamp - self._last
            if gap > self._timeout or gap < -self._timeout:
                out.append(self._finish(self._last, truncated=True))
        self._last = timestamp
        if value != 1:
            if value == 0 and code in _MODIFIERS:
                self._modifier(code, pressed=False)
            return out
        char = self._table.get(code)
        if char is not None:  # the hot path: a character key with no dead key or Ctrl pending
            if not self._active:
                self._active = True
                self._started = timestamp
            if self._error is None:
                if len(self._chars) < self._max:
                    self._chars.append(char)
                else:
                    self._reject(f"scan longer than {self._max} characters")
            return out
        if code in self._terminators:
            if self._active:
                out.append(self._finish(timestamp, truncated=False))
            return out
        self._other_press(code, timestamp)
        return out

    def flush(self, now: float) -> list[ScanResult]:
        """Report the scan in progress as truncated if ``now`` is past its deadline.

        The device loop calls this whenever it wakes up without events, with the current time on the
        clock of the event timestamps.
        """
        if self._active:
            gap = now - self._last
            if gap > self._timeout or gap < -self._timeout:
                return [self._finish(self._last, truncated=True)]
        return []

    def reset(self, reason: str) -> list[ScanResult]:
        """Forget all state (the device went away); a scan in progress is rejected with ``reason``."""
        out: list[ScanResult] = []
        if self._active:
            out.append(ScanResult(None, reason, self._started, self._last))
        self._chars.clear()
        self._active = False
        self._error = None
        self._dead = None
        self._shift = 0
        self._other_mods = 0
        self._altgr = False
        self._caps = self._initial_caps
        self._select_table()
        return out

    # internals -----------------------------------------------------------------------------------

    def _state(self) -> int:
        return (_SHIFT if self._shift else 0) | (_CAPS if self._caps else 0) | (_ALTGR if self._altgr else 0)

    def _select_table(self) -> None:
        # With a dead key pending or Ctrl/Alt/Meta held, every key goes through _other_press.
        if self._dead is not None or self._other_mods:
            self._table = _EMPTY
        else:
            self._table = self._tables[self._state()]

    def _modifier(self, code: int, *, pressed: bool) -> None:
        if code in _SHIFT_BITS:
            bit = _SHIFT_BITS[code]
            self._shift = self._shift | bit if pressed else self._shift & ~bit
        elif code == keymaps.KEY_RIGHTALT:
            self._altgr = pressed
        else:
            bit = _OTHER_MOD_BITS[code]
            self._other_mods = self._other_mods | bit if pressed else self._other_mods & ~bit
        self._select_table()

    def _reject(self, reason: str) -> None:
        """Mark the scan in progress rejected (first reason wins) and drop its characters."""
        if self._error is None:
            self._error = reason
        self._chars.clear()

    def _append(self, char: str) -> None:
        if self._error is None:
            if len(self._chars) < self._max:
                self._chars.append(char)
            else:
                self._reject(f"scan longer than {self._max} characters")

    def _other_press(self, code: int, timestamp: float) -> None:
        """A press that is not a plain character of the current table: the rare cases."""
        if code in _MODIFIERS:
            self._modifier(code, pressed=True)
            return
        if code == keymaps.KEY_CAPSLOCK:
            self._caps = not self._caps
            self._select_table()
            return
        if code in _IGNORED_KEYS:
            return
        if not self._active:
            self._active = True
            self._started = timestamp
        state = self._state()
        if self._other_mods:
            self._reject(f"key code {code} pressed with Ctrl, Alt or Meta held")
            return
        mark = self._dead_marks.get((code, state))
        if self._dead is not None:
            self._compose(code, state, mark)
            return
        if mark is not None:
            self._dead = mark
            self._dead_code = code
            self._select_table()
            return
        if code in self._layout.keys:
            level = "with AltGr and Shift" if state & _ALTGR and state & _SHIFT else "at this level"
            self._reject(f"key code {code} has no character {level} in layout {self._layout.name}")
        else:
            self._reject(f"key code {code} is not a character key in layout {self._layout.name}")

    def _compose(self, code: int, state: int, mark: str | None) -> None:
        """The key after a dead key: space gives the accent itself, a letter the accented letter."""
        dead_mark, dead_code = self._dead, self._dead_code
        assert dead_mark is not None
        self._dead = None
        self._select_table()
        base = None if mark is not None else self._tables[state].get(code)
        composed = None
        if base == " ":
            composed = _SPACING[dead_mark]
        elif base is not None:
            candidate = unicodedata.normalize("NFC", base + dead_mark)
            composed = candidate if len(candidate) == 1 else None
        if composed is None:
            self._reject(f"dead key code {dead_code} does not combine with key code {code}")
        else:
            self._append(composed)

    def _finish(self, ended: float, *, truncated: bool) -> ScanResult:
        """Close the scan in progress and reset for the next one."""
        if self._error is not None:
            result = ScanResult(None, self._error, self._started, ended)
        elif truncated:
            result = ScanResult(
                None,
                f"truncated scan: {len(self._chars)} characters and no terminator within "
                f"{self._timeout * 1000:.0f} ms",
                self._started,
                ended,
            )
        elif self._dead is not None:
            result = ScanResult(
                None, f"dead key code {self._dead_code} not followed by a character", self._started, ended
            )
        else:
            result = ScanResult("".join(self._chars), None, self._started, ended)
        self._chars.clear()
        self._active = False
        self._error = None
        if self._dead is not None:
            self._dead = None
            self._select_table()
        return result
