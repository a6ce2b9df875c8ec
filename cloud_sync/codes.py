"""Member and reservation codes: the formats the node and the central receiver both check.

A **member code** is the neutral customer number issued at sign-up (DESIGN.md, Identity): ``M`` + 9
digits + 1 Damm check digit, e.g. ``M0000000427``. A **reservation code** is ``R`` + 7 digits + 1 Damm
check digit. Damm is used (via python-stdnum) because it catches every single-digit error and every
swap of two adjacent digits, the two mistakes people make when they type a number from a receipt, and
because the check character stays a digit, so the code reads and types easily and prints as a compact
Code 128 or QR code.

The canonical form is upper case with no separators; :func:`normalize_member_code` turns what a person
types ("m 123-456-789 0", or the digits without the ``M``) into it. Only ASCII digits count: ``int()``
would accept Arabic-Indic or full-width digits, which would make two different strings the same code.
"""

from __future__ import annotations

from typing import Final

from stdnum import damm

MEMBER_PREFIX: Final = "M"
MEMBER_DIGITS: Final = 9
RESERVATION_PREFIX: Final = "R"
RESERVATION_DIGITS: Final = 7

_ASCII_DIGITS: Final = frozenset("0123456789")
_TYPED_SEPARATORS: Final = str.maketrans("", "", " -\t")


def _is_ascii_digits(text: str) -> bool:
    return bool(text) and all(ch in _ASCII_DIGITS for ch in text)


def _make(prefix: str, digits: int, number: int) -> str:
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 10**digits:
        raise ValueError(f"a {prefix} code number must be an int in 0..{10**digits - 1}, not {number!r}")
    body = f"{number:0{digits}d}"
    return prefix + body + damm.calc_check_digit(body)


def _is_valid(prefix: str, digits: int, text: str) -> bool:
    if not isinstance(text, str) or len(text) != len(prefix) + digits + 1 or not text.startswith(prefix):
        return False
    body = text[len(prefix) :]
    return _is_ascii_digits(body) and damm.checksum(body) == 0


def make_member_code(number: int) -> str:
    """The member code for customer number ``number`` (0 <= number < 10**9), check digit included."""
    return _make(MEMBER_PREFIX, MEMBER_DIGITS, number)


def member_code_is_valid(text: str) -> bool:
    """Whether ``text`` is a member code in canonical form with a correct check digit."""
    return _is_valid(MEMBER_PREFIX, MEMBER_DIGITS, text)


def make_reservation_code(number: int) -> str:
    """The reservation code for reservation number ``number`` (0 <= number < 10**7)."""
    return _make(RESERVATION_PREFIX, RESERVATION_DIGITS, number)


def reservation_code_is_valid(text: str) -> bool:
    """Whether ``text`` is a reservation code in canonical form with a correct check digit."""
    return _is_valid(RESERVATION_PREFIX, RESERVATION_DIGITS, text)


def normalize_member_code(text: str) -> str | None:
    """The canonical member code for what a person typed, or None if it is not a valid one.

    Accepts lower case, spaces, tabs and dashes anywhere, and a missing ``M`` (people copy just the
    digits). The check digit must still be right: a typo is refused, not "corrected".
    """
    if not isinstance(text, str) or len(text) > 64:
        return None
    compact = text.translate(_TYPED_SEPARATORS)
    if compact[:1] in ("M", "m"):
        compact = compact[1:]
    candidate = MEMBER_PREFIX + compact
    return candidate if member_code_is_valid(candidate) else None
