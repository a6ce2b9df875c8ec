"""Reservation pick-up at the till: once per code, check digit enforced, hostile input refused."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cloud_sync.codes import make_reservation_code
from cloud_sync.envelope import Signer, verify
from cloud_sync.outbox import Outbox
from edge.identity import Pseudonymizer
from edge.keys import init_keys, load_signing_key
from edge.members import MemberDirectory
from edge.pos.api import create_pos_app
from edge.pos.pairing import Pairing
from edge.pos.pickup import PickupService
from edge.pos.sales import SaleService
from edge.pos.till import TillSession

CODE = make_reservation_code(427)


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        init_keys(tmp_path, None)
        self.key = load_signing_key(tmp_path)
        self.outbox = Outbox(tmp_path / "o.sqlite3", Signer(self.key, "s", "n"), "retail/v1")
        till = TillSession(Pseudonymizer(bytes(32)), 120)
        members = MemberDirectory()
        self.pairing = Pairing(tmp_path / "local.sqlite3")
        app = create_pos_app(
            self.pairing,
            till,
            SaleService(self.outbox, till, members),
            members,
            node={"node": "n"},
            pickups=PickupService(self.outbox),
        )
        self.client: FlaskClient = app.test_client()
        self.tokens = {
            pos: self.pairing.pair(self.pairing.new_code().code, pos, pos.upper())
            for pos in ("till-1", "till-2")
        }

    def pickup(self, code: str, body: Any = None, pos: str = "till-1", raw: bytes | None = None) -> Any:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        return self.client.post(
            f"/pos/v1/reservations/{code}/pickup",
            data=data,
            headers={"Authorization": f"Bearer {self.tokens[pos]}"},
        )

    def events(self) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.outbox.path)
        try:
            rows = conn.execute("SELECT payload FROM outbox WHERE event_type = 'pickup'").fetchall()
        finally:
            conn.close()
        return [verify(bytes(r[0]), self.key.verify_key)["body"] for r in rows]

    def close(self) -> None:
        self.pairing.close()
        self.outbox.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def test_a_pickup_is_recorded_once_per_code_whichever_till(rig: Rig) -> None:
    first = rig.pickup(CODE.lower(), {"receipt": "RC-77"})
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["code"] == CODE and first.get_json()["pos"] == "till-1"
    again = rig.pickup(CODE, pos="till-2")  # the same slip scanned at the other till
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert rig.events() == [{"code": CODE, "pos": "till-1", "receipt": "RC-77"}]


def test_concurrent_scans_of_one_slip_record_one_pickup(rig: Rig) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def scan() -> None:
        reply = rig.client.application.test_client().post(
            f"/pos/v1/reservations/{CODE}/pickup", headers={"Authorization": f"Bearer {rig.tokens['till-1']}"}
        )
        with lock:
            statuses.append(reply.status_code)

    threads = [threading.Thread(target=scan) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 5 + [201] and len(rig.events()) == 1


@pytest.mark.parametrize(
    ("code", "body", "field"),
    [
        (CODE[:-1] + str((int(CODE[-1]) + 1) % 10), None, "/code"),  # a mistyped check digit
        ("R123", None, "/code"),
        ("M0000000427", None, "/code"),
        ("R" + "1" * 40, None, "/code"),
        ("R0000427%3Cscript%3E", None, "/code"),
        (CODE, {"receipt": "RC 1"}, "/receipt"),
        (CODE, {"receipt": None}, "/receipt"),
        (CODE, {"receipt": "RC-1", "paid": True}, "/paid"),
        (CODE, [1], ""),
    ],
)
def test_bad_pickups_are_refused_and_record_nothing(rig: Rig, code: str, body: Any, field: str) -> None:
    reply = rig.pickup(code, body)
    assert reply.status_code == 422
    assert field in {e["field"] for e in reply.get_json()["errors"]}
    assert rig.events() == []


def test_malformed_and_oversized_bodies(rig: Rig) -> None:
    assert rig.pickup(CODE, raw=b"{not json").status_code == 422
    assert rig.pickup(CODE, raw=b'{"receipt": "' + b"A" * 2000 + b'"}').status_code == 422
    assert rig.events() == []


def test_pickups_need_a_token(rig: Rig) -> None:
    reply = rig.client.post(f"/pos/v1/reservations/{CODE}/pickup")
    assert reply.status_code == 401 and rig.events() == []
