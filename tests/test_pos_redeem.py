"""Reward redemptions over MQTT v5 request/response, against a real Mosquitto and a minimal responder.

The central receiver's real responder comes with its own issue; here a paho client plays it: it checks
the request (signature, response topic, correlation data, expiry) and answers approve / decline /
nothing / garbage, so every branch of the node's side runs against a real broker.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from flask.testing import FlaskClient
from nacl.signing import VerifyKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_sync.envelope import Signer, verify
from cloud_sync.outbox import Outbox
from cloud_sync.relay import Relay, RelayOptions, RequestUnavailable
from edge.identity import Pseudonymizer
from edge.keys import init_keys, load_signing_key
from edge.members import MemberDirectory
from edge.notify import IdentityNotice, Notifier
from edge.pos.api import create_pos_app
from edge.pos.pairing import Pairing
from edge.pos.redeem import OfflineAllowance, RedemptionService
from edge.pos.sales import SaleService
from edge.pos.till import TillSession
from tests.support.broker import Collector, Mosquitto

TOKEN = "ab" * 32
ROOT = "retail/v1/store-7/till-node"


@dataclass
class Responder:
    """A stand-in for the central receiver's redemption responder."""

    url_port: int
    verify_key: VerifyKey
    mode: str = "approve"
    seen: list[dict[str, Any]] = field(default_factory=list)
    props: list[Properties] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="central-responder", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda c, *_: c.subscribe("retail/v1/+/+/request/redemption", qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.url_port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        doc = verify(msg.payload, self.verify_key)  # a forged request would raise here
        self.seen.append(doc)
        self.props.append(msg.properties)
        if self.mode == "silent":
            return
        body = doc["body"]
        if self.mode == "approve":
            reply: Any = {"request_id": body["request_id"], "approved": True, "points_balance": 140}
        elif self.mode == "decline":
            reply = {"request_id": body["request_id"], "approved": False, "reason": "insufficient-points"}
        elif self.mode == "wrong-id":
            reply = {"request_id": "0" * 32, "approved": True}
        else:
            reply = "<html>not json"
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = msg.properties.CorrelationData
        payload = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
        client.publish(msg.properties.ResponseTopic, payload, qos=1, properties=props)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Rig:
    client: FlaskClient
    outbox: Outbox
    relay: Relay
    notifier: Notifier
    responder: Responder
    broker: Mosquitto
    token: str
    today: list[dt.date]
    collector: Collector

    def redeem(self, key: str, body: Any = None) -> Any:
        data = json.dumps({"reward": "coffee"} if body is None else body)
        return self.client.post(
            "/pos/v1/redemptions",
            data=data,
            headers={"Authorization": f"Bearer {self.token}", "Idempotency-Key": key},
        )

    def tap(self) -> None:
        self.notifier.publish(IdentityNotice("nfc", TOKEN, "nfc0", "ntag", None, "id", 1))

    def events(self, expected: int) -> list[dict[str, Any]]:
        """The redemption events the broker delivered, once ``expected`` arrived (and no straggler)."""
        assert self.collector.wait_count(expected, timeout=10)
        time.sleep(0.3)
        return [json.loads(p)["body"] for p in self.collector.payloads()]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    init_keys(tmp_path, None)
    key = load_signing_key(tmp_path)
    outbox = Outbox(tmp_path / "outbox.sqlite3", Signer(key, "store-7", "till-node"), "retail/v1")
    today = [dt.date(2026, 11, 26)]
    with Mosquitto(tmp_path / "broker") as broker:
        relay = Relay(
            RelayOptions(
                host="127.0.0.1",
                port=broker.port,
                client_id="node",
                status_topic=f"{ROOT}/status",
                reply_topic=f"{ROOT}/reply",
                reconnect_min=0.05,
                reconnect_max=0.2,
            ),
            outbox,
            lambda state, reason: outbox.seal_presence(
                {"state": state, "reason": reason, "version": "t", "alarms": []}
            ),
        )
        relay.start()
        deadline = time.monotonic() + 10
        while not relay._subscribed and time.monotonic() < deadline:
            time.sleep(0.02)
        notifier = Notifier()
        till = TillSession(Pseudonymizer(bytes(32)), 120)
        notifier.subscribe(till.on_notice)
        allowance = OfflineAllowance(tmp_path / "local.sqlite3", 1, today=lambda: today[0])
        service = RedemptionService(
            outbox, till, relay.request, f"{ROOT}/request/redemption", allowance, timeout=1.0
        )
        pairing = Pairing(tmp_path / "local.sqlite3")
        members = MemberDirectory()
        app = create_pos_app(
            pairing,
            till,
            SaleService(outbox, till, members),
            members,
            node={"store": "store-7", "node": "till-node"},
            redemptions=service,
        )
        client = app.test_client()
        token = pairing.pair(pairing.new_code().code, "till-1", "Till 1")
        responder = Responder(broker.port, key.verify_key)
        collector = Collector(broker.url, "retail/v1/+/+/event/redemption")
        try:
            yield Rig(client, outbox, relay, notifier, responder, broker, token, today, collector)
        finally:
            collector.stop()
            responder.stop()
            relay.stop()
            allowance.close()
            pairing.close()
            outbox.close()


def test_an_approved_redemption_is_recorded_once(rig: Rig) -> None:
    rig.tap()
    reply = rig.redeem("RD-0001", {"reward": "coffee", "receipt": "RC-1"})
    assert reply.status_code == 201, reply.get_json()
    answer = reply.get_json()
    assert answer["approved"] is True and answer["approval"] == "central" and answer["points_balance"] == 140
    [request] = rig.responder.seen
    assert request["schema"] == "retail.v1.redemption_request"
    assert request["body"]["customer"] == {"source": "nfc", "token": TOKEN}
    assert request["body"]["request_id"] == answer["request_id"] and request["body"]["receipt"] == "RC-1"
    props = rig.responder.props[0]
    assert props.ResponseTopic == f"{ROOT}/reply" and len(props.CorrelationData) == 16
    assert 1 <= props.MessageExpiryInterval <= 3  # the central side never acts on an abandoned request
    [event] = rig.events(1)
    assert event["approval"] == "central" and event["request_id"] == answer["request_id"]
    again = rig.redeem("RD-0001", {"reward": "coffee", "receipt": "RC-1"})
    assert again.status_code == 200 and again.get_json() == answer
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(rig.responder.seen) == 1 and len(rig.events(1)) == 1  # nothing asked or handed over twice
    other = rig.redeem("RD-0001", {"reward": "cake"})
    assert other.status_code == 409


def test_a_declined_redemption_records_nothing(rig: Rig) -> None:
    rig.responder.mode = "decline"
    rig.tap()
    reply = rig.redeem("RD-0002")
    assert reply.status_code == 200
    assert reply.get_json() | {"request_id": "x"} == {
        "approved": False,
        "reason": "insufficient-points",
        "reward": "coffee",
        "request_id": "x",
    }
    assert rig.events(0) == []


def test_no_answer_in_time_uses_the_offline_allowance_once_a_day(rig: Rig) -> None:
    rig.responder.mode = "silent"
    rig.tap()
    began = time.monotonic()
    first = rig.redeem("RD-0003")
    assert time.monotonic() - began < 2.5  # the till waits about the timeout, not longer
    assert first.status_code == 201 and first.get_json()["approval"] == "offline"
    second = rig.redeem("RD-0004")
    assert second.status_code == 200 and second.get_json()["reason"] == "timeout"
    rig.today[0] += dt.timedelta(days=1)
    third = rig.redeem("RD-0005")
    assert third.status_code == 201 and third.get_json()["approval"] == "offline"
    assert [e["approval"] for e in rig.events(2)] == ["offline", "offline"]


def test_broker_down_declines_at_once_unless_the_allowance_applies(rig: Rig) -> None:
    rig.broker.stop()
    deadline = time.monotonic() + 10
    while rig.relay.status().connected and time.monotonic() < deadline:
        time.sleep(0.02)
    rig.tap()
    with pytest.raises(RequestUnavailable):
        rig.relay.request(f"{ROOT}/request/redemption", b"{}", 1.0)
    began = time.monotonic()
    first = rig.redeem("RD-0006")
    assert first.get_json()["approval"] == "offline" and time.monotonic() - began < 0.5
    second = rig.redeem("RD-0007")
    assert second.status_code == 200 and second.get_json()["reason"] == "offline"


@pytest.mark.parametrize("mode", ["garbage", "wrong-id"])
def test_a_malformed_or_mismatched_reply_is_declined(rig: Rig, mode: str) -> None:
    rig.responder.mode = mode
    rig.tap()
    reply = rig.redeem("RD-0008")
    assert reply.status_code == 200 and reply.get_json()["reason"] == "central-error"
    assert rig.events(0) == []


def test_no_member_present(rig: Rig) -> None:
    reply = rig.redeem("RD-0009")
    assert reply.status_code == 409 and reply.get_json()["type"].endswith("/no-member")
    assert rig.responder.seen == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reward": "Coffee!"}, "/reward"),
        ({"reward": "x" * 33}, "/reward"),
        ({"reward": 5}, "/reward"),
        ({}, "/reward"),
        ({"reward": "coffee", "receipt": "RC 1"}, "/receipt"),
        ({"reward": "coffee", "receipt": None}, "/receipt"),
        ({"reward": "points-off", "points": 0}, "/points"),
        ({"reward": "points-off", "points": -1}, "/points"),
        ({"reward": "points-off", "points": 10_000_001}, "/points"),
        ({"reward": "points-off", "points": 1.5}, "/points"),
        ({"reward": "points-off", "points": True}, "/points"),
        ({"reward": "points-off", "points": "500"}, "/points"),
        ({"reward": "points-off", "points": None}, "/points"),
        ({"reward": "coffee", "pointz": 100}, "/pointz"),
        ({"reward": "<script>alert(1)</script>"}, "/reward"),
        ([1, 2], ""),
        ("coffee", ""),
    ],
)
def test_malformed_redemptions(rig: Rig, body: Any, field: str) -> None:
    rig.tap()
    reply = rig.redeem("RD-0010", body)
    assert reply.status_code == 422
    assert field in {e["field"] for e in reply.get_json()["errors"]}
    assert rig.responder.seen == []


