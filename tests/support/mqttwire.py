"""A small MQTT v5 wire parser for bytes recorded by `tests.support.proxy.TcpTap`.

It reads one direction of one connection (``TcpTap.sessions()``) as a stream of control packets: the
fixed header (type, flags, Remaining Length varint) of every packet, and the contents of the two packets
the relay tests care about, PUBLISH and PUBACK. A connection cut in the middle of a packet (a SIGKILLed
broker, a severed tap) ends the stream cleanly: the incomplete tail is reported, not parsed.

`acked_publishes` answers "which messages did the broker acknowledge on this connection": PUBLISH
packets the client sent, matched with the PUBACKs the broker sent back. Packet ids are reused, so a PUBACK
is matched with the *latest* PUBLISH that carried its id before it; the tap records one direction's bytes
apart from the other's, so "latest" is worked out from the protocol itself: a client must not reuse a
packet id before it has received the PUBACK for it (MQTT v5, 2.2.1), hence the n-th PUBACK with id P
acknowledges the n-th PUBLISH with id P on that connection.

Only what the relay uses is decoded: QoS 0/1 PUBLISH (QoS 2 is parsed but never matched), properties are
skipped by their length, topic aliases are not resolved (the topic is returned as sent).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import paho.mqtt.client as mqtt

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

MQTT_V5 = 5
_MAX_VARINT_BYTES = 4


class MalformedPacketError(ValueError):
    """The bytes are not an MQTT v5 packet stream (or not one this parser understands)."""


@dataclass(frozen=True)
class Packet:
    """One control packet: ``kind`` (1..15), the fixed header's flag bits, and everything after the header."""

    kind: int
    flags: int
    body: bytes
    offset: int  # where the packet starts in the stream


class Stream(NamedTuple):
    """The complete packets of a stream, and how many bytes of an incomplete final packet followed them."""

    packets: list[Packet]
    truncated: int


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int | None  # None at QoS 0
    dup: bool
    retain: bool


