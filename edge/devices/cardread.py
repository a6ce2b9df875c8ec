"""What the node reads from a contactless card, as APDU exchanges — no PC/SC library in here.

Kept apart from the pyscard back end so the rules (status words, UID lengths, NDEF parsing, the bound on
how much a card may make us read) are tested against any ``transmit`` function, and a card answering
garbage can only ever produce a ``CardReadError`` with a reason, never an exception we did not expect.

The raw UID exists only inside ``CardRead`` in memory, for the few microseconds until the intake turns it
into a token; its ``repr`` hides it so it cannot reach a log line or a traceback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: PC/SC part 3 pseudo-APDU that contactless readers (ACR122U, ACR1252U, …) answer with the card's UID.
GET_UID = bytes.fromhex("FFCA000000")
SW_OK = b"\x90\x00"
UID_LENGTHS = (4, 7, 10)
#: A card may claim any NDEF length; we read at most this much (NTAG216's user memory is 872 bytes).
MAX_NDEF_BYTES = 1024
#: READ BINARY through the reader's storage-card pass-through reads 4 pages of 4 bytes at a time.
READ_CHUNK = 16
FIRST_DATA_PAGE = 4
CC_MAGIC = 0xE1

# PC/SC part 3 ATR for storage cards: ... 4F 0C A0 00 00 03 06 SS NN NN ...; RID A0 00 00 03 06 then the
# standard byte and the two card-name bytes.
_PCSC_RID = bytes.fromhex("A000000306")
_CARD_NAMES = {
    0x0001: "mifare-classic-1k",
    0x0002: "mifare-classic-4k",
    0x0003: "ntag-ultralight",  # Ultralight, Ultralight C, NTAG21x all report "Ultralight"
    0x0026: "mifare-mini",
    0x003A: "ntag-ultralight",
    0xF004: "topaz",
    0xF011: "felica",
    0xF012: "felica",
}

Transmit = Callable[[bytes], bytes]
MemberCodeFinder = Callable[[str], str | None]


class CardReadError(Exception):
    """The card did not give us a usable answer; ``str()`` is one log-safe line (never the UID)."""


class CardRemovedError(CardReadError):
    """The card left the field in the middle of the exchange."""


@dataclass(frozen=True, slots=True)
class CardRead:
    """One card as read on arrival. ``uid`` is raw: memory only, never logged (``repr`` hides it)."""

    uid: bytes = field(repr=False)
    reader: str
    card_type: str
    member_code: str | None = field(default=None, repr=False)


def card_type_from_atr(atr: bytes) -> str:
    """The card family a PC/SC reader encodes in the ATR it synthesises for a contactless card."""
    at = atr.find(_PCSC_RID)
    if at >= 0 and len(atr) >= at + len(_PCSC_RID) + 3:
        name = int.from_bytes(atr[at + 6 : at + 8], "big")
        return _CARD_NAMES.get(name, f"storage-{name:04x}")
    if len(atr) >= 2 and atr[0] in (0x3B, 0x3F) and atr[1] & 0x80:
        # an ISO 14443-4 card (DESFire, NTAG 424, a phone): the reader builds the ATR from the ATS
        return "iso14443-4"
    return "unknown"


def read_uid(transmit: Transmit) -> bytes:
    """The UID from ``FF CA 00 00 00``, checked: status word 90 00 and a 4, 7 or 10-byte UID."""
    answer = transmit(GET_UID)
    if len(answer) < 2:
        raise CardReadError(f"the card's answer to GET UID is {len(answer)} byte(s), not a response APDU")
    status = answer[-2:]
    if status != SW_OK:
        raise CardReadError(f"the card refused GET UID with status word {status.hex(' ').upper()}")
    uid = answer[:-2]
    if len(uid) not in UID_LENGTHS:
        raise CardReadError(f"the card answered GET UID with {len(uid)} bytes, not a 4, 7 or 10-byte UID")
    return uid


def read_card(
    transmit: Transmit, atr: bytes, reader: str, find_member_code: MemberCodeFinder | None = None
) -> CardRead:
    """Read what a tap needs; NDEF problems only drop the member code, a removed card fails the read."""
    uid = read_uid(transmit)
    card_type = card_type_from_atr(atr)
    member_code = None
    if card_type == "ntag-ultralight" and find_member_code is not None:
        try:
            text = ndef_texts(read_ndef(transmit))
        except CardRemovedError:
            raise
        except CardReadError as exc:
            log.info("%s: the card carries no readable NDEF member code (%s)", reader, exc)
        else:
            for candidate in text:
                member_code = find_member_code(candidate)
                if member_code:
                    break
    return CardRead(uid, reader, card_type, member_code)


def read_ndef(transmit: Transmit) -> bytes:
    """The NDEF message of an NFC Forum Type 2 tag (NTAG/Ultralight), bounded by ``MAX_NDEF_BYTES``."""
    head = _read_pages(transmit, 3)
    if head[0] != CC_MAGIC:
        raise CardReadError("no NDEF capability container")
    capacity = min(head[2] * 8, MAX_NDEF_BYTES + 8)
    data = bytearray(head[4:])
    pos = 0

    def need(count: int) -> None:
        while len(data) < count:
            if len(data) >= capacity:
                raise CardReadError("the NDEF TLV runs past the tag's data area")
            data.extend(_read_pages(transmit, FIRST_DATA_PAGE + len(data) // 4))

    while True:
        need(pos + 1)
        tlv = data[pos]
        if tlv == 0x00:  # NULL TLV: padding
            pos += 1
            continue
        if tlv == 0xFE:
            raise CardReadError("the tag holds no NDEF message")
        need(pos + 2)
        length = data[pos + 1]
        header = 2
        if length == 0xFF:
            need(pos + 4)
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            header = 4
        if tlv == 0x03:
            if length > MAX_NDEF_BYTES:
                raise CardReadError(f"the NDEF message claims {length} bytes (more than {MAX_NDEF_BYTES})")
            need(pos + header + length)
            return bytes(data[pos + header : pos + header + length])
        if tlv not in (0x01, 0x02, 0xFD):  # lock / memory control / proprietary TLVs are skipped
            raise CardReadError(f"unknown TLV type {tlv:#04x} in the tag's data area")
        pos += header + length
        if pos > capacity:
            raise CardReadError("the tag's TLVs run past its data area")


def ndef_texts(message: bytes) -> list[str]:
    """The text and URI records of an NDEF message; malformed NDEF is a ``CardReadError``."""
    import ndef  # ndeflib: small and pure Python, imported where the NDEF is parsed

    texts: list[str] = []
    try:
        for record in ndef.message_decoder(message):
            if isinstance(record, ndef.TextRecord):
                texts.append(str(record.text))
            elif isinstance(record, ndef.UriRecord):
                texts.append(str(record.iri))
    except ndef.DecodeError as exc:
        raise CardReadError(f"malformed NDEF message ({exc})") from None
    return texts


_MEMBER_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])M[0-9]{10}(?![0-9A-Za-z])")


def member_code_in(text: str, is_valid: Callable[[str], bool]) -> str | None:
    """The first well-formed member code inside a text or URL record (``…/m/M0123456789``)."""
    for match in _MEMBER_IN_TEXT.finditer(text[:512]):
        if is_valid(match.group(0)):
            return match.group(0)
    return None


def _read_pages(transmit: Transmit, page: int) -> bytes:
    if page > 0xFF:
        raise CardReadError("the tag's data area ends before its NDEF message does")
    answer = transmit(bytes([0xFF, 0xB0, 0x00, page, READ_CHUNK]))
    if len(answer) < 2 or answer[-2:] != SW_OK:
        status = answer[-2:].hex(" ").upper() if len(answer) >= 2 else "none"
        raise CardReadError(f"READ BINARY of page {page} failed (status word {status})")
    if len(answer) != READ_CHUNK + 2:
        raise CardReadError(f"READ BINARY of page {page} returned {len(answer) - 2} bytes, not {READ_CHUNK}")
    return answer[:-2]