def test_a_partial_redemption_names_its_points_and_is_never_spent_offline(rig: Rig) -> None:
    rig.tap()
    reply = rig.redeem("RD-0020", {"reward": "points-off", "points": 300})
    assert reply.status_code == 201, reply.get_json()
    answer = reply.get_json()
    assert answer["approved"] is True and answer["points"] == 300 and answer["approval"] == "central"
    [request] = rig.responder.seen
    assert request["body"]["points"] == 300
    [event] = rig.events(1)
    assert event["points"] == 300 and event["reward"] == "points-off"
    # the same key with another number of points is another redemption: refused, not mixed up
    assert rig.redeem("RD-0020", {"reward": "points-off", "points": 200}).status_code == 409
    # no answer: a chosen number of points is not spent blind, though the allowance is still there
    rig.responder.mode = "silent"
    rig.tap()
    blind = rig.redeem("RD-0021", {"reward": "points-off", "points": 300})
    assert blind.status_code == 200 and blind.get_json()["reason"] == "timeout"
    fixed = rig.redeem("RD-0022")
    assert fixed.status_code == 201 and fixed.get_json()["approval"] == "offline"


def test_unauthenticated_redemption_is_refused(rig: Rig) -> None:
    reply = rig.client.post(
        "/pos/v1/redemptions", json={"reward": "coffee"}, headers={"Idempotency-Key": "RD-1"}
    )
    assert reply.status_code == 401 and rig.responder.seen == []