@dataclass(frozen=True)
class PubAck:
    packet_id: int
    reason_code: int  # 0 (Success) when the packet omits it

    @property
    def success(self) -> bool:
        """Reason codes below 0x80 are successes (0x10 "no matching subscribers" included)."""
        return self.reason_code < 0x80


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """Decode a Variable Byte Integer at ``pos``: (value, position after it); None if the data ends first."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise MalformedPacketError(f"variable byte integer longer than {_MAX_VARINT_BYTES} bytes at offset {pos}")


def _need_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    decoded = _varint(data, pos)
    if decoded is None:
        raise MalformedPacketError(f"{what}: varint runs past the end of the packet")
    return decoded


def split_packets(data: bytes) -> Stream:
    """Split a byte stream into packets; stop at an incomplete final packet (reported as ``truncated``)."""
    packets: list[Packet] = []
    pos = 0
    while pos < len(data):
        first = data[pos]
        kind, flags = first >> 4, first & 0x0F
        if kind == 0:
            raise MalformedPacketError(f"reserved packet type 0 at offset {pos}")
        decoded = _varint(data, pos + 1)
        if decoded is None:
            break  # cut inside the Remaining Length
        length, start = decoded
        if start + length > len(data):
            break  # cut inside the packet
        packets.append(Packet(kind, flags, bytes(data[start : start + length]), pos))
        pos = start + length
    return Stream(packets, len(data) - pos)


def decode_publish(packet: Packet) -> Publish:
    """Topic, packet id (QoS > 0), properties skipped, payload."""
    if packet.kind != PUBLISH:
        raise MalformedPacketError(f"packet type {packet.kind} is not PUBLISH")
    qos = (packet.flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacketError(f"PUBLISH with QoS 3 at offset {packet.offset}")
    body = packet.body
    if len(body) < 2:
        raise MalformedPacketError(f"PUBLISH without a topic at offset {packet.offset}")
    topic_end = 2 + int.from_bytes(body[:2], "big")
    pos = topic_end
    packet_id: int | None = None
    if qos:
        packet_id = int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
    if pos > len(body):
        raise MalformedPacketError(f"PUBLISH header longer than the packet at offset {packet.offset}")
    props_len, pos = _need_varint(body, pos, "PUBLISH properties")
    pos += props_len
    if pos > len(body):
        raise MalformedPacketError(f"PUBLISH properties longer than the packet at offset {packet.offset}")
    return Publish(
        topic=body[2:topic_end].decode("utf-8"),
        payload=body[pos:],
        qos=qos,
        packet_id=packet_id,
        dup=bool(packet.flags & 0x08),
        retain=bool(packet.flags & 0x01),
    )


def decode_puback(packet: Packet) -> PubAck:
    """Packet id, then (MQTT v5, optional) a reason code and properties."""
    if packet.kind != PUBACK:
        raise MalformedPacketError(f"packet type {packet.kind} is not PUBACK")
    body = packet.body
    if len(body) < 2:
        raise MalformedPacketError(f"PUBACK shorter than a packet id at offset {packet.offset}")
    if len(body) >= 4:
        props_len, pos = _need_varint(body, 3, "PUBACK properties")
        if pos + props_len != len(body):
            raise MalformedPacketError(f"PUBACK properties do not fill the packet at offset {packet.offset}")
    return PubAck(int.from_bytes(body[:2], "big"), body[2] if len(body) > 2 else 0)


def protocol_level(packet: Packet) -> int:
    """The protocol level a CONNECT asks for (5 for MQTT v5, 4 for 3.1.1)."""
    if packet.kind != CONNECT:
        raise MalformedPacketError(f"packet type {packet.kind} is not CONNECT")
    name_end = 2 + int.from_bytes(packet.body[:2], "big")
    if packet.body[2:name_end] != b"MQTT" or len(packet.body) <= name_end:
        raise MalformedPacketError("CONNECT without the MQTT protocol name")
    return packet.body[name_end]


def publishes(data: bytes) -> list[Publish]:
    return [decode_publish(p) for p in split_packets(data).packets if p.kind == PUBLISH]


def pubacks(data: bytes) -> list[PubAck]:
    return [decode_puback(p) for p in split_packets(data).packets if p.kind == PUBACK]


def acked_publishes(upstream: bytes, downstream: bytes) -> list[Publish]:
    """The QoS 1 messages the client sent (``upstream``) that the broker acknowledged with success
    (``downstream``) on one connection, in acknowledgement order.

    The n-th PUBACK with packet id P acknowledges the n-th QoS 1 PUBLISH with id P (see the module
    docstring): always the latest PUBLISH with that id, never an earlier use of it. A PUBACK with no
    PUBLISH outstanding for its id means the bytes are not what we think: `MalformedPacketError`.
    """
    up = split_packets(upstream).packets
    if up and up[0].kind == CONNECT and protocol_level(up[0]) != MQTT_V5:
        raise MalformedPacketError(f"not an MQTT v5 connection (protocol level {protocol_level(up[0])})")
    outstanding: dict[int, deque[Publish]] = {}
    for packet in up:
        if packet.kind == PUBLISH:
            message = decode_publish(packet)
            if message.qos == 1 and message.packet_id is not None:
                outstanding.setdefault(message.packet_id, deque()).append(message)
    acked: list[Publish] = []
    for ack in pubacks(downstream):
        queue = outstanding.get(ack.packet_id)
        if not queue:
            raise MalformedPacketError(f"PUBACK for packet id {ack.packet_id} with no PUBLISH outstanding")
        message = queue.popleft()
        if ack.success:
            acked.append(message)
    return acked


def acked_ids(upstream: bytes, downstream: bytes, topic_filter: str | None = None) -> set[str]:
    """The ``"id"`` of every acknowledged message (JSON object payloads) whose topic matches the filter."""
    ids: set[str] = set()
    for message in acked_publishes(upstream, downstream):
        if topic_filter is not None and not mqtt.topic_matches_sub(topic_filter, message.topic):
            continue
        doc = json.loads(message.payload)
        if not isinstance(doc, dict) or "id" not in doc:
            raise MalformedPacketError(
                f"acknowledged payload on {message.topic} has no id: {message.payload[:80]!r}"
            )
        ids.add(str(doc["id"]))
    return ids
