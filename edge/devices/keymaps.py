"""Keyboard layouts of a keyboard-wedge barcode scanner: Linux key codes to characters.

A USB scanner in keyboard mode does not send characters, it sends *key presses*, and which keys it
presses for a character depends on the national layout it was configured for: a scanner set to German
presses KEY_Y for "z" and Shift+KEY_2 for '"'. The decoder therefore has to apply the same layout, or
a code with letters or symbols is decoded wrongly.

The tables map key codes (plain integers from ``linux/input-event-codes.h``; evdev is deliberately not
imported here, so the tables load on any machine) to ``(unshifted, shifted, altgr)``. They follow
xkeyboard-config's ``symbols/us``, ``symbols/de`` (``latin(type4)`` + German) and ``symbols/tr``
(Turkish-Q, ``latin`` + Turkish) for the first three levels; AltGr+Shift (level 4) is not modelled, no
scanner needs it. Dead keys (German ``^``, ``´``, `````) are listed in :attr:`Layout.dead` and hold the
spacing character they produce before a space. Keypad keys give the same character in every layout
(scanners use them for digits in "Alt/keypad" modes); note that xkb's de and tr would give "," for
KEY_KPDOT, a scanner configured for those layouts is expected to send its own decimal key instead.
"""

# ruff: noqa: RUF001, RUF002, RUF003  # look-alike characters (ı, ´, –, ×) are the point of a keymap

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

# Event types and codes (linux/input-event-codes.h), duplicated so no device library is needed here.
EV_SYN: Final = 0x00
EV_KEY: Final = 0x01
EV_MSC: Final = 0x04
MSC_SCAN: Final = 0x04

KEY_ESC: Final = 1
KEY_1: Final = 2
KEY_2: Final = 3
KEY_3: Final = 4
KEY_4: Final = 5
KEY_5: Final = 6
KEY_6: Final = 7
KEY_7: Final = 8
KEY_8: Final = 9
KEY_9: Final = 10
KEY_0: Final = 11
KEY_MINUS: Final = 12
KEY_EQUAL: Final = 13
KEY_BACKSPACE: Final = 14
KEY_TAB: Final = 15
KEY_Q: Final = 16
KEY_W: Final = 17
KEY_E: Final = 18
KEY_R: Final = 19
KEY_T: Final = 20
KEY_Y: Final = 21
KEY_U: Final = 22
KEY_I: Final = 23
KEY_O: Final = 24
KEY_P: Final = 25
KEY_LEFTBRACE: Final = 26
KEY_RIGHTBRACE: Final = 27
KEY_ENTER: Final = 28
KEY_LEFTCTRL: Final = 29
KEY_A: Final = 30
KEY_S: Final = 31
KEY_D: Final = 32
KEY_F: Final = 33
KEY_G: Final = 34
KEY_H: Final = 35
KEY_J: Final = 36
KEY_K: Final = 37
KEY_L: Final = 38
KEY_SEMICOLON: Final = 39
KEY_APOSTROPHE: Final = 40
KEY_GRAVE: Final = 41
KEY_LEFTSHIFT: Final = 42
KEY_BACKSLASH: Final = 43
KEY_Z: Final = 44
KEY_X: Final = 45
KEY_C: Final = 46
KEY_V: Final = 47
KEY_B: Final = 48
KEY_N: Final = 49
KEY_M: Final = 50
KEY_COMMA: Final = 51
KEY_DOT: Final = 52
KEY_SLASH: Final = 53
KEY_RIGHTSHIFT: Final = 54
KEY_KPASTERISK: Final = 55
KEY_LEFTALT: Final = 56
KEY_SPACE: Final = 57
KEY_CAPSLOCK: Final = 58
KEY_F1: Final = 59
KEY_NUMLOCK: Final = 69
KEY_SCROLLLOCK: Final = 70
KEY_KP7: Final = 71
KEY_KP8: Final = 72
KEY_KP9: Final = 73
KEY_KPMINUS: Final = 74
KEY_KP4: Final = 75
KEY_KP5: Final = 76
KEY_KP6: Final = 77
KEY_KPPLUS: Final = 78
KEY_KP1: Final = 79
KEY_KP2: Final = 80
KEY_KP3: Final = 81
KEY_KP0: Final = 82
KEY_KPDOT: Final = 83
KEY_102ND: Final = 86
KEY_KPENTER: Final = 96
KEY_RIGHTCTRL: Final = 97
KEY_KPSLASH: Final = 98
KEY_RIGHTALT: Final = 100
KEY_KPEQUAL: Final = 117
KEY_KPCOMMA: Final = 121
KEY_LEFTMETA: Final = 125
KEY_RIGHTMETA: Final = 126

KeyChars = tuple[str, str, str | None]
"""What one key types: (unshifted, shifted, with AltGr or None)."""

UNSHIFTED: Final = 0
SHIFTED: Final = 1
ALTGR: Final = 2


