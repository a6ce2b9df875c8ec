"""Telling the nodes about an erasure: ``EraseCommand`` on ``{root}/{store}/{node}/cmd/erase`` at QoS 1.

A node caches members it has seen (first name, points) in memory; after an erasure it must forget every
token of that member at once. The command goes to every registered node, each on its own topic (the
broker's ACLs let a node read only its own ``cmd/``), and counts as told only when the broker acknowledged
it with a success code: an MQTT v5 PUBACK "no matching subscribers" (0x10) means no session of that node was
there to receive it, so that node is reported as not told, like one whose PUBACK never came or whose
broker could not be reached. ``kiosk-central privacy erase`` exits 1 then, and re-running it sends again.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from cloud_sync.central.config import MqttSection
from cloud_sync.messages import EraseCommand

log = logging.getLogger(__name__)

MAX_TOKENS = 64  # EraseCommand.tokens holds at most 64
DELIVERED = "delivered"
_NO_SUBSCRIBERS = 0x10


def erase_commands(member_token: str, tokens: Sequence[str]) -> list[EraseCommand]:
    """The commands that make a node forget ``tokens`` (the member's token first; split by 64)."""
    ordered = [member_token, *(t for t in dict.fromkeys(tokens) if t != member_token)]
    return [
        EraseCommand(member_token=member_token, tokens=ordered[i : i + MAX_TOKENS])
        for i in range(0, len(ordered), MAX_TOKENS)
    ]


def erase_topic(topic_root: str, store: str, node: str) -> str:
    """Where ``node`` of ``store`` receives erase commands."""
    return f"{topic_root}/{store}/{node}/cmd/erase"


class _Acks:
    """CONNACK and PUBACK reason codes as paho's network thread reports them."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.connack: Any = None
        self.pubacks: dict[int, int] = {}

    def on_connect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        with self.cond:
            self.connack = reason
            self.cond.notify_all()

    def on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _props: Any) -> None:
        with self.cond:
            self.pubacks[mid] = int(getattr(reason, "value", 0))
            self.cond.notify_all()


def _client(cfg: MqttSection, acks: _Acks) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{cfg.client_id[:40]}-erase-{secrets.token_hex(4)}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    broker = cfg.broker
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set_context(cfg.ssl_context())
    client.on_connect = acks.on_connect
    client.on_publish = acks.on_publish
    client.max_inflight_messages_set(100)
    return client


def _verdict(codes: Sequence[int | None]) -> str:
    if any(code is None for code in codes):
        return "no-puback"
    refused = [code for code in codes if code is not None and code >= 0x80]
    if refused:
        return f"refused-0x{max(refused):02x}"
    if _NO_SUBSCRIBERS in codes:
        return "no-subscriber"
    return DELIVERED


def send_erase(
    cfg: MqttSection,
    targets: Sequence[tuple[str, str]],
    commands: Sequence[EraseCommand],
    *,
    timeout: float = 10.0,
) -> dict[tuple[str, str], str]:
    """Publish ``commands`` to every ``(store, node)`` in ``targets``; returns each node's outcome:
    ``delivered`` or a short reason (``broker-unreachable``, ``refused-0x..``, ``no-subscriber``,
    ``no-puback``). Never raises for broker trouble: the caller reports the nodes that were not told."""
    outcome = dict.fromkeys(targets, "broker-unreachable")
    if not targets or not commands:
        return outcome
    deadline = time.monotonic() + timeout
    acks = _Acks()
    broker = cfg.broker
    try:
        client = _client(cfg, acks)
        client.connect(broker.host, broker.port, keepalive=max(5, int(timeout) + 5))
    except (OSError, ValueError) as exc:
        log.error("erase: broker %s unreachable (%s)", broker.display(), exc.__class__.__name__)
        return outcome
    client.loop_start()
    try:
        with acks.cond:
            acks.cond.wait_for(lambda: acks.connack is not None, max(0.0, deadline - time.monotonic()))
            connack = acks.connack
        if connack is None or connack.is_failure:
            log.error("erase: broker %s did not accept the connection (%s)", broker.display(), connack)
            return outcome
        mids: dict[tuple[str, str], list[int]] = {}
        for store, node in targets:
            topic = erase_topic(cfg.topic_root, store, node)
            infos = [client.publish(topic, msgspec.json.encode(cmd), qos=1) for cmd in commands]
            if any(info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS for info in infos):
                outcome[(store, node)] = "not-sent"
            else:
                mids[(store, node)] = [info.mid for info in infos]
        wanted = {mid for node_mids in mids.values() for mid in node_mids}
        with acks.cond:
            acks.cond.wait_for(lambda: wanted <= acks.pubacks.keys(), max(0.0, deadline - time.monotonic()))
            got = dict(acks.pubacks)
        for target, node_mids in mids.items():
            outcome[target] = _verdict([got.get(mid) for mid in node_mids])
        return outcome
    finally:
        client.disconnect()
        client.loop_stop()
