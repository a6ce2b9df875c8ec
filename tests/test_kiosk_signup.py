"""Sign-up at the kiosk, end to end through the Flask app into a real outbox; the vault key is the
test's own, so the test can open the sealed personal data — and check that nothing else can see it."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey, SealedBox

from cloud_sync.codes import member_code_is_valid
from cloud_sync.envelope import Signer
from cloud_sync.outbox import Outbox
from edge.identity import Pseudonymizer
from edge.keys import init_keys, load_signing_key
from edge.membercodes import PER_NODE, MemberCodeIssuer, MemberCodesExhausted
from edge.notify import IdentityNotice, Notifier
from edge.signup import SignupService, Vault, load_vault
from kiosk_ui import KioskConfig, KioskInfo, create_app
from kiosk_ui.live import LiveFeed

KEY = bytes(range(32))
CARD = "c" * 64
NAME, EMAIL, PHONE = "Ayşe", "ayse.yilmaz@example.com", "+31612345678"


class Rig:
    def __init__(self, tmp: Path, per_minute: int = 50) -> None:
        init_keys(tmp, None)
        self.outbox = Outbox(tmp / "outbox.sqlite3", Signer(load_signing_key(tmp), "s1", "n1"), "retail/v1")
        self.vault_key = PrivateKey.generate()
        self.issuer = MemberCodeIssuer(tmp / "local.sqlite3", 42)
        service = SignupService(
            self.outbox, Pseudonymizer(KEY), self.issuer, Vault(bytes(self.vault_key.public_key))
        )
        self.notifier = Notifier()
        self.feed = LiveFeed(self.notifier, 60.0)
        config = KioskConfig(phone_region="NL", signups_per_minute=per_minute)
        self.app: Flask = create_app(
            KioskInfo("s1", "n1", "t"), config=config, feed=self.feed, signup=service
        )
        self.tmp = tmp

    def close(self) -> None:
        self.feed.close()
        self.issuer.close()
        self.outbox.close()

    def events(self) -> list[dict[str, object]]:
        import sqlite3

        with sqlite3.connect(self.tmp / "outbox.sqlite3") as conn:
            rows = conn.execute(
                "SELECT payload FROM outbox WHERE event_type = 'signup' ORDER BY seq"
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def open(self, sealed: str) -> dict[str, str]:
        raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        return json.loads(SealedBox(self.vault_key).decrypt(raw))  # type: ignore[no-any-return]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def _form(client: FlaskClient) -> dict[str, str]:
    page = client.get("/join").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or re.search(
        r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', page
    )
    nonce = re.search(r'name="nonce" value="([^"]+)"', page)
    assert token and nonce, page
    return {"csrf_token": token.group(1), "nonce": nonce.group(1)}


def _join(client: FlaskClient, **fields: str) -> tuple[int, str]:
    data = {**_form(client), "first_name": NAME, "email": EMAIL, "privacy": "y", **fields}
    response = client.post("/join", data=data)
    return response.status_code, response.get_data(as_text=True)


def test_a_sign_up_issues_a_code_binds_the_card_and_seals_the_personal_data(rig: Rig) -> None:
    rig.notifier.publish(IdentityNotice("nfc", CARD, "reader", "ntag-ultralight", None, "id", 1))
    client = rig.app.test_client()
    status, _ = _join(client, phone="06 12345678", marketing_sms="y", heard_via="friend")
    assert status == 303
    page = client.get("/joined").get_data(as_text=True)
    code = re.search(r'id="member-code" aria-label="(M\d{10})"', page)
    assert code and member_code_is_valid(code.group(1)) and code.group(1).startswith("M0042")
    assert 'src="data:image/svg+xml' in page and "linked to your membership" in page
    (event,) = rig.events()
    body = event["body"]
    assert isinstance(body, dict)
    assert body["member_token"] == Pseudonymizer(KEY).barcode_token(code.group(1))
    assert body["card_token"] == CARD
    assert body["consent"] == {
        "privacy_notice": True,
        "marketing_email": False,  # unticked by default
        "marketing_sms": True,
        "notice_version": "2026-11",
    }
    assert body["heard_via"] == "friend" and body["language"] == "en"
    assert rig.open(str(body["sealed"])) == {
        "first_name": NAME,
        "email": EMAIL,
        "phone": PHONE,
        "member_code": code.group(1),
    }
    # the card was used: the next customer does not inherit it
    assert client.get("/welcome").status_code == 302


def test_no_readable_personal_data_on_disk(rig: Rig) -> None:
    client = rig.app.test_client()
    assert _join(client, phone="+31 6 12345678")[0] == 303
    rig.outbox.close()
    blob = b"".join(p.read_bytes() for p in rig.tmp.iterdir() if p.is_file())
    for secret in (NAME, EMAIL, PHONE, "612345678", "Ay\\u015fe"):
        assert secret.encode() not in blob


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"first_name": ""}, "first_name", "Please enter your first name."),
        ({"first_name": "<script>alert(1)</script>"}, "first_name", "letters only"),
        ({"first_name": "x" * 41}, "first_name", "Field cannot be longer than 40 characters."),
        ({"email": "not-an-address"}, "email", "does not look right"),
        ({"email": "", "phone": ""}, "email", "e-mail address or a phone number"),
        ({"phone": "12"}, "phone", "does not look right"),
        ({"privacy": ""}, "privacy", "privacy notice"),
        ({"email": "", "phone": "0612345678", "marketing_email": "y"}, "marketing_email", "need an e-mail"),
        ({"marketing_sms": "y"}, "marketing_sms", "need a phone number"),
        ({"heard_via": "'; DROP TABLE outbox; --"}, "heard_via", "Not a valid choice"),
    ],
)
def test_bad_input_gets_a_message_on_its_field_and_queues_nothing(
    rig: Rig, fields: dict[str, str], field: str, message: str
) -> None:
    client = rig.app.test_client()
    status, page = _join(client, **fields)
    assert status == 400
    assert f'id="{field}-error"' in page and message in page
    assert "<script>alert" not in page  # whatever was typed is rendered escaped
    assert rig.events() == []


def test_messages_are_in_the_customers_language(rig: Rig) -> None:
    client = rig.app.test_client()
    page = client.get("/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    client.post("/lang", data={"lang": "tr", "csrf_token": token.group(1)})
    status, page = _join(client, email="nope")
    assert status == 400 and '<html lang="tr">' in page
    assert "does not look right" not in page


def test_a_double_submit_creates_one_member(rig: Rig) -> None:
    client = rig.app.test_client()
    data = {**_form(client), "first_name": NAME, "email": EMAIL, "privacy": "y"}
    first = client.post("/join", data=data)
    second = client.post("/join", data=data)  # the same form sent again (double tap, browser resend)
    assert first.status_code == 303 and second.status_code == 303
    assert second.headers["Location"] == "/joined"
    assert len(rig.events()) == 1


def test_posts_without_csrf_are_refused(rig: Rig) -> None:
    client = rig.app.test_client()
    form = _form(client)
    response = client.post(
        "/join", data={"nonce": form["nonce"], "first_name": NAME, "email": EMAIL, "privacy": "y"}
    )
    assert response.status_code == 400 and rig.events() == []


def test_sign_ups_are_rate_limited(tmp_path: Path) -> None:
    rig = Rig(tmp_path, per_minute=3)
    try:
        client = rig.app.test_client()
        statuses = [_join(client, email=f"a{i}@example.com")[0] for i in range(4)]
        assert statuses == [303, 303, 303, 429]
        assert len(rig.events()) == 3
    finally:
        rig.close()


def test_oversized_requests_are_refused(rig: Rig) -> None:
    client = rig.app.test_client()
    status, _ = _join(client, first_name="A" * 100_000)
    assert status == 413 and rig.events() == []


def test_member_codes_are_unique_durable_and_bounded(tmp_path: Path) -> None:
    issuer = MemberCodeIssuer(tmp_path / "l.sqlite3", 7)
    codes = [issuer.issue() for _ in range(5)]
    issuer.close()
    again = MemberCodeIssuer(tmp_path / "l.sqlite3", 7)
    codes.append(again.issue())
    again.close()
    assert len(set(codes)) == 6 and all(member_code_is_valid(c) and c.startswith("M0007") for c in codes)
    assert codes[-1] == "M0007" + "00006" + codes[-1][-1]
    import sqlite3

    with sqlite3.connect(tmp_path / "l.sqlite3") as conn:
        conn.execute("UPDATE code_counters SET next = ? WHERE name = 'member:0007'", (PER_NODE,))
    full = MemberCodeIssuer(tmp_path / "l.sqlite3", 7)
    with pytest.raises(MemberCodesExhausted):
        full.issue()
    full.close()


def test_standalone_vault_key_is_stable_and_has_no_private_half(tmp_path: Path) -> None:
    first, standalone = load_vault("", tmp_path)
    second, _ = load_vault("", tmp_path)
    assert standalone and first.key_id == second.key_id
    assert [p.name for p in tmp_path.iterdir()] == ["vault-standalone.pub"]
    configured, standalone = load_vault("x25519:" + base64.b64encode(bytes(32)).decode(), tmp_path)
    assert not standalone and configured.key_id != first.key_id


def test_a_real_node_signs_up_over_http_and_keeps_no_readable_personal_data(tmp_path: Path) -> None:
    """Through the node's own waitress server: the form, the event in the outbox, nothing readable on disk."""
    import http.cookiejar
    import urllib.parse
    import urllib.request

    from tests.support.broker import free_port
    from tests.support.node import NodeProcess

    vault = PrivateKey.generate()
    public = "x25519:" + base64.b64encode(bytes(vault.public_key)).decode()
    node = NodeProcess(
        tmp_path / "node",
        f"mqtt://127.0.0.1:{free_port()}",
        IDENTITY__VAULT_PUBLIC_KEY=public,
        NODE__MEMBER_PREFIX="17",
        KIOSK__PHONE_REGION="TR",
    )
    with node:
        base = f"http://127.0.0.1:{node.kiosk_port}"
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        assert node.cli("sim", "tap", "04A1B2C3D4E5F6").returncode == 0
        page = opener.open(base + "/join", timeout=5).read().decode()
        token = re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', page)
        nonce = re.search(r'name="nonce" value="([^"]+)"', page)
        assert token and nonce
        form = {
            "csrf_token": token.group(1),
            "nonce": nonce.group(1),
            "first_name": NAME,
            "phone": "0532 123 45 67",
            "email": EMAIL,
            "privacy": "y",
            "marketing_email": "y",
        }
        done = opener.open(base + "/join", data=urllib.parse.urlencode(form).encode(), timeout=5)
        assert done.geturl().endswith("/joined")
        shown = re.search(r'id="member-code" aria-label="(M\d{10})"', done.read().decode())
        assert shown and shown.group(1).startswith("M0017")
        status = node.status()
        assert status["outbox"]["by_type"].get("signup") == 1
    import sqlite3

    with sqlite3.connect(node.data_dir / "outbox.sqlite3") as conn:
        (payload,) = conn.execute("SELECT payload FROM outbox WHERE event_type = 'signup'").fetchone()
    body = json.loads(payload)["body"]
    sealed = body["sealed"]
    opened = json.loads(SealedBox(vault).decrypt(base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))))
    assert opened == {
        "first_name": NAME,
        "email": EMAIL,
        "phone": "+905321234567",
        "member_code": shown.group(1),
    }
    assert "card_token" in body  # the simulated tap just before was bound
    blobs = {p.name: p.read_bytes() for p in node.data_dir.iterdir() if p.is_file()}
    blobs["log"] = node.log_path.read_bytes()
    for where, blob in blobs.items():
        for secret in (NAME, EMAIL, "5321234567", "532 123 45 67", "Ay\\u015fe"):
            assert secret.encode() not in blob, f"{secret!r} readable in {where}"
