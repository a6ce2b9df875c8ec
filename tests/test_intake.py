"""The intake's rules: what each device report becomes (event, notice, beep), with a real outbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_sync.codes import make_reservation_code
from cloud_sync.envelope import Signer
from cloud_sync.errors import OutboxFull
from cloud_sync.outbox import Limits, Outbox
from edge.devices.cardread import CardRead
from edge.identity import Pseudonymizer
from edge.intake import Intake
from edge.keys import init_keys, load_signing_key
from edge.notify import IdentityNotice, Notice, Notifier, ScanNotice

KEY = bytes(range(32))
UID = bytes.fromhex("04A2B3C4D5E680")


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    init_keys(tmp_path, None)
    box = Outbox(tmp_path / "o.sqlite3", Signer(load_signing_key(tmp_path), "s1", "n1"), "retail/v1")
    yield box
    box.close()


class Rig:
    def __init__(self, outbox: Outbox) -> None:
        self.beeps: list[str] = []
        self.notices: list[Notice] = []
        notifier = Notifier()
        notifier.subscribe(self.notices.append)
        self.intake = Intake(outbox, Pseudonymizer(KEY), notifier=notifier, feedback=self.beeps.append)
        self.outbox = outbox


@pytest.fixture
def rig(outbox: Outbox) -> Rig:
    return Rig(outbox)


def test_a_tap_is_an_event_a_beep_and_a_notice(rig: Rig) -> None:
    message = rig.intake.card_tapped(CardRead(UID, "reader-1", "ntag-ultralight", "M0007731451"))
    assert rig.beeps == ["tap_ok"]
    (notice,) = rig.notices
    assert isinstance(notice, IdentityNotice)
    tokens = Pseudonymizer(KEY)
    assert notice.token == tokens.card_token(UID) and notice.code_token == tokens.barcode_token("M0007731451")
    assert (notice.seq, notice.event_id, notice.card_type) == (message.seq, message.id, "ntag-ultralight")
    assert UID.hex() not in message.payload.decode().lower() and b"M0007731451" not in message.payload


@pytest.mark.parametrize(
    ("code", "kind", "beep"),
    [
        ("4006381333931", "gtin", "tap_ok"),
        (make_reservation_code(42), "reservation", "tap_ok"),
        ("RC-2026-0001", "receipt", "tap_ok"),
    ],
)
def test_non_identity_scans_are_notices_only(rig: Rig, code: str, kind: str, beep: str) -> None:
    outcome = rig.intake.code_scanned(code, "scanner")
    assert outcome.kind == kind and outcome.message is None and outcome.error is None
    assert rig.outbox.stats().depth == 0
    assert rig.beeps == [beep]
    (notice,) = rig.notices
    assert isinstance(notice, ScanNotice) and notice.kind == kind and notice.value is not None


def test_a_member_scan_is_an_identity_event_under_its_token(rig: Rig) -> None:
    outcome = rig.intake.code_scanned("m0007731451", "scanner")  # scanners may send lower case
    assert outcome.kind == "member" and outcome.message is not None
    notice = rig.notices[0]
    assert isinstance(notice, IdentityNotice) and notice.token == Pseudonymizer(KEY).barcode_token(
        "M0007731451"
    )


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("4006381333932", "check digit"),  # a GTIN with a wrong check digit
        ("M0007731452", "check digit"),  # a mistyped member code
        ("x" * 500, "longer than"),
        ("abc\x00def", "non-printable"),
        ("<script>alert(1)</script>", "not a product"),
        ("'; DROP TABLE outbox; --", "not a product"),
    ],
)
def test_bad_scans_are_rejected_with_a_reason_an_error_beep_and_no_event(
    rig: Rig, code: str, reason: str
) -> None:
    outcome = rig.intake.code_scanned(code, "scanner")
    assert outcome.message is None and outcome.error is not None and reason in outcome.error
    assert rig.beeps == ["error"]
    assert rig.outbox.stats().depth == 0


def test_decoder_rejections_and_unreadable_cards_beep_and_notify(rig: Rig) -> None:
    rig.intake.scan_failed("truncated scan (no terminator)", "scanner")
    rig.intake.card_failed("the card refused GET UID with status word 6A 81", "reader-1")
    assert rig.beeps == ["error", "error"]
    assert [n.error for n in rig.notices if isinstance(n, ScanNotice)] == [
        "truncated scan (no terminator)",
        "the card refused GET UID with status word 6A 81",
    ]
    assert rig.outbox.stats().depth == 0


def test_a_refused_event_beeps_an_error_instead_of_ok(tmp_path: Path) -> None:
    init_keys(tmp_path, None)
    signer = Signer(load_signing_key(tmp_path), "s1", "n1")
    with Outbox(tmp_path / "o.sqlite3", signer, "retail/v1", Limits(max_rows=10)) as box:
        rig = Rig(box)
        for _ in range(10):
            rig.intake.card_tapped(CardRead(UID, "reader-1", "ntag-ultralight"))
        rig.beeps.clear()
        with pytest.raises(OutboxFull):
            rig.intake.card_tapped(CardRead(UID, "reader-1", "ntag-ultralight"))
        assert rig.beeps == ["error"]


def test_a_failing_subscriber_does_not_stop_the_others(rig: Rig) -> None:
    seen: list[Notice] = []
    notifier = Notifier()
    notifier.subscribe(lambda _n: 1 / 0)
    unsubscribe = notifier.subscribe(seen.append)
    notifier.publish(ScanNotice("gtin", "04006381333931", "scanner"))
    assert len(seen) == 1
    unsubscribe()
    unsubscribe()  # idempotent
    notifier.publish(ScanNotice("gtin", "04006381333931", "scanner"))
    assert len(seen) == 1
