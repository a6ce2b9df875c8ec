"""Classifying decoded scans, and the member/reservation code formats shared with the central receiver."""

from __future__ import annotations

import random

import pytest
from stdnum import ean

from cloud_sync.codes import (
    make_member_code,
    make_reservation_code,
    member_code_is_valid,
    normalize_member_code,
    reservation_code_is_valid,
)
from edge.scancodes import classify

# GTINs with correct GS1 check digits (EAN-13, EAN-8, UPC-A, GTIN-14)
VALID_GTINS = {
    "4006381333931": "04006381333931",
    "96385074": "00000096385074",
    "036000291452": "00036000291452",
    "10614141000415": "10614141000415",
}


def one_digit_typos(code: str, start: int) -> list[str]:
    """Every code differing from ``code`` in exactly one digit at position >= start."""
    return [
        code[:i] + d + code[i + 1 :] for i in range(start, len(code)) for d in "0123456789" if d != code[i]
    ]


def adjacent_swaps(code: str, start: int) -> list[str]:
    """Every code with two different adjacent digits (positions >= start) swapped."""
    return [
        code[:i] + code[i + 1] + code[i] + code[i + 2 :]
        for i in range(start, len(code) - 1)
        if code[i] != code[i + 1]
    ]


# GTIN ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "gtin14"), VALID_GTINS.items())
def test_valid_gtins_are_normalised_to_14_digits(text: str, gtin14: str) -> None:
    result = classify(text)
    assert (result.kind, result.value, result.error) == ("gtin", gtin14, None)
    assert result.ok


@pytest.mark.parametrize("text", VALID_GTINS)
def test_gtin_with_a_wrong_check_digit_is_rejected_not_unknown(text: str) -> None:
    wrong = text[:-1] + str((int(text[-1]) + 1) % 10)
    result = classify(wrong)
    assert (result.kind, result.value, result.error) == ("gtin", None, "bad GTIN check digit")
    assert not result.ok


def test_every_single_digit_typo_of_a_gtin_is_caught() -> None:
    for typo in one_digit_typos("4006381333931", 0):
        assert classify(typo).error == "bad GTIN check digit", typo


def test_digits_of_other_lengths_are_unknown() -> None:
    for text in ("1234567", "123456789", "12345678901", "123456789012345"):
        result = classify(text)
        assert (result.kind, result.value, result.error) == ("unknown", text, None)


def test_gtin_needs_ascii_digits() -> None:
    arabic = "\u0664\u0660\u0660\u0666\u0663\u0668\u0661\u0663\u0663\u0663\u0669\u0663\u0661"
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in "4006381333931")
    for text in (arabic, fullwidth, "4006-381333931", " 4006381333931"):
        assert classify(text).kind == "unknown", text


def test_gs1_element_string_with_ai_01_is_a_gtin() -> None:
    for text in ("0104006381333931", "(01)04006381333931", "(01)04006381333931(17)250101(10)AB12"):
        result = classify(text)
        assert (result.kind, result.value) == ("gtin", "04006381333931"), text
    assert classify("(01)04006381333932").error == "bad GTIN check digit"
    assert classify("0104006381333932").kind == "unknown"  # bare digits: maybe not GS1 at all
    assert classify("(01)04006381333931(17)991399").kind == "unknown"  # month 13: not GS1
    assert classify("0104006381333931XYZ").kind == "unknown"  # XY is no application identifier


# member and reservation codes -------------------------------------------------------------------


def test_member_codes_round_trip() -> None:
    rng = random.Random(7)
    for number in [0, 1, 42, 999_999_999, *(rng.randrange(10**9) for _ in range(200))]:
        code = make_member_code(number)
        assert len(code) == 11 and code[0] == "M" and code[1:].isdigit()
        assert code[1:10] == f"{number:09d}"
        assert member_code_is_valid(code)
        assert not reservation_code_is_valid(code)
        assert classify(code).kind == "member" and classify(code).value == code
        assert classify(code.lower()).value == code


def test_member_code_catches_every_typo_and_adjacent_swap() -> None:
    code = make_member_code(123_456_780)
    mistakes = one_digit_typos(code, 1) + adjacent_swaps(code, 1)
    assert len(mistakes) == 10 * 9 + 9
    for wrong in mistakes:
        assert not member_code_is_valid(wrong), wrong
        result = classify(wrong)
        assert (result.kind, result.error) == ("member", "bad member code check digit"), wrong


