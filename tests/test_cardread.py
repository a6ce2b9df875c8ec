"""Card-reading rules against scripted cards: what a hostile or broken card can and cannot make us do."""

from __future__ import annotations

import ndef
import pytest

from cloud_sync.codes import member_code_is_valid
from edge.devices.cardread import (
    MAX_NDEF_BYTES,
    CardReadError,
    CardRemovedError,
    card_type_from_atr,
    member_code_in,
    read_card,
    read_ndef,
    read_uid,
)
from tests.support.pcsc import ATR_CLASSIC_1K, ATR_ISO14443_4, ATR_ULTRALIGHT, ntag_handler, ntag_memory

UID = bytes.fromhex("04A2B3C4D5E680")
MEMBER = "M0007731451"


def _find(text: str) -> str | None:
    return member_code_in(text, member_code_is_valid)


class Card:
    """A transmit function over scripted memory that counts the APDUs it answered."""

    def __init__(self, memory: bytes, uid: bytes = UID) -> None:
        self.handler = ntag_handler(uid, memory)
        self.apdus = 0

    def __call__(self, apdu: bytes) -> bytes:
        self.apdus += 1
        answer = self.handler(apdu)
        if answer is None:
            raise CardRemovedError("gone")
        return answer


@pytest.mark.parametrize(
    ("atr", "kind"),
    [
        (ATR_ULTRALIGHT, "ntag-ultralight"),
        (ATR_CLASSIC_1K, "mifare-classic-1k"),
        (ATR_ISO14443_4, "iso14443-4"),
        (b"", "unknown"),
        (b"\x00\x01", "unknown"),
        (bytes.fromhex("3B8F8001804F0CA0000003060300FF00000000"), "storage-00ff"),
    ],
)
def test_card_type_from_atr(atr: bytes, kind: str) -> None:
    assert card_type_from_atr(atr) == kind


@pytest.mark.parametrize("length", [4, 7, 10])
def test_uid_lengths_accepted(length: int) -> None:
    assert read_uid(lambda _apdu: bytes(range(length)) + b"\x90\x00") == bytes(range(length))


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"\x6a\x81", "6A 81"),
        (b"\x90", "not a response APDU"),
        (b"\x90\x00", "0 bytes"),
        (bytes(200) + b"\x90\x00", "200 bytes"),
        (UID + b"\x63\x00", "63 00"),
    ],
)
def test_bad_uid_answers_are_clear_errors(answer: bytes, reason: str) -> None:
    with pytest.raises(CardReadError) as err:
        read_uid(lambda _apdu: answer)
    assert reason in str(err.value)
    assert UID.hex() not in str(err.value).lower()


def test_member_code_from_a_text_or_uri_record() -> None:
    for record in (ndef.TextRecord(MEMBER), ndef.UriRecord(f"https://x.example/m/{MEMBER}?src=card")):
        memory = ntag_memory(b"".join(ndef.message_encoder([record])))
        card = read_card(Card(memory), ATR_ULTRALIGHT, "r", _find)
        assert card.member_code == MEMBER and card.uid == UID


def test_a_wrong_check_digit_or_hostile_text_gives_no_member_code() -> None:
    for text in ("M0007731452", "<script>M0007731451</script>x", "'; DROP TABLE--", "XM0007731451"):
        memory = ntag_memory(b"".join(ndef.message_encoder([ndef.TextRecord(text)])))
        card = read_card(Card(memory), ATR_ULTRALIGHT, "r", _find)
        # the script-wrapped code is still a well-formed code between non-alphanumerics: accepted as data,
        # never rendered; every other case yields nothing
        assert card.member_code == (MEMBER if text.startswith("<script>") else None)


def test_a_classic_card_is_not_asked_for_ndef() -> None:
    card = Card(ntag_memory(b""))
    read_card(card, ATR_CLASSIC_1K, "r", _find)
    assert card.apdus == 1  # GET UID only


def test_an_oversized_ndef_claim_is_refused_without_reading_it() -> None:
    huge = b"\xd1\x01" + bytes(4000)
    memory = bytes(12) + bytes([0xE1, 0x10, 0xFF, 0x00]) + b"\x03\xff" + (4000).to_bytes(2, "big") + huge
    card = Card(memory.ljust(256 * 4, b"\x00"))
    with pytest.raises(CardReadError) as err:
        read_ndef(card)
    assert f"more than {MAX_NDEF_BYTES}" in str(err.value)
    assert card.apdus <= 2


def test_tlvs_that_run_past_the_tag_are_refused() -> None:
    memory = bytes(12) + bytes([0xE1, 0x10, 0x02, 0x00]) + b"\x03\x40" + bytes(14)  # 16-byte data area
    with pytest.raises(CardReadError) as err:
        read_ndef(Card(memory.ljust(64, b"\x00")))
    assert "data area" in str(err.value)


@pytest.mark.parametrize(
    ("memory", "reason"),
    [
        (bytes(12) + b"\x00\x10\x12\x00" + bytes(48), "capability container"),
        (bytes(12) + b"\xe1\x10\x12\x00" + b"\xfe" + bytes(47), "no NDEF message"),
        (bytes(12) + b"\xe1\x10\x12\x00" + b"\x42\x01" + bytes(46), "unknown TLV"),
    ],
)
def test_malformed_tag_layouts_are_clear_errors(memory: bytes, reason: str) -> None:
    with pytest.raises(CardReadError) as err:
        read_ndef(Card(memory))
    assert reason in str(err.value)


def test_lock_and_null_tlvs_are_skipped() -> None:
    message = b"".join(ndef.message_encoder([ndef.TextRecord(MEMBER)]))
    memory = bytes(12) + b"\xe1\x10\x12\x00" + b"\x00\x01\x03\xa0\x0c\x44" + b"\x03" + bytes([len(message)])
    memory += message + b"\xfe"
    assert read_ndef(Card(memory.ljust(128, b"\x00"))) == message


def test_malformed_ndef_drops_only_the_member_code() -> None:
    memory = ntag_memory(b"\xd1\x01\x7f\x54\x02en")
    card = read_card(Card(memory), ATR_ULTRALIGHT, "r", _find)
    assert card.uid == UID and card.member_code is None


def test_a_card_lifted_during_the_ndef_read_fails_the_whole_tap() -> None:
    def transmit(apdu: bytes) -> bytes:
        if apdu[:2] == b"\xff\xb0":
            raise CardRemovedError("gone")
        return UID + b"\x90\x00"

    with pytest.raises(CardRemovedError):
        read_card(transmit, ATR_ULTRALIGHT, "r", _find)


def test_the_uid_never_appears_in_repr() -> None:
    card = read_card(lambda _apdu: UID + b"\x90\x00", ATR_CLASSIC_1K, "reader-1")
    assert UID.hex() not in repr(card).lower() and "reader-1" in repr(card)
