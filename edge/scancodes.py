"""What a decoded scan is: a product GTIN, a member code, a reservation, a receipt, or unknown.

Business rule only (no device imports): the scanner back end delivers text, the intake asks
:func:`classify` what it means. Formats:

- **gtin**: 8, 12, 13 or 14 ASCII digits with a valid GS1 check digit (python-stdnum ``ean``), or a GS1
  element string that starts with AI (01) (GS1-128 / DataBar, ``0104006381333931…`` or
  ``(01)04006381333931…``, parsed by ``stdnum.gs1_128``). The value is the GTIN as 14 digits, the form
  GS1 recommends for storing and comparing GTINs of any length. Digits of a GTIN length with a wrong
  check digit are rejected ("bad GTIN check digit"), not passed on as unknown: that is a misread.
- **member** / **reservation**: see :mod:`cloud_sync.codes`; a wrong check digit is rejected.
- **receipt**: ``receipt_prefix`` + 4-40 of ``[0-9A-Z-]``.
- **unknown**: any other printable text up to 128 characters (e.g. another chain's loyalty card); the
  value is the text as scanned.
- rejected: empty, longer than 128 characters, or containing control or other non-printable characters.

Member and reservation shapes are tried before receipts, so a receipt prefix of "M" or "R" would be
ambiguous; the default "RC" is not (``C`` is not a digit).

Letters are matched case-insensitively (a scanner on a machine with CapsLock on flips the case) but only
for ASCII text: Python upper-cases the Turkish dotless i to ``"I"`` and ``"ß"`` to ``"SS"``, which would
let non-ASCII text pass as a code. Nothing here raises on any string, and nothing logs (a scan may be
a loyalty code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal

from stdnum import ean, gs1_128

from cloud_sync import codes

MAX_SCAN_LENGTH: Final = 128
GTIN_LENGTHS: Final = frozenset({8, 12, 13, 14})

Kind = Literal["gtin", "member", "reservation", "receipt", "unknown"]

_DIGITS: Final = re.compile(r"[0-9]+", re.ASCII)
_MEMBER: Final = re.compile(r"[M][0-9]{10}", re.ASCII)
_RESERVATION: Final = re.compile(r"[R][0-9]{8}", re.ASCII)
_RECEIPT_BODY: Final = re.compile(r"[0-9A-Z-]{4,40}", re.ASCII)
_PREFIX: Final = re.compile(r"[0-9A-Z]{1,8}", re.ASCII)
_GS1_AI01: Final = re.compile(r"(?:\(01\)|01)([0-9]{14})", re.ASCII)


@dataclass(frozen=True, slots=True)
class Classified:
    """The meaning of one scan: ``kind`` and a normalised ``value``, or ``error`` when rejected.

    A rejected scan keeps the ``kind`` it looked like ("gtin" for a bad check digit) and has no value.
    ``value`` is out of ``repr`` (privacy: it may be a loyalty code).
    """

    kind: Kind
    value: str | None = field(repr=False)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the scan was accepted."""
        return self.error is None


def _rejected(kind: Kind, reason: str) -> Classified:
    return Classified(kind, None, reason)


def _gs1_gtin(text: str) -> Classified | None:
    """A GS1 element string starting with AI (01): its GTIN, or None if it is not one."""
    match = _GS1_AI01.match(text)
    if match is None:
        return None
    gtin = match.group(1)
    if not ean.is_valid(gtin):
        # Only the explicit "(01)" form is surely GS1; a bare digit string may be something else.
        return _rejected("gtin", "bad GTIN check digit") if text.startswith("(") else None
    try:
        info = gs1_128.info(text)
    except Exception:  # a third-party parser on hostile input: any failure means "not GS1"
        return None
    return Classified("gtin", gtin) if info.get("01") == gtin else None


def classify(text: str, *, receipt_prefix: str = "RC") -> Classified:
    """Classify one decoded scan; never raises for any ``text``.

    ``receipt_prefix`` comes from configuration: 1-8 of ``[0-9A-Z]``, else ValueError (a bad
    configuration, not a bad scan).
    """
    if not _PREFIX.fullmatch(receipt_prefix):
        raise ValueError(f"receipt prefix must be 1-8 of [0-9A-Z], not {receipt_prefix!r}")
    if not text:
        return _rejected("unknown", "empty scan")
    if len(text) > MAX_SCAN_LENGTH:
        return _rejected("unknown", f"scan longer than {MAX_SCAN_LENGTH} characters")
    if not text.isprintable():
        return _rejected("unknown", "scan contains control or non-printable characters")
    if not text.isascii():
        return Classified("unknown", text)
    if _DIGITS.fullmatch(text) and len(text) in GTIN_LENGTHS:
        if ean.is_valid(text):
            return Classified("gtin", text.zfill(14))
        return _rejected("gtin", "bad GTIN check digit")
    gs1 = _gs1_gtin(text)
    if gs1 is not None:
        return gs1
    upper = text.upper()
    if _MEMBER.fullmatch(upper):
        if codes.member_code_is_valid(upper):
            return Classified("member", upper)
        return _rejected("member", "bad member code check digit")
    if _RESERVATION.fullmatch(upper):
        if codes.reservation_code_is_valid(upper):
            return Classified("reservation", upper)
        return _rejected("reservation", "bad reservation code check digit")
    if upper.startswith(receipt_prefix) and _RECEIPT_BODY.fullmatch(upper[len(receipt_prefix) :]):
        return Classified("receipt", upper)
    return Classified("unknown", text)