@dataclass(frozen=True, slots=True)
class Layout:
    """One national layout: the character keys and which of their levels are dead keys."""

    name: str
    keys: Mapping[int, KeyChars]
    dead: frozenset[tuple[int, int]] = frozenset()
    """(key code, level) pairs that are dead keys; ``keys`` holds the spacing character for them."""


# Dead keys combine with the next character; the spacing character maps to the combining mark.
DEAD_COMBINING: Final[Mapping[str, str]] = {
    "^": "\u0302",
    "´": "\u0301",
    "`": "\u0300",
}

KEYPAD: Final[Mapping[int, str]] = {
    KEY_KP0: "0",
    KEY_KP1: "1",
    KEY_KP2: "2",
    KEY_KP3: "3",
    KEY_KP4: "4",
    KEY_KP5: "5",
    KEY_KP6: "6",
    KEY_KP7: "7",
    KEY_KP8: "8",
    KEY_KP9: "9",
    KEY_KPMINUS: "-",
    KEY_KPPLUS: "+",
    KEY_KPDOT: ".",
    KEY_KPSLASH: "/",
    KEY_KPASTERISK: "*",
    KEY_KPEQUAL: "=",
    KEY_KPCOMMA: ",",
}

US: Final = Layout(
    "us",
    {
        KEY_GRAVE: ("`", "~", None),
        KEY_1: ("1", "!", None),
        KEY_2: ("2", "@", None),
        KEY_3: ("3", "#", None),
        KEY_4: ("4", "$", None),
        KEY_5: ("5", "%", None),
        KEY_6: ("6", "^", None),
        KEY_7: ("7", "&", None),
        KEY_8: ("8", "*", None),
        KEY_9: ("9", "(", None),
        KEY_0: ("0", ")", None),
        KEY_MINUS: ("-", "_", None),
        KEY_EQUAL: ("=", "+", None),
        KEY_Q: ("q", "Q", None),
        KEY_W: ("w", "W", None),
        KEY_E: ("e", "E", None),
        KEY_R: ("r", "R", None),
        KEY_T: ("t", "T", None),
        KEY_Y: ("y", "Y", None),
        KEY_U: ("u", "U", None),
        KEY_I: ("i", "I", None),
        KEY_O: ("o", "O", None),
        KEY_P: ("p", "P", None),
        KEY_LEFTBRACE: ("[", "{", None),
        KEY_RIGHTBRACE: ("]", "}", None),
        KEY_A: ("a", "A", None),
        KEY_S: ("s", "S", None),
        KEY_D: ("d", "D", None),
        KEY_F: ("f", "F", None),
        KEY_G: ("g", "G", None),
        KEY_H: ("h", "H", None),
        KEY_J: ("j", "J", None),
        KEY_K: ("k", "K", None),
        KEY_L: ("l", "L", None),
        KEY_SEMICOLON: (";", ":", None),
        KEY_APOSTROPHE: ("'", '"', None),
        KEY_BACKSLASH: ("\\", "|", None),
        KEY_102ND: ("<", ">", None),  # the extra ISO key, as xkb's pc symbols define it
        KEY_Z: ("z", "Z", None),
        KEY_X: ("x", "X", None),
        KEY_C: ("c", "C", None),
        KEY_V: ("v", "V", None),
        KEY_B: ("b", "B", None),
        KEY_N: ("n", "N", None),
        KEY_M: ("m", "M", None),
        KEY_COMMA: (",", "<", None),
        KEY_DOT: (".", ">", None),
        KEY_SLASH: ("/", "?", None),
        KEY_SPACE: (" ", " ", None),
    },
)

# German QWERTZ (xkb de basic): Y/Z swapped, umlauts and ß in place of US punctuation.
DE: Final = Layout(
    "de",
    {
        KEY_GRAVE: ("^", "°", "′"),  # ^ is a dead key
        KEY_1: ("1", "!", "¹"),
        KEY_2: ("2", '"', "²"),
        KEY_3: ("3", "§", "³"),
        KEY_4: ("4", "$", "¼"),
        KEY_5: ("5", "%", "½"),
        KEY_6: ("6", "&", "¬"),
        KEY_7: ("7", "/", "{"),
        KEY_8: ("8", "(", "["),
        KEY_9: ("9", ")", "]"),
        KEY_0: ("0", "=", "}"),
        KEY_MINUS: ("ß", "?", "\\"),
        KEY_EQUAL: ("´", "`", None),  # both dead keys; AltGr gives a dead cedilla
        KEY_Q: ("q", "Q", "@"),
        KEY_W: ("w", "W", "ſ"),
        KEY_E: ("e", "E", "€"),
        KEY_R: ("r", "R", "¶"),
        KEY_T: ("t", "T", "ŧ"),
        KEY_Y: ("z", "Z", "←"),
        KEY_U: ("u", "U", "↓"),
        KEY_I: ("i", "I", "→"),
        KEY_O: ("o", "O", "ø"),
        KEY_P: ("p", "P", "þ"),
        KEY_LEFTBRACE: ("ü", "Ü", None),
        KEY_RIGHTBRACE: ("+", "*", "~"),
        KEY_A: ("a", "A", "æ"),
        KEY_S: ("s", "S", "ſ"),
        KEY_D: ("d", "D", "ð"),
        KEY_F: ("f", "F", "đ"),
        KEY_G: ("g", "G", "ŋ"),
        KEY_H: ("h", "H", "ħ"),
        KEY_J: ("j", "J", None),
        KEY_K: ("k", "K", "ĸ"),
        KEY_L: ("l", "L", "ł"),
        KEY_SEMICOLON: ("ö", "Ö", None),
        KEY_APOSTROPHE: ("ä", "Ä", None),
        KEY_BACKSLASH: ("#", "'", "’"),
        KEY_102ND: ("<", ">", "|"),
        KEY_Z: ("y", "Y", "»"),
        KEY_X: ("x", "X", "«"),
        KEY_C: ("c", "C", "¢"),
        KEY_V: ("v", "V", "„"),
        KEY_B: ("b", "B", "“"),
        KEY_N: ("n", "N", "”"),
        KEY_M: ("m", "M", "µ"),
        KEY_COMMA: (",", ";", "·"),
        KEY_DOT: (".", ":", "…"),
        KEY_SLASH: ("-", "_", "–"),
        KEY_SPACE: (" ", " ", " "),
    },
    dead=frozenset({(KEY_GRAVE, UNSHIFTED), (KEY_EQUAL, UNSHIFTED), (KEY_EQUAL, SHIFTED)}),
)