def test_a_retry_after_the_member_left_gets_the_recorded_answer(rig: Rig) -> None:
    rig.tap()
    first = rig.redeem("RD-0011")
    assert first.status_code == 201
    rig.notifier.publish(IdentityNotice("nfc", "cd" * 32, "nfc0", "ntag", None, "id", 2))  # the next customer
    again = rig.redeem("RD-0011")
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert len(rig.responder.seen) == 1


def test_an_offline_hand_over_that_cannot_be_recorded_does_not_use_up_the_allowance(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloud_sync.errors import OutboxFull

    rig.responder.mode = "silent"
    rig.tap()

    def full(*_a: object, **_k: object) -> object:
        raise OutboxFull("redemption", 10, 1000)

    with monkeypatch.context() as patch:
        patch.setattr(rig.outbox, "submit", full)
        refused = rig.redeem("RD-0012")
    assert refused.status_code == 507 and rig.events(0) == []
    retried = rig.redeem("RD-0013")  # the outbox has room again: today's allowance is still there
    assert retried.status_code == 201 and retried.get_json()["approval"] == "offline"


def test_the_allowance_counts_per_member_and_day(tmp_path: Path) -> None:
    day = [dt.date(2026, 11, 26)]
    allowance = OfflineAllowance(tmp_path / "a.sqlite3", 2, today=lambda: day[0])
    try:
        assert [allowance.take("a") for _ in range(3)] == [True, True, False]
        assert allowance.take("b")
        allowance.give_back("a")
        assert allowance.take("a") and not allowance.take("a")
        day[0] += dt.timedelta(days=1)
        assert allowance.take("a")
        off = OfflineAllowance(tmp_path / "b.sqlite3", 0)  # 0 turns it off
        assert not off.take("a")
        off.close()
    finally:
        allowance.close()
