"""Reserving a product at the kiosk: scanned or typed product, validation, sealed contact, the event."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from nacl.public import PrivateKey, SealedBox

from cloud_sync.codes import reservation_code_is_valid
from cloud_sync.envelope import Signer
from cloud_sync.outbox import Outbox
from edge.keys import init_keys, load_signing_key
from edge.membercodes import MemberCodeIssuer
from edge.notify import IdentityNotice, Notifier, ScanNotice
from edge.reservation import ReservationService, parse_item, pickup_window
from edge.signup import Vault
from kiosk_ui import KioskConfig, KioskInfo, create_app
from kiosk_ui.live import LiveFeed

GTIN = "4006381333931"
TOKEN = "d" * 64
TOMORROW = (dt.date.today() + dt.timedelta(days=1)).isoformat()


class Rig:
    def __init__(self, tmp: Path) -> None:
        init_keys(tmp, None)
        self.outbox = Outbox(tmp / "outbox.sqlite3", Signer(load_signing_key(tmp), "s1", "n1"), "retail/v1")
        self.vault_key = PrivateKey.generate()
        self.issuer = MemberCodeIssuer(tmp / "local.sqlite3", 3)
        service = ReservationService(self.outbox, self.issuer, Vault(bytes(self.vault_key.public_key)))
        self.notifier = Notifier()
        self.feed = LiveFeed(self.notifier, 60.0)
        self.app = create_app(
            KioskInfo("s1", "n1", "t"),
            config=KioskConfig(phone_region="NL"),
            feed=self.feed,
            reservations=service,
        )
        self.tmp = tmp

    def events(self) -> list[dict[str, object]]:
        with sqlite3.connect(self.tmp / "outbox.sqlite3") as conn:
            rows = conn.execute("SELECT payload FROM outbox WHERE event_type = 'reservation'").fetchall()
        return [json.loads(r[0])["body"] for r in rows]

    def close(self) -> None:
        self.feed.close()
        self.issuer.close()
        self.outbox.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def _open_form(client: FlaskClient) -> tuple[str, dict[str, str]]:
    page = client.get("/reserve").get_data(as_text=True)
    token = re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', page)
    nonce = re.search(r'name="nonce" value="([^"]+)"', page)
    assert token and nonce
    return page, {"csrf_token": token.group(1), "nonce": nonce.group(1)}


def _reserve(client: FlaskClient, **fields: str) -> tuple[int, str]:
    _, hidden = _open_form(client)
    data = {
        **hidden,
        "product": GTIN,
        "quantity": "2",
        "pickup_date": TOMORROW,
        "name": "Jan de Vries",
        "phone": "06 12345678",
        **fields,
    }
    response = client.post("/reserve", data=data)
    return response.status_code, response.get_data(as_text=True)


def test_a_scanned_product_prefills_the_form_and_the_reservation_is_queued(rig: Rig) -> None:
    client = rig.app.test_client()
    rig.notifier.publish(IdentityNotice("barcode", TOKEN, "scanner", None, None, "id", 1))
    rig.notifier.publish(ScanNotice("gtin", "0" + GTIN, "scanner"))
    page, _ = _open_form(client)
    assert 'value="04006381333931"' in page
    status, _ = _reserve(client, product="04006381333931")
    assert status == 303
    shown = client.get("/reserved").get_data(as_text=True)
    code = re.search(r'id="reservation-code">(R\d{8})<', shown)
    assert code and reservation_code_is_valid(code.group(1)) and TOMORROW in shown
    (body,) = rig.events()
    assert body["code"] == code.group(1)
    assert body["item"] == {"gtin": "04006381333931", "quantity": 2}
    assert body["pickup_date"] == TOMORROW and body["member_token"] == TOKEN
    sealed = str(body["sealed"])
    opened = json.loads(
        SealedBox(rig.vault_key).decrypt(base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4)))
    )
    assert opened == {"name": "Jan de Vries", "phone": "+31612345678", "reservation_code": code.group(1)}
    rig.outbox.close()
    blob = b"".join(p.read_bytes() for p in rig.tmp.iterdir() if p.is_file())
    assert b"Jan de Vries" not in blob and b"612345678" not in blob


def test_a_typed_article_number_works_too(rig: Rig) -> None:
    assert _reserve(rig.app.test_client(), product="art-77.1")[0] == 303
    assert rig.events()[0]["item"] == {"sku": "ART-77.1", "quantity": 2}


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"product": GTIN[:-1] + "2"}, "product", "not a valid product"),
        ({"product": "<script>alert(1)</script>"}, "product", "not a valid product"),
        ({"product": ""}, "product", "Scan the product"),
        ({"quantity": "0"}, "quantity", "between 1 and 20"),
        ({"quantity": "21"}, "quantity", "between 1 and 20"),
        ({"quantity": "two"}, "quantity", "Not a valid integer"),
        ({"pickup_date": dt.date.today().isoformat()}, "pickup_date", "from tomorrow"),
        ({"pickup_date": (dt.date.today() + dt.timedelta(days=31)).isoformat()}, "pickup_date", "30 days"),
        ({"pickup_date": "2026-02-30"}, "pickup_date", "Choose a pick-up date"),
        ({"name": "'; DROP TABLE outbox; --"}, "name", "letters only"),
        ({"phone": "", "email": ""}, "email", "e-mail address or a phone number"),
        ({"phone": "123"}, "phone", "does not look right"),
    ],
)
def test_bad_input_is_refused_per_field_and_queues_nothing(
    rig: Rig, fields: dict[str, str], field: str, message: str
) -> None:
    status, page = _reserve(rig.app.test_client(), **fields)
    assert status == 400 and f'id="{field}-error"' in page and message in page
    assert "<script>alert" not in page
    assert rig.events() == []


def test_a_double_submit_is_one_reservation(rig: Rig) -> None:
    client = rig.app.test_client()
    _, hidden = _open_form(client)
    data = {
        **hidden,
        "product": GTIN,
        "quantity": "1",
        "pickup_date": TOMORROW,
        "name": "Jan",
        "phone": "0612345678",
    }
    assert client.post("/reserve", data=data).status_code == 303
    again = client.post("/reserve", data=data)
    assert again.status_code == 303 and again.headers["Location"] == "/reserved"
    assert len(rig.events()) == 1


def test_item_parsing_and_the_pickup_window() -> None:
    assert parse_item(GTIN) == ("0" + GTIN, None)
    assert parse_item("  sku-1 ") == (None, "SKU-1")
    assert parse_item(GTIN[:-1] + "0") == (None, None)
    assert parse_item("x" * 33) == (None, None)
    assert parse_item("ÄRTIKEL") == (None, None)
    first, last = pickup_window(dt.date(2026, 12, 31))
    assert (first, last) == (dt.date(2027, 1, 1), dt.date(2027, 1, 30))
