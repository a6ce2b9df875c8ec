"""The whole node with its real NFC back end: pcscd + vpcd + virtual cards → signed identity events.

Also the issue's privacy check: after a run of taps, the raw UIDs (hex, either case, with or without
separators, and as raw bytes) and the printed member code appear nowhere — not in the SQLite files, not in
the node's log, not in any byte that crossed the broker connection.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import ndef
import pytest

from cloud_sync.envelope import decode_public_key, verify
from edge.identity import Pseudonymizer
from edge.keys import PSEUDONYM_KEY_FILE, load_pseudonym_key
from tests.support.broker import Collector, Mosquitto
from tests.support.node import NodeProcess
from tests.support.pcsc import ATR_CLASSIC_1K, READER_NAME, Pcscd, VirtualCard, ntag_handler, ntag_memory
from tests.support.proxy import TcpTap

MEMBER = "M0007731451"
UIDS = [
    bytes.fromhex("04A2B3C4D5E680"),
    bytes.fromhex("DEADBEEF"),
    bytes.fromhex("0411223344556677889900"[:20]),
    bytes.fromhex("08ABCDEF"),
]


def _forms(uid: bytes) -> list[bytes]:
    hexa = uid.hex()
    return [
        hexa.encode(),
        hexa.upper().encode(),
        uid,
        ":".join(f"{b:02x}" for b in uid).encode(),
        ":".join(f"{b:02X}" for b in uid).encode(),
        " ".join(f"{b:02X}" for b in uid).encode(),
    ]


@pytest.fixture(scope="module")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcscd]:
    daemon = Pcscd(tmp_path_factory.mktemp("pcscd"))
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as mosquitto:
        yield mosquitto


def _wait(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - began


def _tap(card: VirtualCard, hold: float = 0.8) -> None:
    card.insert()
    time.sleep(hold)
    card.remove()
    time.sleep(0.6)  # pcscd notices the removal within ~400 ms


def test_real_taps_become_signed_identity_events_and_no_uid_leaks(
    tmp_path: Path, pcscd: Pcscd, broker: Mosquitto
) -> None:
    with Collector(broker.url) as collector, TcpTap(broker.port) as wire:
        node = NodeProcess(
            tmp_path / "node",
            f"mqtt://127.0.0.1:{wire.port}",
            simulate=False,
            NFC__READERS=READER_NAME,
            GPIO__ENABLED="false",
            SCANNER__ENABLED="false",
        )
        with node:
            _wait(lambda: node.status()["devices"]["nfc-reader"] == "present", 5.0, "the reader")
            assert node.status()["alarms"] == []
            message = b"".join(ndef.message_encoder([ndef.UriRecord(f"https://loyalty.example/m/{MEMBER}")]))
            _tap(VirtualCard(pcscd.port, UIDS[0], handler=ntag_handler(UIDS[0], ntag_memory(message))))
            _tap(VirtualCard(pcscd.port, UIDS[1], atr=ATR_CLASSIC_1K))
            _tap(VirtualCard(pcscd.port, UIDS[2]))
            _tap(VirtualCard(pcscd.port, UIDS[3]))
            _tap(VirtualCard(pcscd.port, UIDS[1], atr=ATR_CLASSIC_1K))  # the same card again, later
            assert collector.wait_for(lambda msgs: sum("/event/identity" in m.topic for m in msgs) >= 5, 10)
            key = decode_public_key(node.cli("keys", "show").stdout.strip())
            pseudonymizer = Pseudonymizer(load_pseudonym_key(node.data_dir / PSEUDONYM_KEY_FILE))
            doctor = node.cli("doctor", "--json")
        docs = [verify(m.payload, key) for m in collector.messages("retail/v1/store-7/till-1/event/identity")]
        bodies = [d["body"] for d in docs]
        assert [b["token"] for b in bodies] == [
            pseudonymizer.card_token(uid) for uid in (UIDS[0], UIDS[1], UIDS[2], UIDS[3], UIDS[1])
        ]
        assert {b["source"] for b in bodies} == {"nfc"} and {b["device"] for b in bodies} == {READER_NAME}
        assert [b["card_type"] for b in bodies[:2]] == ["ntag-ultralight", "mifare-classic-1k"]
        # the printed member code is pseudonymised exactly as a scan of the same code would be
        assert bodies[0]["code_token"] == pseudonymizer.barcode_token(MEMBER)
        assert all("code_token" not in b for b in bodies[1:])
        report = json.loads(doctor.stdout)
        nfc = next(c for c in report["checks"] if c["name"] == "nfc reader")
        assert nfc["verdict"] == "ok" and READER_NAME in nfc["detail"]
        captured = wire.captured()
    assert captured
    stores = {"wire": captured, "log": node.log_path.read_bytes()}
    for path in node.data_dir.iterdir():
        if path.is_file():
            stores[path.name] = path.read_bytes()
    assert "outbox.sqlite3" in stores
    secrets = [form for uid in UIDS for form in _forms(uid)] + [MEMBER.encode(), MEMBER.lower().encode()]
    for where, blob in stores.items():
        for secret in secrets:
            assert secret not in blob, f"{secret!r} leaked into {where}"


def test_the_node_reports_the_reader_gone_and_resumes_when_pcscd_returns(
    tmp_path: Path, pcscd: Pcscd, broker: Mosquitto
) -> None:
    with Collector(broker.url) as collector:
        node = NodeProcess(
            tmp_path / "node",
            broker.url,
            simulate=False,
            NFC__READERS=READER_NAME,
            GPIO__ENABLED="false",
            SCANNER__ENABLED="false",
        )
        with node:
            _wait(lambda: node.status()["devices"]["nfc-reader"] == "present", 5.0, "the reader")
            pcscd.stop(kill=True)
            _wait(lambda: "nfc-reader_absent" in node.status()["alarms"], 5.0, "the reader alarm")
            status = node.status()
            assert status["state"] == "degraded" and status["devices"]["nfc-reader"] == "absent"
            # the retained presence tells the central side too, without waiting for a heartbeat
            assert collector.wait_for(
                lambda msgs: any(
                    m.topic.endswith("/status") and b"nfc-reader_absent" in m.payload for m in msgs
                ),
                5,
            )
            doctor = node.cli("doctor")
            assert doctor.returncode == 1 and "PC/SC service not available" in doctor.stdout
            pcscd.start()
            took = _wait(lambda: node.status()["devices"]["nfc-reader"] == "present", 5.0, "the reader back")
            assert took < 5.0
            assert node.status()["alarms"] == []
            _tap(VirtualCard(pcscd.port, UIDS[0]))
            assert collector.wait_for(lambda msgs: any("/event/identity" in m.topic for m in msgs), 5)
        assert "Traceback" not in node.log_text()
