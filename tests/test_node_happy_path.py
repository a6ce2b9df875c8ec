"""A running node end to end against a real Mosquitto: sim tap → signed, schema-valid envelope."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cloud_sync.envelope import decode_public_key, verify
from tests.support.broker import Collector, Mosquitto
from tests.support.node import NodeProcess
from tests.support.proxy import TcpTap

UID = "04A1B2C3D4E5F6"
CODE = "M0007731451"  # a valid member code (cloud_sync.codes.make_member_code(773145))


def _variants(uid_hex: str) -> list[bytes]:
    raw = bytes.fromhex(uid_hex)
    return [
        uid_hex.upper().encode(),
        uid_hex.lower().encode(),
        raw,
        ":".join(f"{b:02x}" for b in raw).encode(),
        ":".join(f"{b:02X}" for b in raw).encode(),
    ]


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Mosquitto(tmp_path / "broker") as mosquitto:
        yield mosquitto


def test_tap_reaches_subscriber_signed_valid_and_the_uid_never_leaks(
    tmp_path: Path, broker: Mosquitto
) -> None:
    from tests.support.asyncapi import validate_payload

    with Collector(broker.url) as collector, TcpTap(broker.port) as tap_proxy:
        node = NodeProcess(tmp_path / "node", f"mqtt://127.0.0.1:{tap_proxy.port}")
        with node:
            pubkey = node.cli("keys", "show").stdout.strip()
            key = decode_public_key(pubkey)
            done = node.cli("sim", "tap", UID)
            assert done.returncode == 0, done.stderr
            assert "accepted: retail.v1.identity" in done.stdout
            assert node.cli("sim", "scan", CODE).returncode == 0
            assert node.cli("sim", "button").returncode == 0
            assert collector.wait_for(
                lambda msgs: sum("/event/" in m.topic for m in msgs) >= 3, timeout=10
            ), collector.messages()
            events = collector.messages("retail/v1/store-7/till-1/event/#")
            docs = [verify(m.payload, key) for m in events]
            assert [d["schema"] for d in docs] == [
                "retail.v1.identity",
                "retail.v1.identity",
                "retail.v1.assist",
            ]
            assert [d["seq"] for d in docs] == [1, 2, 3]
            assert [d["body"]["source"] for d in docs] == ["nfc", "barcode", "button"]
            for message in events:
                validate_payload(message.topic, message.payload)
            # a subscriber that arrives later still learns the node is online: the presence is retained
            with Collector(broker.url, "retail/v1/store-7/till-1/status") as late:
                assert late.wait_count(1, timeout=5)
                retained = late.messages()[0]
            assert retained.retain
            online = verify(retained.payload, key)
            assert online["schema"] == "retail.v1.presence" and online["body"]["state"] == "online"
            validate_payload(retained.topic, retained.payload)
            stopped_at = time.monotonic()
            assert node.stop() == 0
            assert time.monotonic() - stopped_at < 5
        assert collector.wait_for(
            lambda msgs: any(b'"shutdown"' in m.payload for m in msgs if m.topic.endswith("/status")),
            timeout=5,
        )
        with Collector(broker.url, "retail/v1/store-7/till-1/status") as late:
            assert late.wait_count(1, timeout=5)
            offline = json.loads(late.messages()[0].payload)["body"]
        assert (offline["state"], offline["reason"]) == ("offline", "shutdown")
        wire = tap_proxy.captured()
    assert wire, "the proxy saw no traffic"
    # the UID and the scanned code appear nowhere: not on the wire, not in what subscribers got,
    # not in the SQLite files, not in the logs
    secrets = [*_variants(UID), CODE.encode(), CODE.lower().encode()]
    stores = {
        "wire": wire,
        "subscriber": b"".join(m.payload + m.topic.encode() for m in collector.messages()),
        "log": node.log_path.read_bytes(),
    }
    for path in node.data_dir.iterdir():
        if path.name.startswith("outbox.sqlite3"):
            stores[path.name] = path.read_bytes()
    assert "outbox.sqlite3" in stores
    for where, blob in stores.items():
        for secret in secrets:
            assert secret not in blob, f"{secret!r} leaked into {where}"