# Turkish-Q (xkb tr basic): dotless ı on KEY_I, dotted i/İ on KEY_APOSTROPHE, ö and ç on the
# comma and dot keys, and the period/colon moved to KEY_SLASH.
TR: Final = Layout(
    "tr",
    {
        KEY_GRAVE: ('"', "é", "<"),
        KEY_1: ("1", "!", ">"),
        KEY_2: ("2", "'", "£"),
        KEY_3: ("3", "^", "#"),
        KEY_4: ("4", "+", "$"),
        KEY_5: ("5", "%", "½"),
        KEY_6: ("6", "&", "¾"),
        KEY_7: ("7", "/", "{"),
        KEY_8: ("8", "(", "["),
        KEY_9: ("9", ")", "]"),
        KEY_0: ("0", "=", "}"),
        KEY_MINUS: ("*", "?", "\\"),
        KEY_EQUAL: ("-", "_", "|"),
        KEY_Q: ("q", "Q", "@"),
        KEY_W: ("w", "W", None),
        KEY_E: ("e", "E", "€"),
        KEY_R: ("r", "R", "¶"),
        KEY_T: ("t", "T", "₺"),
        KEY_Y: ("y", "Y", "←"),
        KEY_U: ("u", "U", "û"),
        KEY_I: ("ı", "I", "î"),
        KEY_O: ("o", "O", "ô"),
        KEY_P: ("p", "P", None),
        KEY_LEFTBRACE: ("ğ", "Ğ", None),
        KEY_RIGHTBRACE: ("ü", "Ü", "~"),
        KEY_A: ("a", "A", "â"),
        KEY_S: ("s", "S", "ß"),
        KEY_D: ("d", "D", None),
        KEY_F: ("f", "F", "ª"),
        KEY_G: ("g", "G", None),
        KEY_H: ("h", "H", None),
        KEY_J: ("j", "J", None),
        KEY_K: ("k", "K", None),
        KEY_L: ("l", "L", None),
        KEY_SEMICOLON: ("ş", "Ş", "´"),
        KEY_APOSTROPHE: ("i", "İ", "'"),
        KEY_BACKSLASH: (",", ";", "`"),
        KEY_102ND: ("<", ">", "|"),
        KEY_Z: ("z", "Z", "«"),
        KEY_X: ("x", "X", "»"),
        KEY_C: ("c", "C", "¢"),
        KEY_V: ("v", "V", "„"),
        KEY_B: ("b", "B", "“"),
        KEY_N: ("n", "N", "”"),
        KEY_M: ("m", "M", "µ"),
        KEY_COMMA: ("ö", "Ö", "×"),
        KEY_DOT: ("ç", "Ç", "·"),
        KEY_SLASH: (".", ":", None),
        KEY_SPACE: (" ", " ", " "),
    },
)

LAYOUTS: Final[Mapping[str, Layout]] = {layout.name: layout for layout in (US, DE, TR)}


def get_layout(name: str) -> Layout:
    """The layout called ``name``; a ValueError names the known ones (it comes from configuration)."""
    try:
        return LAYOUTS[name]
    except KeyError:
        known = ", ".join(sorted(LAYOUTS))
        raise ValueError(f"unknown keyboard layout {name!r} (known: {known})") from None


def is_caps_letter(chars: KeyChars) -> bool:
    """Whether CapsLock switches this key to its shifted level: true for letters only.

    A letter is a key whose two levels are a lower- and an upper-case letter; this covers Turkish
    ı/I and i/İ, where ``str.upper`` would get the pair wrong.
    """
    lower, upper, _ = chars
    return lower.isalpha() and upper.isalpha() and lower != upper and lower.islower() and upper.isupper()
