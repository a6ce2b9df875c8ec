"""The README's run command starts a working node (embedded defaults, simulated devices, no broker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.support.broker import free_port
from tests.support.node import base_env

ROOT = Path(__file__).resolve().parent.parent


def test_run_node_script_serves_status_and_stops_cleanly(tmp_path: Path) -> None:
    admin = free_port()
    env = base_env()
    # Only what a second node on a shared CI machine must change; everything else stays the default.
    env.update(
        KIOSK_EDGE_DATA__DIR=str(tmp_path / "data"),
        KIOSK_EDGE_ADMIN__PORT=str(admin),
        KIOSK_EDGE_KIOSK__PORT=str(free_port()),
        KIOSK_EDGE_POS__PORT=str(free_port()),
        KIOSK_EDGE_MQTT__URL=f"mqtt://127.0.0.1:{free_port()}",
    )
    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "run-node.sh")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        status = None
        deadline = time.monotonic() + 120  # setup.sh may still have to install the package
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=2) as response:
                    status = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.2)
        assert status is not None, (tmp_path / "node.log").read_text()
        assert status["simulate"] is True and status["outbox"]["depth"] == 0
        assert (tmp_path / "data" / "outbox.sqlite3").exists()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    text = (tmp_path / "node.log").read_text()
    assert "node stopped" in text and "Traceback" not in text


def test_run_node_script_can_start_the_reference_pos(tmp_path: Path) -> None:
    admin = free_port()
    env = base_env()
    env.update(
        KIOSK_EDGE_DATA__DIR=str(tmp_path / "data"),
        KIOSK_EDGE_ADMIN__PORT=str(admin),
        KIOSK_EDGE_KIOSK__PORT=str(free_port()),
        KIOSK_EDGE_POS__HOST="127.0.0.1",
        KIOSK_EDGE_POS__PORT=str(free_port()),
        KIOSK_EDGE_MQTT__URL=f"mqtt://127.0.0.1:{free_port()}",
    )
    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "run-node.sh"), "--pos-sim"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        sales = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and sales < 2:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=2) as response:
                    sales = json.loads(response.read())["outbox"]["by_type"].get("sale", 0)
            except OSError:
                pass
            time.sleep(0.3)
        assert sales >= 2, (tmp_path / "node.log").read_text()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    text = (tmp_path / "node.log").read_text()
    assert "paired with http://127.0.0.1:" in text and "node stopped" in text and "Traceback" not in text
