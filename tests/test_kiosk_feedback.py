"""Post-sale survey and warranty registration at the kiosk."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from nacl.public import PrivateKey, SealedBox

from cloud_sync.envelope import Signer
from cloud_sync.outbox import Outbox
from edge.feedback import FeedbackService, clean_comment, clean_receipt, clean_serial
from edge.keys import init_keys, load_signing_key
from edge.notify import IdentityNotice, Notifier
from edge.signup import Vault
from kiosk_ui import KioskConfig, KioskInfo, create_app
from kiosk_ui.live import LiveFeed

TOKEN = "e" * 64


class Rig:
    def __init__(self, tmp: Path) -> None:
        init_keys(tmp, None)
        self.outbox = Outbox(tmp / "outbox.sqlite3", Signer(load_signing_key(tmp), "s1", "n1"), "retail/v1")
        self.vault_key = PrivateKey.generate()
        self.notifier = Notifier()
        self.feed = LiveFeed(self.notifier, 60.0)
        service = FeedbackService(self.outbox, Vault(bytes(self.vault_key.public_key)))
        self.app = create_app(
            KioskInfo("s1", "n1", "t"), config=KioskConfig(), feed=self.feed, feedback=service
        )
        self.tmp = tmp

    def events(self, kind: str) -> list[dict[str, object]]:
        with sqlite3.connect(self.tmp / "outbox.sqlite3") as conn:
            rows = conn.execute("SELECT payload FROM outbox WHERE event_type = ?", (kind,)).fetchall()
        return [json.loads(r[0])["body"] for r in rows]

    def open(self, sealed: object) -> dict[str, str]:
        text = str(sealed)
        return json.loads(
            SealedBox(self.vault_key).decrypt(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        )  # type: ignore[no-any-return]

    def close(self) -> None:
        self.feed.close()
        self.outbox.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def _hidden(client: FlaskClient, url: str) -> dict[str, str]:
    page = client.get(url).get_data(as_text=True)
    token = re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', page)
    nonce = re.search(r'name="nonce" value="([^"]+)"', page)
    assert token and nonce
    return {"csrf_token": token.group(1), "nonce": nonce.group(1)}


def test_a_survey_answer_with_a_comment_after_a_sale(rig: Rig) -> None:
    rig.notifier.publish(IdentityNotice("nfc", TOKEN, "reader", "ntag-ultralight", None, "id", 1))
    client = rig.app.test_client()
    url = "/survey?receipt=RC-2026-0042"
    response = client.post(
        url, data={**_hidden(client, url), "score": "9", "comment": "  Friendly   staff, Jan helped me "}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/thanks"
    assert "Thank you!" in client.get("/thanks").get_data(as_text=True)
    (body,) = rig.events("survey")
    assert body["score"] == 9 and body["receipt"] == "RC-2026-0042" and body["member_token"] == TOKEN
    assert rig.open(body["sealed_comment"]) == {"comment": "Friendly staff, Jan helped me"}
    rig.outbox.close()
    blob = b"".join(p.read_bytes() for p in rig.tmp.iterdir() if p.is_file())
    assert b"Jan helped" not in blob


def test_a_score_alone_is_enough(rig: Rig) -> None:
    client = rig.app.test_client()
    assert client.post("/survey", data={**_hidden(client, "/survey"), "score": "0"}).status_code == 303
    assert rig.events("survey") == [
        {"score": 0, "language": "en", "vault_key": rig.events("survey")[0]["vault_key"]}
    ]


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({}, 400, "number from 0 to 10"),
        ({"score": "11"}, 400, "Not a valid choice"),
        ({"score": "-1"}, 400, "Not a valid choice"),
        ({"score": "<script>alert(1)</script>"}, 400, "Not a valid choice"),
        ({"score": "5", "comment": "x" * 501}, 400, "Field cannot be longer than 500 characters."),
        ({"score": "5", "comment": "bell\x07"}, 400, "plain text"),
    ],
)
def test_bad_survey_answers_are_refused(rig: Rig, fields: dict[str, str], status: int, message: str) -> None:
    client = rig.app.test_client()
    response = client.post("/survey", data={**_hidden(client, "/survey"), **fields})
    page = response.get_data(as_text=True)
    assert response.status_code == status and message in page and "<script>alert" not in page
    assert rig.events("survey") == []


def test_a_hostile_receipt_in_the_url_is_dropped(rig: Rig) -> None:
    client = rig.app.test_client()
    url = "/survey?receipt=%3Cscript%3E"
    assert "<script>" not in client.get(url).get_data(as_text=True)
    client.post(url, data={**_hidden(client, url), "score": "3"})
    assert "receipt" not in rig.events("survey")[0]


def test_a_guest_registers_a_warranty_with_a_sealed_contact(rig: Rig) -> None:
    client = rig.app.test_client()
    form = {
        "serial": "sn-4471-ab09",
        "receipt": "RC-2026-0042",
        "product": "4006381333931",
        "name": "Mei Chen",
        "email": "mei@example.com",
    }
    assert client.post("/warranty", data={**_hidden(client, "/warranty"), **form}).status_code == 303
    (body,) = rig.events("warranty")
    assert (
        body["serial"] == "SN-4471-AB09" and body["gtin"] == "04006381333931" and "member_token" not in body
    )
    assert rig.open(body["sealed"]) == {"name": "Mei Chen", "email": "mei@example.com"}


def test_a_member_who_tapped_needs_no_contact(rig: Rig) -> None:
    rig.notifier.publish(IdentityNotice("barcode", TOKEN, "scanner", None, None, "id", 1))
    client = rig.app.test_client()
    page = client.get("/warranty").get_data(as_text=True)
    assert "Registered to your membership." in page and 'name="name"' not in page
    form = {"serial": "X1234", "receipt": "RC-0001"}
    assert client.post("/warranty", data={**_hidden(client, "/warranty"), **form}).status_code == 303
    (body,) = rig.events("warranty")
    assert body["member_token"] == TOKEN and "sealed" not in body


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"serial": ""}, "serial", "serial number"),
        ({"serial": "<b>1</b>"}, "serial", "does not look right"),
        ({"receipt": "RC 1"}, "receipt", "does not look right"),
        ({"product": "4006381333932"}, "product", "not a valid product"),
        ({"name": ""}, "name", "tap your card first"),
        ({"email": "", "phone": ""}, "email", "e-mail address or a phone number"),
    ],
)
def test_bad_warranty_registrations_are_refused_per_field(
    rig: Rig, fields: dict[str, str], field: str, message: str
) -> None:
    client = rig.app.test_client()
    form = {"serial": "SN-1", "receipt": "RC-0001", "name": "Jan", "email": "jan@example.com", **fields}
    response = client.post("/warranty", data={**_hidden(client, "/warranty"), **form})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and f'id="{field}-error"' in page and message in page
    assert rig.events("warranty") == []


def test_double_submits_count_once(rig: Rig) -> None:
    client = rig.app.test_client()
    data = {**_hidden(client, "/survey"), "score": "10"}
    assert client.post("/survey", data=data).status_code == 303
    assert client.post("/survey", data=data).status_code == 303
    assert len(rig.events("survey")) == 1


def test_cleaning_rules() -> None:
    assert clean_serial(" ab-12/3.4 ") == "AB-12/3.4"
    assert clean_serial("ÄB123") is None and clean_serial("ab") is None
    assert clean_receipt("RC-0001") == "RC-0001" and clean_receipt("RC 0001") is None
    assert clean_comment("   ") is None
    with pytest.raises(ValueError):
        clean_comment("x" * 501)
