"""The admin/control endpoint and the CLI around it: auth, bad input, no node running, status, metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import free_port
from tests.support.node import KIOSK_EDGE, NodeProcess, base_env

KIOSK_CENTRAL = str(Path(sys.executable).with_name("kiosk-central"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    # no broker at all: the node must run and queue anyway
    with NodeProcess(tmp_path_factory.mktemp("admin"), f"mqtt://127.0.0.1:{free_port()}") as running:
        yield running


def test_injection_needs_the_control_token(node: NodeProcess) -> None:
    status, reply = node.request("POST", "/sim/tap", {"uid": "04A1B2C3"}, token=False)
    assert status == 401 and reply["title"] == "Unauthorised"
    node._close_conn()
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", node.admin_port, timeout=5)
    conn.request(
        "POST",
        "/sim/tap",
        body=json.dumps({"uid": "04A1B2C3"}),
        headers={"Authorization": "Bearer " + "x" * 43, "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    assert response.status == 401 and response.getheader("Content-Type") == "application/problem+json"
    conn.close()


@pytest.mark.parametrize(
    ("path", "body", "status", "detail"),
    [
        ("/sim/tap", {"uid": "zz"}, 400, "hexadecimal"),
        ("/sim/tap", {"uid": "04A1B2"}, 400, "4, 7 or 10 bytes"),
        ("/sim/tap", {"uid": 1234}, 400, "hex string"),
        ("/sim/tap", {}, 400, "hex string"),
        ("/sim/tap", {"uid": "04A1B2C3D4E5F6" * 40}, 400, "4, 7 or 10 bytes"),
        ("/sim/scan", {"code": "x" * 129}, 422, "longer than 128"),
        ("/sim/scan", {"code": "abc\u0000def"}, 422, "non-printable"),
        ("/sim/scan", {"code": ["a"]}, 400, "must be a string"),
        ("/sim/nothing", {}, 404, "no such admin endpoint"),
    ],
)
def test_bad_device_input_is_a_clear_problem_and_queues_nothing(
    node: NodeProcess, path: str, body: dict[str, object], status: int, detail: str
) -> None:
    before = node.status()["outbox"]["last_seq"]
    got, reply = node.request("POST", path, body)
    assert got == status and detail in reply["detail"]
    assert node.status()["outbox"]["last_seq"] == before


def test_oversized_and_non_json_bodies(node: NodeProcess) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", node.admin_port, timeout=5)
    headers = {"Authorization": f"Bearer {node.token()}", "Content-Type": "application/json"}
    conn.request("POST", "/sim/scan", body=json.dumps({"code": "x" * 10_000}), headers=headers)
    response = conn.getresponse()
    assert response.status == 413 and b"limited to 4096 bytes" in response.read()
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", node.admin_port, timeout=5)
    conn.request("POST", "/sim/scan", body="{not json", headers=headers)
    response = conn.getresponse()
    assert response.status == 400 and b"JSON object" in response.read()
    conn.close()


def test_hostile_scan_is_rejected_and_a_member_scan_is_only_ever_a_token(node: NodeProcess) -> None:
    hostile = "<script>alert(1)</script>'; DROP TABLE outbox; --"
    depth = node.status()["outbox"]["depth"]
    status, reply = node.request("POST", "/sim/scan", {"code": hostile})
    assert status == 422 and reply["kind"] == "unknown" and "not a product" in reply["detail"]
    assert node.status()["outbox"]["depth"] == depth  # nothing queued for a code the node does not use
    member = "M0007731451"
    status, reply = node.request("POST", "/sim/scan", {"code": member})
    assert status == 200 and reply["schema"] == "retail.v1.identity" and reply["kind"] == "member"
    duplicate_status, duplicate = node.request("POST", "/sim/scan", {"code": member})
    # the same code twice is two events (debouncing belongs to the device layer), with consecutive seqs
    assert duplicate_status == 200 and duplicate["seq"] == reply["seq"] + 1 and duplicate["id"] != reply["id"]
    assert node.status()["outbox"]["depth"] >= depth + 2
    # a typo in the check digit, a product and a receipt: no event, each told apart
    status, reply = node.request("POST", "/sim/scan", {"code": "M0007731452"})
    assert status == 422 and "check digit" in reply["detail"]
    status, reply = node.request("POST", "/sim/scan", {"code": "4006381333931"})
    assert status == 200 and reply == {"accepted": False, "kind": "gtin"}
    cli = node.cli("sim", "scan", "RC-2026-0001")
    assert cli.returncode == 0 and "scanned: receipt" in cli.stdout
    log = node.log_text()
    assert "<script>" not in log and member not in log


def test_status_outbox_and_metrics_commands(node: NodeProcess) -> None:
    assert node.cli("sim", "button").returncode == 0
    out = node.cli("status", "--json")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["broker"]["connected"] is False and data["state"] == "degraded"
    assert data["outbox"]["by_type"]["assist"] >= 1 and data["devices"]["sim-reader"] == "simulated"
    table = node.cli("outbox").stdout
    assert "assist" in table and "MiB on disk" in table and "oldest:" in table
    js = json.loads(node.cli("outbox", "--json").stdout)
    assert js["depth"] == data["outbox"]["depth"] and js["disk_bytes"] > 0
    _, metrics = node.request("GET", "/metrics")
    assert 'kiosk_edge_outbox_depth{type="assist"}' in metrics
    assert "kiosk_edge_mqtt_connected 0.0" in metrics
    assert 'kiosk_edge_device_up{device="sim-reader"} 1.0' in metrics


def test_kiosk_is_served_on_loopback(node: NodeProcess) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{node.kiosk_port}/", timeout=5) as response:
        page = response.read().decode()
        assert "Tap your card or scan your code" in page
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_commands_without_a_running_node(tmp_path: Path) -> None:
    env = base_env()
    env.update(KIOSK_EDGE_DATA__DIR=str(tmp_path / "data"), KIOSK_EDGE_ADMIN__PORT=str(free_port()))
    for args in (["sim", "tap", "04A1B2C3"], ["sim", "button"], ["status"]):
        proc = subprocess.run([KIOSK_EDGE, *args], env=env, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "no node is running" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([KIOSK_EDGE, "outbox"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "no outbox yet" in proc.stdout


def test_run_refuses_a_port_in_use_with_one_line(tmp_path: Path, node: NodeProcess) -> None:
    env = base_env()
    env.update(
        KIOSK_EDGE_DATA__DIR=str(tmp_path / "data"),
        KIOSK_EDGE_ADMIN__PORT=str(free_port()),
        KIOSK_EDGE_KIOSK__PORT=str(node.kiosk_port),
        KIOSK_EDGE_POS__PORT=str(free_port()),
    )
    proc = subprocess.run([KIOSK_EDGE, "run"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert f"kiosk.port {node.kiosk_port}: cannot listen" in proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_sim_without_simulate_is_refused(tmp_path: Path) -> None:
    real = NodeProcess(tmp_path, f"mqtt://127.0.0.1:{free_port()}", simulate=False)
    with real:
        proc = real.cli("sim", "tap", "04A1B2C3")
        assert proc.returncode == 1 and "not started with --simulate" in proc.stderr
        status = real.status()
        devices = status["devices"]
        assert set(devices) == {"nfc-reader", "scanner", "gpio", "assist-button"}
        # no /dev/input and no GPIO on this machine: the node runs anyway and says so
        assert devices["scanner"] == "absent" and devices["gpio"] == "absent"
        assert "scanner_absent" in status["alarms"] and status["state"] == "degraded"


def test_keys_show_and_central_verify(node: NodeProcess) -> None:
    pubkey = node.cli("keys", "show").stdout.strip()
    assert pubkey.startswith("ed25519:")
    payload = (node.data_dir / "outbox.sqlite3").parent  # a real message from the outbox
    import sqlite3

    with sqlite3.connect(payload / "outbox.sqlite3") as conn:
        message = conn.execute("SELECT payload FROM outbox ORDER BY seq LIMIT 1").fetchone()[0]
    ok = subprocess.run(
        [KIOSK_CENTRAL, "verify", "--pubkey", pubkey], input=message, capture_output=True, timeout=30
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["valid"] is True
    tampered = message.replace(b'"seq":1', b'"seq":9')
    bad = subprocess.run(
        [KIOSK_CENTRAL, "verify", "--pubkey", pubkey], input=tampered, capture_output=True, timeout=30
    )
    assert bad.returncode == 1 and b"invalid: signature" in bad.stderr
    junk = subprocess.run(
        [KIOSK_CENTRAL, "verify", "--pubkey", pubkey], input=b"\x00garbage", capture_output=True, timeout=30
    )
    assert junk.returncode == 1 and b"not UTF-8 JSON" in junk.stderr
    badkey = subprocess.run(
        [KIOSK_CENTRAL, "verify", "--pubkey", "nonsense"], input=message, capture_output=True, timeout=30
    )
    assert badkey.returncode == 2
