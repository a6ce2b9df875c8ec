"""Connecting to the broker: TLS, mTLS, wrong CA, unreachable hosts — clear errors, never a traceback."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from nacl.signing import SigningKey

from cloud_sync.envelope import SignedMessage, Signer, verify
from cloud_sync.outbox import Outbox
from cloud_sync.relay import Relay, RelayOptions
from tests.support.broker import Collector, Mosquitto
from tests.support.node import NodeProcess, tap_many
from tests.support.tls import make_tls_material

EVENTS = "retail/v1/store-7/till-1/event/#"


def _wait_log(node: NodeProcess, text: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in node.log_text():
            return True
        time.sleep(0.05)
    return False


def test_mtls_node_publishes_with_its_client_certificate(tmp_path: Path) -> None:
    tls = make_tls_material(tmp_path / "pki", client_cn="store-7.till-1")
    with (
        Mosquitto(tmp_path / "broker", tls=tls, require_certificate=True) as broker,
        Collector(broker.url, EVENTS, tls=tls) as collector,
    ):
        node = NodeProcess(
            tmp_path / "node",
            broker.url,
            MQTT__CA_FILE=str(tls.ca_cert),
            MQTT__CERT_FILE=str(tls.client_cert),
            MQTT__KEY_FILE=str(tls.client_key),
        )
        with node:
            reply = node.tap("04A1B2C3D4E5F6")
            assert collector.wait_count(1, timeout=10)
            assert json.loads(collector.payloads()[0])["id"] == reply["id"]
            assert node.status()["broker"]["url"].startswith("mqtts://")
        assert "Traceback" not in node.log_text()


def test_tls_errors_are_one_clear_line_and_events_stay_queued(tmp_path: Path) -> None:
    tls = make_tls_material(tmp_path / "pki")
    other = make_tls_material(tmp_path / "other-pki")
    with Mosquitto(tmp_path / "broker", tls=tls, require_certificate=True) as broker:
        # a CA that did not sign the broker's certificate
        node = NodeProcess(tmp_path / "wrong-ca", broker.url, MQTT__CA_FILE=str(other.ca_cert))
        with node:
            node.tap("04A1B2C3D4E5F6")
            assert _wait_log(node, "TLS: broker certificate rejected")
            status = node.status()
            assert not status["broker"]["connected"] and "certificate" in status["broker"]["last_error"]
            assert status["outbox"]["depth"] == 1
        # the right CA but no client certificate: the broker (mTLS) refuses the handshake
        node = NodeProcess(tmp_path / "no-cert", broker.url, MQTT__CA_FILE=str(tls.ca_cert))
        with node:
            node.tap("04A1B2C3D4E5F6")
            deadline = time.monotonic() + 10
            while not node.status()["broker"]["last_error"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not node.status()["broker"]["connected"]
            assert node.status()["broker"]["last_error"]
        for path in (tmp_path / "wrong-ca" / "node.log", tmp_path / "no-cert" / "node.log"):
            assert "Traceback" not in path.read_text()


def test_unreachable_broker_hostname_is_reported_and_the_node_keeps_accepting(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", "mqtt://broker.invalid:1883")
    with node:
        accepted, errors = tap_many(node, 20)
        assert not errors and len(accepted) == 20
        assert _wait_log(node, "cannot resolve broker host 'broker.invalid'")
        status = node.status()
        assert status["state"] == "degraded" and not status["broker"]["connected"]
        assert "cannot resolve" in status["broker"]["last_error"]
        assert status["outbox"]["depth"] == 20
        out = node.cli("status")
        assert out.returncode == 0 and "DISCONNECTED (cannot resolve" in out.stdout
        started = time.monotonic()
        assert node.stop() == 0
        assert time.monotonic() - started < 5
    log = node.log_text()
    assert "Traceback" not in log
    assert log.count("cannot resolve broker host") <= 2, "a repeated connection error must not flood the log"


def test_sigterm_with_a_backlog_in_flight_exits_0_within_5_s_and_loses_nothing(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker, Collector(broker.url, EVENTS) as collector:
        node = NodeProcess(tmp_path / "node", broker.url)
        node.start()
        result: dict[str, object] = {}
        producer = threading.Thread(
            target=lambda: result.update(zip(("ok", "err"), tap_many(node, 3000), strict=True))
        )
        producer.start()
        time.sleep(0.5)
        started = time.monotonic()
        assert node.stop() == 0
        assert time.monotonic() - started < 5
        producer.join()
        accepted = result["ok"]
        assert isinstance(accepted, list) and accepted
        node.start()  # whatever was accepted but not yet published goes out after the restart
        wanted = {str(a["id"]) for a in accepted}
        got = lambda: {json.loads(p)["id"] for p in collector.payloads()}  # noqa: E731
        assert collector.wait_for(lambda _m: wanted <= got(), timeout=30)
        assert node.stop() == 0


def test_paho_message_ids_wrap_past_65535_without_loss(tmp_path: Path) -> None:
    """paho 2.2 loses messages when more than 65,535 are outstanding; our bounded window never lets it."""
    key = SigningKey.generate()
    total = 70_000
    with (
        Mosquitto(tmp_path / "broker") as broker,
        Collector(
            broker.url, "retail/v1/#", persistent=True, client_id="wrap-collector", keepalive=120
        ) as collector,
    ):
        outbox = Outbox(tmp_path / "outbox.sqlite3", Signer(key, "store-7", "till-1"), "retail/v1")
        body = {"source": "nfc", "token": "ab" * 32, "device": "bench"}
        futures = [outbox.submit("identity", body) for _ in range(total)]
        ids = {f.result().id for f in futures}
        delivered: list[int] = []

        def presence(state: str, reason: str) -> SignedMessage:
            return outbox.seal_presence({"state": state, "reason": reason, "version": "test", "alarms": []})

        relay = Relay(
            RelayOptions(
                host="127.0.0.1",
                port=broker.port,
                client_id="t",
                status_topic="retail/v1/store-7/till-1/status",
            ),
            outbox,
            presence,
            on_delivered=delivered.append,
        )
        relay.start()
        try:
            deadline = time.monotonic() + 120
            while len(delivered) < total and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(delivered) == total and delivered == sorted(delivered)
            assert relay.status().reconnects == 0
            # a cheap predicate: it is evaluated on every arrival
            assert collector.wait_count(total, "retail/v1/store-7/till-1/event/#", timeout=60)
        finally:
            relay.stop()
            outbox.close()
        got = {json.loads(p)["id"] for p in collector.payloads("retail/v1/store-7/till-1/event/#")}
        assert got == ids
        verify(collector.payloads("retail/v1/store-7/till-1/event/#")[0], key.verify_key)
