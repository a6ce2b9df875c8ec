"""The POS API of a real node process: paired with the CLI's code, a member from a real virtual-card tap
(pcscd + vpcd), a sale accepted while the broker is down and delivered once it is back."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.envelope import decode_public_key, verify
from edge.identity import Pseudonymizer
from edge.keys import PSEUDONYM_KEY_FILE, load_pseudonym_key
from tests.support.broker import Collector, Mosquitto, free_port
from tests.support.node import NodeProcess
from tests.support.pcsc import READER_NAME, Pcscd, VirtualCard

UID = bytes.fromhex("04A1B2C3D4E5F6")
SALE = {
    "lines": [
        {
            "gtin": "4006381333931",
            "name": "Fineliner",
            "quantity": 3,
            "unit_price": 250,
            "category": "stationery",
        },
        {"sku": "CIG-20", "name": "Cigarettes", "quantity": 1, "unit_price": 800, "category": "tobacco"},
    ],
    "total": 1550,
    "currency": "EUR",
    "payment": "cash",
}


@pytest.fixture(scope="module")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcscd]:
    daemon = Pcscd(tmp_path_factory.mktemp("pcscd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _call(
    port: int, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **headers})
        reply = conn.getresponse()
        raw = reply.read()
        parsed = json.loads(raw) if raw else None
        return reply.status, parsed, dict(reply.getheaders())
    finally:
        conn.close()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_paired_till_sells_to_a_tapped_member_while_the_broker_is_down(tmp_path: Path, pcscd: Pcscd) -> None:
    broker = Mosquitto(tmp_path / "broker", persistence=True).start()
    collector = Collector(broker.url, "retail/v1/+/+/event/sale", persistent=True, client_id="central-test")
    try:
        before = collector.ready_count
        broker.restart()  # the subscriber's session is now on disk: it gets what is published while away
        assert collector.wait_ready(timeout=10, min_count=before + 1)
        broker.stop()
        node = NodeProcess(
            tmp_path / "node",
            broker.url,
            simulate=False,
            NFC__READERS=READER_NAME,
            GPIO__ENABLED="false",
            SCANNER__ENABLED="false",
        )
        with node:
            port = node.pos_port
            status, body, _ = _call(port, "GET", "/pos/v1/till")
            assert status == 401
            pair = node.cli("pair")
            assert pair.returncode == 0, pair.stderr
            code = pair.stdout.splitlines()[0].split(":", 1)[1].replace(" ", "")
            status, body, _ = _call(
                port, "POST", "/pos/v1/pair", {"code": code, "pos_id": "till-A", "name": "A"}
            )
            assert status == 201, body
            auth = {"Authorization": f"Bearer {body['token']}"}

            _wait(lambda: node.status()["devices"]["nfc-reader"] == "present", 5.0, "the reader")
            card = VirtualCard(pcscd.port, UID)
            card.insert()
            try:
                _wait(
                    lambda: _call(port, "GET", "/pos/v1/till", **auth)[1]["customer"] is not None,
                    10,
                    "the tap",
                )
            finally:
                card.remove()
            status, till, _ = _call(port, "GET", "/pos/v1/till", **auth)
            assert till["customer"]["source"] == "nfc" and UID.hex() not in json.dumps(till).lower()

            status, sale, _ = _call(
                port, "POST", "/pos/v1/sales", SALE, **auth, **{"Idempotency-Key": "RC-1001"}
            )
            assert status == 201, sale
            assert sale["customer"]["points_earned"] == 7  # 7.50 EUR eligible: tobacco earns nothing
            status, again, headers = _call(
                port, "POST", "/pos/v1/sales", SALE, **auth, **{"Idempotency-Key": "RC-1001"}
            )
            assert status == 200 and again == sale and headers["Idempotent-Replayed"] == "true"
            assert node.status()["broker"]["connected"] is False
            assert node.status()["outbox"]["by_type"].get("sale") == 1

            # the node restarts before the broker is back: the sale, and its receipt, survive
            assert node.stop() == 0
            node.start()
            status, again, _ = _call(
                port, "POST", "/pos/v1/sales", SALE, **auth, **{"Idempotency-Key": "RC-1001"}
            )
            assert status == 200 and again["event_id"] == sale["event_id"]

            broker.start()
            assert collector.wait_count(1, timeout=20)
            key = decode_public_key(node.cli("keys", "show").stdout.strip())
            pseudonymizer = Pseudonymizer(load_pseudonym_key(node.data_dir / PSEUDONYM_KEY_FILE))
            assert node.cli("pos", "revoke", "till-A").returncode == 0
            assert _call(port, "GET", "/pos/v1/till", **auth)[0] == 401
        [doc] = [verify(m.payload, key) for m in collector.messages()]
        assert doc["id"] == sale["event_id"] and doc["body"]["receipt"] == "RC-1001"
        assert doc["body"]["customer"] == {"source": "nfc", "token": pseudonymizer.card_token(UID)}
        assert doc["body"]["points"] == 7 and doc["body"]["pos"] == "till-A"
        wire = b"".join(m.payload for m in collector.messages())
        assert UID.hex().encode() not in wire.lower()
    finally:
        collector.stop()
        broker.stop()


def test_pos_sim_pairs_by_itself_and_plays_valid_sales(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        with (
            Collector(broker.url, "retail/v1/+/+/event/sale") as collector,
            NodeProcess(tmp_path / "node", broker.url) as node,
        ):
            url = f"http://127.0.0.1:{node.pos_port}"
            out = node.cli(
                "pos-sim", "--node", url, "--count", "40", "--rate", "0", "--seed", "7", timeout=120
            )
            assert out.returncode == 0, out.stderr
            assert "sent 40, recorded 40" in out.stdout and "refused none" in out.stdout
            assert collector.wait_count(40, timeout=20)
            key = decode_public_key(node.cli("keys", "show").stdout.strip())
            bodies = [verify(m.payload, key)["body"] for m in collector.messages()]
            assert len({b["receipt"] for b in bodies}) == 40  # the simulated retries created nothing
            assert any(any(line["quantity"] < 0 for line in b["lines"]) for b in bodies)  # returns
            assert any("customer" in b for b in bodies) and any("customer" not in b for b in bodies)
            wrong = node.cli("pos-sim", "--node", url, "--code", "000000", "--count", "1")
            assert wrong.returncode == 1 and "pairing refused (403)" in wrong.stderr
            assert "Traceback" not in wrong.stderr
        gone = node.cli("pos-sim", "--node", url, "--count", "1", "--code", "123456")
        assert gone.returncode == 1 and "does not answer" in gone.stderr and "Traceback" not in gone.stderr
    finally:
        broker.stop()


def test_a_sale_that_asks_for_the_survey_opens_it_on_the_kiosk(tmp_path: Path) -> None:
    with NodeProcess(tmp_path / "node", f"mqtt://127.0.0.1:{free_port()}") as node:
        code = node.cli("pair").stdout.splitlines()[0].split(":", 1)[1].replace(" ", "")
        status, body, _ = _call(
            node.pos_port, "POST", "/pos/v1/pair", {"code": code, "pos_id": "t", "name": "T"}
        )
        assert status == 201
        auth = {"Authorization": f"Bearer {body['token']}"}
        screen = http.client.HTTPConnection("127.0.0.1", node.kiosk_port, timeout=10)
        try:
            screen.request("GET", "/events")
            stream = screen.getresponse()
            assert stream.status == 200 and stream.getheader("Content-Type", "").startswith(
                "text/event-stream"
            )
            assert stream.readline().startswith(b"retry:")
            plain, _, _ = _call(
                node.pos_port, "POST", "/pos/v1/sales", SALE, **auth, **{"Idempotency-Key": "RC-2001"}
            )
            asked, _, _ = _call(
                node.pos_port,
                "POST",
                "/pos/v1/sales",
                {**SALE, "survey": True},
                **auth,
                **{"Idempotency-Key": "RC-2002"},
            )
            assert plain == asked == 201
            lines = []
            while b"RC-2002" not in b"".join(lines):
                lines.append(stream.readline())
            text = b"".join(lines).decode()
            assert "event: survey" in text and '"receipt":"RC-2002"' in text and "RC-2001" not in text
        finally:
            screen.close()


def test_the_cashier_stream_of_a_real_node(tmp_path: Path) -> None:
    uid = "04A1B2C3D4E5F6"
    with NodeProcess(tmp_path / "node", f"mqtt://127.0.0.1:{free_port()}") as node:
        code = node.cli("pair").stdout.splitlines()[0].split(":", 1)[1].replace(" ", "")
        status, body, _ = _call(
            node.pos_port, "POST", "/pos/v1/pair", {"code": code, "pos_id": "t", "name": "T"}
        )
        assert status == 201
        screen = http.client.HTTPConnection("127.0.0.1", node.pos_port, timeout=10)
        try:
            screen.request("GET", "/pos/v1/events", headers={"Authorization": f"Bearer {body['token']}"})
            stream = screen.getresponse()
            assert stream.status == 200
            seen = b""
            assert node.cli("sim", "tap", uid).returncode == 0
            assert node.cli("sim", "button").returncode == 0
            assert node.cli("sim", "scan", "4006381333931").returncode == 0
            while b"4006381333931" not in seen:
                seen += stream.readline()
            text = seen.decode()
            assert "event: customer" in text and '"present":true' in text
            assert "event: assist" in text and "4006381333931" in text
            assert uid.lower() not in text.lower()
        finally:
            screen.close()
