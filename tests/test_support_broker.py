"""Proves the test-support pieces: a real Mosquitto per test, the reconnecting Collector, TLS/mTLS
material and the byte-recording TcpTap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Collector, Mosquitto, free_port, publish, publish_many
from tests.support.proxy import TcpTap
from tests.support.tls import TlsMaterial, make_tls_material


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def tls_material(tmp_path: Path) -> TlsMaterial:
    return make_tls_material(tmp_path / "pki")


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while (leaked := [t for t in threading.enumerate() if t not in before and t.is_alive()]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.01)
    assert not leaked, f"threads left running: {leaked}"


def test_free_port_is_bindable_and_outside_ephemeral_range() -> None:
    port = free_port()
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert 1024 < port < low


def test_plain_publish_and_collect(broker: Mosquitto) -> None:
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    with Collector(broker.url, "kiosk/#") as col:
        publish(broker.url, "kiosk/store-1/events", b"\x00hello\xff")
        publish(broker.url, "other/topic", b"not for us")
        publish(broker.url, "kiosk/store-1/state", b"online", retain=True)
        assert col.wait_count(2)
        assert col.payloads() == [b"\x00hello\xff", b"online"]
        assert col.payloads("kiosk/+/state") == [b"online"]
        assert [m.retain for m in col.messages()] == [False, False]  # live delivery: retain flag clear
    with Collector(broker.url, "kiosk/#") as late:  # a new subscriber gets the retained message
        assert late.wait_count(1)
        assert late.messages()[0] == ("kiosk/store-1/state", b"online", True)


def test_kill_and_restart_on_same_port_collector_reconnects(broker: Mosquitto) -> None:
    port, pid = broker.port, broker.pid
    with Collector(broker.url, "t/#") as col:
        publish(broker.url, "t/1", b"before")
        assert col.wait_count(1)
        ready = col.ready_count
        broker.kill()
        assert not broker.running
        broker.restart()
        assert broker.port == port and broker.pid != pid and broker.starts == 2
        assert col.wait_ready(min_count=ready + 1), col.last_reason
        publish(broker.url, "t/2", b"after")
        assert col.wait_count(2)
        assert col.payloads() == [b"before", b"after"]
        assert col.disconnect_count >= 1
    # kill/stop are idempotent
    broker.kill()
    broker.stop()


def test_persistent_session_gets_messages_queued_while_away(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker", persistence=True) as broker:
        with Collector(broker.url, "q/#", client_id="relay-check", persistent=True) as first:
            assert first.session_present is False
        publish_many(broker.url, [(f"q/{i}", f"m{i}".encode(), False) for i in range(50)])
        # graceful restart: the session and its queue are saved on SIGTERM and loaded again
        broker.restart()
        with Collector(broker.url, "q/#", client_id="relay-check", persistent=True) as again:
            assert again.session_present is True
            assert again.wait_count(50)
            assert set(again.payloads()) == {f"m{i}".encode() for i in range(50)}


def test_start_failure_raises_with_log_tail(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "bad", extra_config="this_is_not_an_option 1")
    with pytest.raises(RuntimeError, match="this_is_not_an_option"):
        broker.start()
    assert not broker.running
    broker.stop()


def test_port_taken_by_running_broker_is_reported(broker: Mosquitto, tmp_path: Path) -> None:
    second = Mosquitto(tmp_path / "second", port=broker.port)
    try:
        with pytest.raises(RuntimeError, match=r"(?i)address already in use"):
            second.start()
        assert not second.running
    finally:
        second.stop()


def test_mtls_cert_accepted_no_cert_refused(tmp_path: Path, tls_material: TlsMaterial) -> None:
    for path in (tls_material.server_key, tls_material.client_key, tls_material.ca_cert):
        assert path.stat().st_mode & 0o777 == 0o644
    with Mosquitto(tmp_path / "broker", tls=tls_material, require_certificate=True) as broker:
        assert broker.url.startswith("mqtts://127.0.0.1:")
        with Collector(broker.url, "secure/#", tls=tls_material) as col:
            publish(broker.url, "secure/a", b"over mtls", tls=tls_material)
            assert col.wait_count(1)
            assert col.payloads() == [b"over mtls"]
        with Collector(broker.url, tls=tls_material, client_cert=False, wait=False) as anon:
            assert anon.wait_failures(min_count=2)
            assert anon.connect_count == 0 and not anon.ready
        with pytest.raises(TimeoutError):
            publish(broker.url, "secure/b", b"x", tls=tls_material, client_cert=False, timeout=0.5)
        # the identity of the accepted client is its certificate's CN
        assert tls_material.client_cn in broker.log_text()


def test_tls_without_client_cert_requirement(tmp_path: Path, tls_material: TlsMaterial) -> None:
    with (
        Mosquitto(tmp_path / "broker", tls=tls_material) as broker,
        Collector(broker.url, tls=tls_material, client_cert=False) as col,
    ):
        publish(broker.url, "x", b"server-auth only", tls=tls_material, client_cert=False)
        assert col.wait_count(1)


def test_issue_extra_client_cert(tmp_path: Path, tls_material: TlsMaterial) -> None:
    cert, key = tls_material.issue_client("store-2.node-7")
    with (
        Mosquitto(tmp_path / "broker", tls=tls_material, require_certificate=True) as broker,
        Collector(broker.url, tls=tls_material, certfile=cert, keyfile=key),
    ):
        pass
    assert "store-2.node-7" in broker.log_text()


def test_tcptap_records_payload_bytes(broker: Mosquitto) -> None:
    secret = b"card-uid-04A1B2C3D4"
    with TcpTap(broker.port) as tap, Collector(broker.url, "tap/#") as col:
        publish(tap.url, "tap/event", secret)
        assert col.wait_count(1)
        assert secret in tap.captured()
        assert secret in tap.captured_upstream()
        assert secret not in tap.captured_downstream()
        assert tap.connections == 1


def test_tcptap_sever_and_downstream_capture(broker: Mosquitto) -> None:
    with TcpTap(broker.port) as tap, Collector(tap.url, "sev/#") as col:
        ready = col.ready_count
        tap.sever()
        assert col.wait_ready(min_count=ready + 1)
        assert tap.connections == 2
        publish(broker.url, "sev/x", b"downstream-bytes")
        assert col.wait_count(1)
        assert b"downstream-bytes" in tap.captured_downstream()


def test_tcptap_target_down_closes_client(tmp_path: Path) -> None:
    with TcpTap(free_port()) as tap:
        col = Collector(tap.url, wait=False)
        try:
            assert col.wait_failures(min_count=2)
        finally:
            col.stop()
