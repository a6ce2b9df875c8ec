"""`tests.support.mqttwire` on real bytes (paho → TcpTap → Mosquitto) and on hand-built edge cases,
and `TcpTap.sessions()`."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support import mqttwire
from tests.support.broker import Mosquitto, make_client
from tests.support.mqttwire import MalformedPacketError, Packet
from tests.support.proxy import TapSession, TcpTap

BIG = "x" * 20_000  # a Remaining Length of three bytes
MEDIUM = "y" * 200  # two bytes


def _doc(event_id: str, pad: str = "") -> bytes:
    return json.dumps({"id": event_id, "pad": pad}).encode()


class _Client:
    """A paho MQTT v5 client through the tap, with waits for CONNACK, SUBACK and received messages."""

    def __init__(self, url: str, client_id: str) -> None:
        self.client, host, port = make_client(url, client_id=client_id)
        self.cond = threading.Condition()
        self.connected = False
        self.subscribed = False
        self.received: list[bytes] = []
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_args: self._set("subscribed")
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        self.wait(lambda: self.connected)

    def _on_connect(self, *_args: object) -> None:
        self._set("connected")

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.received.append(bytes(msg.payload))
            self.cond.notify_all()

    def _set(self, name: str) -> None:
        with self.cond:
            setattr(self, name, True)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool]) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout=5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[TapSession]]:
    """Two real connections through a tap: the first publishes a mix of messages, the second one more."""
    with Mosquitto(tmp_path_factory.mktemp("broker")) as broker, TcpTap(broker.port) as tap:
        first = _Client(tap.url, "wire-1")
        try:
            first.client.subscribe("wire/echo", qos=1)
            first.wait(lambda: first.subscribed)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = 60
            props.ContentType = "application/json"
            props.UserProperty = [("trace", "abc"), ("hop", "1")]
            infos = [
                first.client.publish("wire/data", _doc("small"), qos=1),
                first.client.publish("wire/data", _doc("medium", MEDIUM), qos=1),
                first.client.publish("wire/data", _doc("big", BIG), qos=1),
                first.client.publish("wire/data", _doc("qos0"), qos=0),
                first.client.publish("wire/data/props", _doc("props"), qos=1, properties=props),
                first.client.publish("wire/echo", _doc("echo"), qos=1, retain=True),
            ]
            for info in infos:
                info.wait_for_publish(timeout=5)
                assert info.is_published()
            first.wait(lambda: len(first.received) == 1)
            assert len(tap.sessions()) == 1  # a connection still open is listed
        finally:
            first.close()
        second = _Client(tap.url, "wire-2")
        try:
            info = second.client.publish("wire/data", _doc("second"), qos=1)
            info.wait_for_publish(timeout=5)
        finally:
            second.close()
        tap.close()  # joins the pumps: every byte is recorded
        sessions = tap.sessions()
        assert tap.connections == len(sessions) == 2
        assert b"".join(s.upstream for s in sessions) == tap.captured_upstream()
        assert b"".join(s.downstream for s in sessions) == tap.captured_downstream()
        yield sessions


def test_tap_keeps_each_connection_apart(wire: list[TapSession]) -> None:
    first, second = wire
    assert b"wire-1" in first.upstream and b"wire-1" not in second.upstream
    assert b"wire-2" in second.upstream and b"second" not in first.upstream
    up, down = second  # still unpacks as (upstream, downstream)
    assert up and down


def test_real_stream_splits_into_the_packets_paho_and_mosquitto_sent(wire: list[TapSession]) -> None:
    up, down = wire[0]
    kinds_up = [p.kind for p in mqttwire.split_packets(up).packets]
    kinds_down = [p.kind for p in mqttwire.split_packets(down).packets]
    assert kinds_up[:2] == [mqttwire.CONNECT, mqttwire.SUBSCRIBE] and kinds_up[-1] == mqttwire.DISCONNECT
    assert kinds_up.count(mqttwire.PUBLISH) == 6 and kinds_up.count(mqttwire.PUBACK) == 1  # acked the echo
    assert kinds_down[:2] == [mqttwire.CONNACK, mqttwire.SUBACK]
    assert kinds_down.count(mqttwire.PUBACK) == 5 and kinds_down.count(mqttwire.PUBLISH) == 1
    assert mqttwire.split_packets(up).truncated == mqttwire.split_packets(down).truncated == 0
    assert mqttwire.protocol_level(mqttwire.split_packets(up).packets[0]) == 5


def test_real_publishes_decode(wire: list[TapSession]) -> None:
    up, down = wire[0]
    sent = mqttwire.publishes(up)
    assert [json.loads(m.payload)["id"] for m in sent] == ["small", "medium", "big", "qos0", "props", "echo"]
    assert [m.topic for m in sent] == ["wire/data"] * 4 + ["wire/data/props", "wire/echo"]
    assert [m.qos for m in sent] == [1, 1, 1, 0, 1, 1]
    assert sent[3].packet_id is None and all(m.packet_id for i, m in enumerate(sent) if i != 3)
    assert len({m.packet_id for m in sent if m.packet_id}) == 5
    assert json.loads(sent[2].payload)["pad"] == BIG and json.loads(sent[1].payload)["pad"] == MEDIUM
    assert sent[4].payload == _doc("props")  # the properties were skipped, not taken for payload
    assert sent[5].retain and not any(m.retain for m in sent[:5]) and not any(m.dup for m in sent)
    (echo,) = mqttwire.publishes(down)  # the broker's delivery to the subscription
    assert echo.topic == "wire/echo" and echo.payload == _doc("echo") and echo.qos == 1
    acks = mqttwire.pubacks(down)
    assert {a.packet_id for a in acks} == {m.packet_id for m in sent if m.qos}
    assert all(a.success for a in acks)
    assert mqttwire.pubacks(up)[0].packet_id == echo.packet_id


def test_acked_ids_on_real_sessions(wire: list[TapSession]) -> None:
    first, second = wire
    assert mqttwire.acked_ids(*first) == {"small", "medium", "big", "props", "echo"}  # not the QoS 0 one
    assert mqttwire.acked_ids(*first, topic_filter="wire/data") == {"small", "medium", "big"}
    assert mqttwire.acked_ids(*first, topic_filter="wire/data/#") == {"small", "medium", "big", "props"}
    assert mqttwire.acked_ids(*second) == {"second"}
    # the directions do not mix: read the other way round, only the broker's delivery of "echo" (which
    # the client acknowledged) is found, not the messages the client published
    assert mqttwire.acked_ids(first.downstream, first.upstream) == {"echo"}


def _boundaries(data: bytes) -> list[int]:
    stream = mqttwire.split_packets(data)
    return [p.offset for p in stream.packets] + [len(data)]


def test_a_stream_cut_anywhere_ends_cleanly_at_the_last_whole_packet(wire: list[TapSession]) -> None:
    for data in (wire[0].upstream, wire[0].downstream):
        full = mqttwire.split_packets(data).packets
        ends = _boundaries(data)
        cuts = {min(len(data), max(0, b + d)) for b in ends for d in (-2, -1, 0, 1, 2, 3, 4, 5)}
        cuts |= {(a + b) // 2 for a, b in itertools.pairwise(ends)}
        for cut in sorted(cuts):
            stream = mqttwire.split_packets(data[:cut])
            whole = [p for p in full if p.offset + _size(p) <= cut]
            assert stream.packets == whole, cut
            assert stream.truncated == cut - (whole[-1].offset + _size(whole[-1]) if whole else 0)
    up, down = wire[0]
    everything = mqttwire.acked_ids(up, down)
    for cut in _boundaries(down):  # a connection cut before the broker's later PUBACKs
        partial = mqttwire.acked_ids(up, down[: cut + 1])
        assert partial <= everything
    assert mqttwire.acked_ids(up, down[: _boundaries(down)[3] + 1]) == {"small"}  # CONNACK, SUBACK, PUBACK
    assert mqttwire.acked_ids(up, b"") == set()


def _size(packet: Packet) -> int:
    """Header + body length of a parsed packet (its varint re-encoded)."""
    return 1 + len(_varint(len(packet.body))) + len(packet.body)


# -- hand-built packets for the cases a short real capture does not contain ---------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _varint(len(body)) + body


def _publish(pid: int, event_id: str, topic: str = "t/e", props: bytes = b"") -> bytes:
    body = len(topic).to_bytes(2, "big") + topic.encode() + pid.to_bytes(2, "big") + _varint(len(props))
    return _packet(mqttwire.PUBLISH, 0b0010, body + props + _doc(event_id))


def _puback(pid: int, reason: int | None = None, props: bytes | None = None) -> bytes:
    body = pid.to_bytes(2, "big")
    if reason is not None:
        body += bytes([reason])
    if props is not None:
        body += _varint(len(props)) + props
    return _packet(mqttwire.PUBACK, 0, body)


def test_a_reused_packet_id_acknowledges_its_latest_publish() -> None:
    up = _publish(1, "a") + _publish(2, "b") + _publish(1, "c") + _publish(1, "d")
    assert mqttwire.acked_ids(up, _puback(1)) == {"a"}
    assert mqttwire.acked_ids(up, _puback(1) + _puback(2) + _puback(1)) == {"a", "b", "c"}  # not d
    assert mqttwire.acked_ids(up, _puback(1) + _puback(1) + _puback(1)) == {"a", "c", "d"}
    with pytest.raises(MalformedPacketError, match="no PUBLISH outstanding"):
        mqttwire.acked_ids(up, _puback(2) + _puback(2))


def test_puback_reason_codes_and_properties() -> None:
    reason_string = b"\x1f" + len(b"quota").to_bytes(2, "big") + b"quota"
    up = _publish(1, "a") + _publish(2, "b") + _publish(3, "c") + _publish(4, "d")
    down = _puback(1, 0x10) + _puback(2, 0x97, reason_string) + _puback(3, 0x00, b"") + _puback(4, 0x80)
    assert [(a.packet_id, a.reason_code, a.success) for a in mqttwire.pubacks(down)] == [
        (1, 0x10, True),
        (2, 0x97, False),
        (3, 0x00, True),
        (4, 0x80, False),
    ]
    assert mqttwire.acked_ids(up, down) == {"a", "c"}  # a refused message was not taken by the broker


def test_publish_properties_are_skipped_and_remaining_length_varints_decode() -> None:
    props = b"\x02\x00\x00\x00\x3c" + b"\x26" + b"\x00\x01k\x00\x01v"  # message expiry, user property
    for size in (0, 100, 127, 128, 16_383, 16_384, 300_000):
        packet = _publish(7, "p" * size, props=props)
        (message,) = mqttwire.publishes(packet)
        assert json.loads(message.payload)["id"] == "p" * size and message.packet_id == 7


def test_malformed_streams_are_refused() -> None:
    with pytest.raises(MalformedPacketError, match="longer than 4"):
        mqttwire.split_packets(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(MalformedPacketError, match="type 0"):
        mqttwire.split_packets(b"\x00\x00")
    with pytest.raises(MalformedPacketError, match="QoS 3"):
        mqttwire.publishes(_packet(mqttwire.PUBLISH, 0b0110, b"\x00\x01t\x00\x01\x00"))
    with pytest.raises(MalformedPacketError, match="properties"):
        mqttwire.publishes(_packet(mqttwire.PUBLISH, 0b0010, b"\x00\x01t\x00\x01\x05\x01"))
    v311_connect = _packet(mqttwire.CONNECT, 0, b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
    with pytest.raises(MalformedPacketError, match="not an MQTT v5"):
        mqttwire.acked_publishes(v311_connect, b"")
    assert mqttwire.split_packets(b"\x30\x80") == mqttwire.Stream([], 2)  # cut inside the varint


def test_sessions_survive_clear(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker, TcpTap(broker.port) as tap:
        client = _Client(tap.url, "wire-clear")
        try:
            tap.clear()
            assert tap.sessions() == [TapSession(b"", b"")]
            client.client.publish("wire/c", _doc("after"), qos=1).wait_for_publish(timeout=5)
        finally:
            client.close()
        tap.close()
        ((up, down),) = tap.sessions()
        assert mqttwire.acked_ids(up, down) == {"after"}