def test_reservation_codes_round_trip_and_catch_mistakes() -> None:
    code = make_reservation_code(1_234_567)
    assert len(code) == 9 and code.startswith("R1234567")
    assert reservation_code_is_valid(code) and not member_code_is_valid(code)
    assert (classify(code).kind, classify(code).value) == ("reservation", code)
    for wrong in one_digit_typos(code, 1) + adjacent_swaps(code, 1):
        assert not reservation_code_is_valid(wrong), wrong
        assert classify(wrong).error == "bad reservation code check digit"


@pytest.mark.parametrize("number", [-1, 10**9, 1.5, True, "12"])
def test_make_member_code_refuses_out_of_range_numbers(number: object) -> None:
    with pytest.raises(ValueError, match=r"0\.\.999999999"):
        make_member_code(number)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_reservation_code(10**7)


def test_normalize_member_code_accepts_typed_forms() -> None:
    code = make_member_code(4_242)
    digits = code[1:]
    for typed in (
        code,
        code.lower(),
        digits,
        f" M {digits[:3]} {digits[3:6]} {digits[6:]} ",
        f"m-{digits[:3]}-{digits[3:6]}-{digits[6:]}",
        f"{digits[:5]}\t{digits[5:]}",
    ):
        assert normalize_member_code(typed) == code, typed
    for bad in (
        digits[:-1] + str((int(digits[-1]) + 1) % 10),  # wrong check digit
        "MM" + digits,
        "X" + digits,
        digits + "0",
        "",
        "M",
        "\u0660" * 10,  # Arabic-Indic zeros pass Damm with int(), but are not our digits
        "M" + digits + "\x00",
        "-" * 1000,
    ):
        assert normalize_member_code(bad) is None, bad
    assert member_code_is_valid(code) and not member_code_is_valid(code.lower())


# receipts and the rest ---------------------------------------------------------------------------


def test_receipt_codes() -> None:
    assert (classify("RC2024-0001").kind, classify("RC2024-0001").value) == ("receipt", "RC2024-0001")
    assert classify("rc-ab12").value == "RC-AB12"
    assert classify("RC123").kind == "unknown"  # body too short
    assert classify("RC" + "A" * 40).kind == "receipt"
    assert classify("RC" + "A" * 41).kind == "unknown"
    assert classify("RC12_34").kind == "unknown"
    assert classify("QX-9999", receipt_prefix="QX").kind == "receipt"
    assert classify("RC-9999", receipt_prefix="QX").kind == "unknown"


def test_bad_receipt_prefix_is_a_configuration_error() -> None:
    for prefix in ("", "rc", "R C", "TOOLONGPREFIX", "RÇ"):
        with pytest.raises(ValueError, match="receipt prefix"):
            classify("RC1234", receipt_prefix=prefix)


@pytest.mark.parametrize(
    "hostile",
    [
        "'; DROP TABLE members;--",
        "<script>alert(1)</script>",
        "Robert'); DROP TABLE Students;--",
        "{{7*7}}",
        "%s%s%s%n",
        "İstanbul",  # non-ASCII: not upper-cased into a code
        "rcıııı",  # noqa: RUF001 - dotless i upper-cases to I; must not become receipt RCIIII
    ],
)
def test_hostile_but_printable_text_is_unknown_and_kept_verbatim(hostile: str) -> None:
    result = classify(hostile)
    assert (result.kind, result.value, result.error) == ("unknown", hostile, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty scan"),
        ("abc\x00def", "scan contains control or non-printable characters"),
        ("4006381333931\n", "scan contains control or non-printable characters"),
        ("\x1d0104006381333931", "scan contains control or non-printable characters"),
        ("a\u202eb", "scan contains control or non-printable characters"),
        ("x" * 129, "scan longer than 128 characters"),
        ("1" * 100_000, "scan longer than 128 characters"),
    ],
)
def test_unusable_scans_are_rejected_with_a_reason(text: str, reason: str) -> None:
    result = classify(text)
    assert (result.kind, result.value, result.error) == ("unknown", None, reason)


def test_128_characters_is_still_accepted() -> None:
    assert classify("x" * 128).ok


def test_value_stays_out_of_repr() -> None:
    assert make_member_code(7) not in repr(classify(make_member_code(7)))


def test_fuzz_classify_never_raises() -> None:
    rng = random.Random(99)
    alphabet = "0123456789MRCmrc()-_ \x00\x1d\t\u0130\u0131\u00df\uffff\U0001f600<>'\";"
    seeds = ["01", "(01)", "M", "R", "RC", "(17)", "(10)"]
    for _ in range(20_000):
        text = rng.choice(seeds) + "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        result = classify(text)
        assert (result.value is None) != (result.error is None)
        if result.kind == "gtin" and result.ok:
            assert result.value is not None and ean.is_valid(result.value) and len(result.value) == 14
        if result.kind == "member" and result.ok:
            assert result.value is not None and member_code_is_valid(result.value)
