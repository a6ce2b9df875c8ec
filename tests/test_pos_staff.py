"""The staff pairing page: a PIN (scrypt-hashed, 0600) gives a one-time pairing code; wrong PINs lock it."""

from __future__ import annotations

import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from cloud_sync.envelope import Signer
from cloud_sync.outbox import Outbox
from edge.identity import Pseudonymizer
from edge.keys import init_keys, load_signing_key
from edge.members import MemberDirectory
from edge.pos.api import create_pos_app
from edge.pos.pairing import Pairing
from edge.pos.sales import SaleService
from edge.pos.staff import PIN_FILE, StaffPin, set_pin
from edge.pos.till import TillSession
from tests.support.node import KIOSK_EDGE, base_env

PIN = "246810"
CODE_RE = re.compile(r'<strong id="code">(\d{3}) (\d{3})</strong>')


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[FlaskClient, Pairing]]:
    init_keys(tmp_path, None)
    outbox = Outbox(tmp_path / "o.sqlite3", Signer(load_signing_key(tmp_path), "s", "n"), "retail/v1")
    till = TillSession(Pseudonymizer(bytes(32)), 120)
    members = MemberDirectory()
    pairing = Pairing(tmp_path / "local.sqlite3")
    staff = StaffPin(tmp_path, max_failures=3, lockout=60)
    flask_app = create_pos_app(
        pairing, till, SaleService(outbox, till, members), members, node={"node": "till-node"}, staff=staff
    )
    try:
        yield flask_app.test_client(), pairing
    finally:
        pairing.close()
        outbox.close()


def test_without_a_pin_the_page_says_how_to_set_one(app: tuple[FlaskClient, Pairing]) -> None:
    client, _ = app
    page = client.get("/pos/staff")
    assert page.status_code == 200 and "kiosk-edge pos set-pin" in page.get_data(as_text=True)
    assert client.post("/pos/staff", data={"pin": PIN}).status_code == 404


def test_the_right_pin_shows_a_code_that_pairs(app: tuple[FlaskClient, Pairing], tmp_path: Path) -> None:
    client, _pairing = app
    set_pin(tmp_path, PIN)
    assert stat.S_IMODE((tmp_path / PIN_FILE).stat().st_mode) == 0o600
    assert PIN.encode() not in (tmp_path / PIN_FILE).read_bytes()
    form = client.get("/pos/staff")
    assert form.status_code == 200 and 'name="pin"' in form.get_data(as_text=True)
    assert "default-src 'none'" in form.headers["Content-Security-Policy"]
    shown = client.post("/pos/staff", data={"pin": PIN})
    assert shown.status_code == 200
    match = CODE_RE.search(shown.get_data(as_text=True))
    assert match is not None
    token = client.post("/pos/v1/pair", json={"code": "".join(match.groups()), "pos_id": "t1", "name": "T"})
    assert token.status_code == 201


def test_wrong_pins_lock_the_page(app: tuple[FlaskClient, Pairing], tmp_path: Path) -> None:
    client, _ = app
    set_pin(tmp_path, PIN)
    statuses = [
        client.post("/pos/staff", data={"pin": pin}).status_code for pin in ("111111", "0", "x" * 500)
    ]
    assert statuses == [403, 403, 403]
    locked = client.post("/pos/staff", data={"pin": PIN})  # even the right one, while locked
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert CODE_RE.search(locked.get_data(as_text=True)) is None


@pytest.mark.parametrize(
    "pin", ["<script>alert(1)</script>", "' OR 1=1 --", "\uff11\uff12\uff13\uff14\uff15\uff16", ""]
)  # full-width digits
def test_hostile_pins_are_wrong_and_not_echoed(
    app: tuple[FlaskClient, Pairing], tmp_path: Path, pin: str
) -> None:
    client, _ = app
    set_pin(tmp_path, PIN)
    page = client.post("/pos/staff", data={"pin": pin})
    assert (page.status_code == 403 and pin not in page.get_data(as_text=True)) or pin == ""


def test_set_pin_cli(tmp_path: Path) -> None:
    env = base_env()
    env["KIOSK_EDGE_DATA__DIR"] = str(tmp_path / "data")
    ok = subprocess.run(
        [KIOSK_EDGE, "pos", "set-pin", "--pin-stdin"],
        input=PIN + "\n",
        env=env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert StaffPin(tmp_path / "data").verify(PIN)
    bad = subprocess.run(
        [KIOSK_EDGE, "pos", "set-pin", "--pin-stdin"], input="12ab\n", env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "6-12 digits" in bad.stderr and "Traceback" not in bad.stderr
    assert StaffPin(tmp_path / "data").verify(PIN)  # the old PIN still stands
