"""The POS API end to end inside one process: real outbox (SQLite), real pairing, real till session.

What the cashier's till relies on: nothing readable unpaired, a sale durable before its answer, the
present customer attached and consumed, retries answered identically without a second event (also when
they race), and every bad sale refused with each bad field named.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from nacl.signing import VerifyKey

from cloud_sync.codes import make_member_code
from cloud_sync.envelope import Signer, verify
from cloud_sync.outbox import Limits, Outbox
from edge.identity import Pseudonymizer
from edge.keys import init_keys, load_signing_key
from edge.members import MemberDirectory, MemberSummary
from edge.notify import IdentityNotice, Notifier
from edge.pos.api import create_pos_app
from edge.pos.pairing import Pairing
from edge.pos.sales import RecordedSale, SaleService
from edge.pos.till import TillSession

KEY = bytes(range(32))
TOKEN = "ab" * 32
SALE: dict[str, Any] = {
    "lines": [
        {
            "gtin": "4006381333931",
            "name": "Fineliner",
            "quantity": 2,
            "unit_price": 199,
            "category": "stationery",
        },
        {"sku": "BAG-1", "name": "Bag", "quantity": 1, "unit_price": 1000, "category": "accessories"},
    ],
    "total": 1398,
    "currency": "EUR",
    "payment": "card",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Pos:
    client: FlaskClient
    outbox: Outbox
    till: TillSession
    notifier: Notifier
    members: MemberDirectory
    pairing: Pairing
    clock: Clock
    recorded: list[RecordedSale]
    token: str
    path: Path
    verify_key: VerifyKey

    def auth(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    def sale(self, key: str, body: Any = SALE, **headers: str) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(
            "/pos/v1/sales",
            data=data,
            headers=self.auth(**{"Idempotency-Key": key, **headers}),
            content_type="application/json",
        )

    def tap(self, token: str = TOKEN) -> None:
        self.notifier.publish(IdentityNotice("nfc", token, "nfc0", "ntag", None, "id", 1))


def _make(tmp_path: Path, limits: Limits | None = None) -> Iterator[Pos]:
    init_keys(tmp_path, None)
    signer_key = load_signing_key(tmp_path)
    signer = Signer(signer_key, "store-7", "till-node")
    outbox = Outbox(tmp_path / "outbox.sqlite3", signer, "retail/v1", limits)
    notifier = Notifier()
    clock = Clock()
    till = TillSession(Pseudonymizer(KEY), 120, clock=clock)
    notifier.subscribe(till.on_notice)
    members = MemberDirectory()
    recorded: list[RecordedSale] = []
    sales = SaleService(outbox, till, members, on_recorded=recorded.append)
    pairing = Pairing(tmp_path / "local.sqlite3")
    app = create_pos_app(pairing, till, sales, members, node={"store": "store-7", "node": "till-node"})
    client = app.test_client()
    code = pairing.new_code().code
    reply = client.post("/pos/v1/pair", json={"code": code, "pos_id": "till-1", "name": "Till 1"})
    assert reply.status_code == 201, reply.get_json()
    assert reply.get_json()["store"] == "store-7"
    try:
        yield Pos(
            client,
            outbox,
            till,
            notifier,
            members,
            pairing,
            clock,
            recorded,
            reply.get_json()["token"],
            tmp_path / "outbox.sqlite3",
            signer_key.verify_key,
        )
    finally:
        pairing.close()
        outbox.close()


@pytest.fixture
def pos(tmp_path: Path) -> Iterator[Pos]:
    yield from _make(tmp_path)


def _sale_payloads(pos: Pos) -> list[dict[str, Any]]:
    conn = sqlite3.connect(pos.path)
    try:
        rows = conn.execute("SELECT payload FROM outbox WHERE event_type = 'sale' ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [verify(bytes(r[0]), pos.verify_key) | {"sig": "checked"} for r in rows]


# -- authentication ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/pos/v1/till"),
        ("POST", "/pos/v1/till/customer"),
        ("DELETE", "/pos/v1/till/customer"),
        ("POST", "/pos/v1/sales"),
        ("GET", "/pos/v1/nothing-here"),
    ],
)
@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer kpos_forged", "Basic dXNlcjpwYXNz", "bearer ' OR 1=1 --"]
)
def test_nothing_is_readable_unpaired(pos: Pos, method: str, path: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    reply = pos.client.open(path, method=method, headers=headers, json={"member_code": "x"})
    assert reply.status_code == 401
    assert reply.mimetype == "application/problem+json"
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert reply.get_json()["type"].endswith("/unauthorised")
    assert _sale_payloads(pos) == []


def test_a_revoked_token_is_refused_at_once(pos: Pos) -> None:
    assert pos.client.get("/pos/v1/till", headers=pos.auth()).status_code == 200
    assert pos.pairing.revoke("till-1")
    assert pos.client.get("/pos/v1/till", headers=pos.auth()).status_code == 401
    assert pos.sale("RC-1").status_code == 401


def test_the_openapi_document_is_public(pos: Pos) -> None:
    reply = pos.client.get("/pos/v1/openapi.json")
    assert reply.status_code == 200 and reply.get_json()["openapi"].startswith("3.1")


def test_pairing_errors_are_problems(pos: Pos) -> None:
    bad = pos.client.post("/pos/v1/pair", json={"code": "12", "pos_id": "t", "name": "T"})
    assert bad.status_code == 400 and "6 digits" in bad.get_json()["detail"]
    extra = pos.client.post(
        "/pos/v1/pair", json={"code": "123456", "pos_id": "t", "name": "T", "admin": True}
    )
    assert extra.status_code == 400 and "admin" in extra.get_json()["detail"]
    not_json = pos.client.post("/pos/v1/pair", data=b"\xff\xfe", content_type="application/json")
    assert not_json.status_code == 400
    statuses = []
    for _ in range(5):
        reply = pos.client.post("/pos/v1/pair", json={"code": "000000", "pos_id": "laptop", "name": "x"})
        statuses.append(reply.status_code)
    # (a code of 000000 could be valid: no code is outstanding here, so every try is wrong)
    assert statuses == [403, 403, 403, 403, 429]
    assert int(reply.headers["Retry-After"]) > 0 and reply.get_json()["type"].endswith("/pairing-locked")


# -- sales ---------------------------------------------------------------------------------------------


def test_an_anonymous_sale_is_durable_before_the_answer(pos: Pos) -> None:
    reply = pos.sale("RC-0001")
    assert reply.status_code == 201, reply.get_json()
    answer = reply.get_json()
    assert answer["receipt"] == "RC-0001" and answer["customer"] is None and answer["survey"] is False
    [event] = _sale_payloads(pos)  # committed before the response was built
    assert event["id"] == answer["event_id"] and event["seq"] == answer["seq"]
    body = event["body"]
    assert body["receipt"] == "RC-0001" and body["pos"] == "till-1" and body["total"] == 1398
    assert body["lines"][0]["gtin"] == "04006381333931" and body["lines"][1]["sku"] == "BAG-1"
    assert "customer" not in body and "points" not in body


def test_the_present_customer_is_attached_and_consumed(pos: Pos) -> None:
    pos.tap()
    till = pos.client.get("/pos/v1/till", headers=pos.auth()).get_json()
    assert till["customer"]["masked"] == "…" + TOKEN[-6:] and till["customer"]["source"] == "nfc"
    assert TOKEN not in json.dumps(till)
    reply = pos.sale("RC-0002").get_json()
    assert reply["customer"]["points_earned"] == 13  # 13.98 EUR at the basic rate
    assert reply["customer"]["member"] is None  # the node does not know this member (yet)
    [event] = _sale_payloads(pos)
    assert event["body"]["customer"] == {"source": "nfc", "token": TOKEN}
    assert event["body"]["points"] == 13
    assert pos.client.get("/pos/v1/till", headers=pos.auth()).get_json() == {"customer": None}
    second = pos.sale("RC-0003").get_json()  # the next sale is anonymous again
    assert second["customer"] is None
    assert [r.customer is not None for r in pos.recorded] == [True, False]


def test_a_known_member_gets_their_tier_and_name_in_the_answer_not_on_disk(pos: Pos) -> None:
    pos.members.remember(TOKEN, MemberSummary(make_member_code(427), "Zeynep", "gold", 1200, ("coffee",)))
    pos.tap()
    reply = pos.sale("RC-0004").get_json()
    assert reply["customer"]["member"]["first_name"] == "Zeynep"
    assert reply["customer"]["points_earned"] == 20  # 13.98 EUR at gold (150 %)
    raw = pos.path.read_bytes() + _wal(pos.path)
    assert b"Zeynep" not in raw
    replay = pos.sale("RC-0004")
    assert replay.status_code == 200 and replay.get_json() == reply  # the name comes from memory again


def _wal(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    return wal.read_bytes() if wal.exists() else b""


def test_the_session_expires_after_its_window(pos: Pos) -> None:
    pos.tap()
    pos.clock.now += 121
    assert pos.sale("RC-0005").get_json()["customer"] is None


def test_cashier_attaches_by_typed_code_and_clears(pos: Pos) -> None:
    code = make_member_code(4242)
    typo = code[:-1] + str((int(code[-1]) + 1) % 10)
    bad = pos.client.post("/pos/v1/till/customer", headers=pos.auth(), json={"member_code": typo})
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "/member_code"
    for junk in ({"member_code": 5}, {"code": code}, [code], {"member_code": code, "x": 1}):
        assert pos.client.post("/pos/v1/till/customer", headers=pos.auth(), json=junk).status_code == 400
    ok = pos.client.post("/pos/v1/till/customer", headers=pos.auth(), json={"member_code": code.lower()})
    assert ok.status_code == 200 and ok.get_json()["customer"]["source"] == "typed"
    assert code not in ok.get_data(as_text=True)
    assert pos.client.delete("/pos/v1/till/customer", headers=pos.auth()).status_code == 204
    assert pos.client.get("/pos/v1/till", headers=pos.auth()).get_json() == {"customer": None}
    pos.client.post("/pos/v1/till/customer", headers=pos.auth(), json={"member_code": code})
    body = _sale_payloads(pos) or None
    assert body is None
    pos.sale("RC-0006")
    [event] = _sale_payloads(pos)
    assert event["body"]["customer"]["source"] == "typed"
    assert event["body"]["customer"]["token"] == Pseudonymizer(KEY).barcode_token(code)


def test_a_retry_gets_the_same_answer_and_no_second_event(pos: Pos) -> None:
    pos.tap()
    first = pos.sale("RC-0007")
    pos.tap("cd" * 32)  # another customer arrives before the retry
    retry = pos.sale("RC-0007")
    assert first.status_code == 201 and retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.get_json() == first.get_json()
    assert len(_sale_payloads(pos)) == 1
    assert pos.till.current() is not None  # the retry did not consume the new customer


def test_a_reused_key_with_another_sale_is_a_conflict(pos: Pos) -> None:
    assert pos.sale("RC-0008").status_code == 201
    other = {**SALE, "payment": "cash"}
    reply = pos.sale("RC-0008", other)
    assert reply.status_code == 409 and reply.get_json()["type"].endswith("/receipt-conflict")
    assert len(_sale_payloads(pos)) == 1


def test_receipts_are_per_till(tmp_path: Path, pos: Pos) -> None:
    token2 = pos.pairing.pair(pos.pairing.new_code().code, "till-2", "Till 2")
    assert pos.sale("RC-0009").status_code == 201
    reply = pos.client.post(
        "/pos/v1/sales",
        json=SALE,
        headers={"Authorization": f"Bearer {token2}", "Idempotency-Key": "RC-0009"},
    )
    assert reply.status_code == 201 and len(_sale_payloads(pos)) == 2


def test_concurrent_retries_create_one_event(pos: Pos) -> None:
    pos.tap()
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def send() -> None:
        client = pos.client.application.test_client()
        start.wait()
        reply = client.post("/pos/v1/sales", json=SALE, headers=pos.auth(**{"Idempotency-Key": "RC-RACE-1"}))
        with lock:
            answers.append((reply.status_code, reply.get_json()))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(status for status, _ in answers) == [200] * 7 + [201]
    assert len({json.dumps(answer, sort_keys=True) for _, answer in answers}) == 1
    assert len(_sale_payloads(pos)) == 1


@pytest.mark.parametrize(
    "key", ["", "abc", "x" * 49, "RC 0001", "RC_0001", "RC-0001é", "<script>", "'; DROP TABLE receipts;--"]
)
def test_bad_idempotency_keys(pos: Pos, key: str) -> None:
    reply = pos.sale(key)
    assert reply.status_code == 400 and reply.get_json()["type"].endswith("/idempotency-key")
    assert _sale_payloads(pos) == []


def test_missing_idempotency_key(pos: Pos) -> None:
    reply = pos.client.post("/pos/v1/sales", json=SALE, headers=pos.auth())
    assert reply.status_code == 400


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({**SALE, "total": 1}, {"/total"}),
        ({**SALE, "currency": "XXY"}, {"/currency"}),
        ({**SALE, "lines": [{**SALE["lines"][0], "gtin": "4006381333932"}], "total": 398}, {"/lines/0/gtin"}),
        (
            {**SALE, "currency": "eur", "payment": "iou", "lines": [{**SALE["lines"][0], "quantity": 0}]},
            {"/currency", "/payment", "/lines/0/quantity"},
        ),
        ({**SALE, "lines": [{**SALE["lines"][0], "unit_price": 1.99}]}, {"/lines/0/unit_price"}),
        ({**SALE, "admin": True}, {"/admin"}),
    ],
)
def test_invalid_sales_name_every_bad_field(pos: Pos, body: dict[str, Any], fields: set[str]) -> None:
    reply = pos.sale("RC-BAD-1", body)
    assert reply.status_code == 422, reply.get_json()
    problem = reply.get_json()
    assert reply.mimetype == "application/problem+json" and problem["type"].endswith("/invalid-sale")
    assert {e["field"] for e in problem["errors"]} == fields
    assert _sale_payloads(pos) == []


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"[]", b'{"lines": ', b"\xff\xfe\x00", b"{" * 5000 + b"}" * 5000]
)
def test_malformed_sales(pos: Pos, raw: bytes) -> None:
    reply = pos.sale("RC-BAD-2", raw)
    assert reply.status_code == 422 and reply.get_json()["errors"]
    assert _sale_payloads(pos) == []


def test_oversized_sale_is_refused_before_parsing(pos: Pos) -> None:
    reply = pos.sale("RC-BAD-3", b"{" + b" " * (300 * 1024) + b"}")
    assert reply.status_code == 413 and reply.mimetype == "application/problem+json"


def test_hostile_text_is_kept_verbatim_in_the_event_and_escaped_in_json(pos: Pos) -> None:
    name = "<script>alert(1)</script>' OR 1=1 --"
    body = {**SALE, "lines": [{**SALE["lines"][1], "name": name}], "total": 1000}
    reply = pos.sale("RC-0010", body)
    assert reply.status_code == 201
    assert _sale_payloads(pos)[0]["body"]["lines"][0]["name"] == name
    assert "<script>" not in reply.get_data(as_text=True)  # the answer does not echo it


def test_a_full_outbox_refuses_the_sale_and_keeps_the_customer(tmp_path: Path) -> None:
    gen = _make(tmp_path, Limits(max_rows=10, max_bytes=64 * 1024))
    pos = next(gen)
    try:
        for i in range(10):
            assert pos.sale(f"RC-FILL-{i}").status_code == 201
        pos.tap()
        reply = pos.sale("RC-FULL-1")
        assert reply.status_code == 507 and reply.headers["Retry-After"] == "30"
        assert reply.get_json()["alarm"] == "outbox_full"
        assert pos.till.current() is not None  # still present for the retry
        assert pos.outbox.find_receipt("till-1", "RC-FULL-1") is None  # so a retry will record it
        rows = [e["body"]["receipt"] for e in _sale_payloads(pos)]
        pos.outbox.acknowledge(range(1, 6), wait=True)
        retry = pos.sale("RC-FULL-1")
        assert retry.status_code == 201 and retry.get_json()["customer"] is not None
        assert "RC-FULL-1" not in rows
    finally:
        gen.close()


def test_receipts_are_pruned_after_their_retention(pos: Pos) -> None:
    pos.sale("RC-0011")
    assert pos.outbox.prune_receipts(before=0) == 0
    assert pos.outbox.find_receipt("till-1", "RC-0011") is not None
    assert pos.outbox.prune_receipts(before=2**40) == 1
    assert pos.outbox.find_receipt("till-1", "RC-0011") is None
