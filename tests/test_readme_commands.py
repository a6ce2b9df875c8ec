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


def test_run_chain_script_turns_sales_into_points_on_the_kiosk(tmp_path: Path) -> None:
    """The README's "see the whole chain": node + central receiver (SQLite) + POS simulator on one broker;
    a card joins at the kiosk, the simulated till sells to it, the kiosk greets it with its points."""
    import http.cookiejar
    import re
    import urllib.parse

    from tests.support.broker import Mosquitto

    admin, kiosk = free_port(), free_port()
    env = {k: v for k, v in base_env().items() if not k.startswith("KIOSK_CENTRAL_")}
    env.update(
        CHAIN_STATE=str(tmp_path / "chain"),
        KIOSK_EDGE_ADMIN__PORT=str(admin),
        KIOSK_EDGE_KIOSK__PORT=str(kiosk),
        KIOSK_EDGE_POS__HOST="127.0.0.1",
        KIOSK_EDGE_POS__PORT=str(free_port()),
        KIOSK_CENTRAL_METRICS__PORT="0",
    )
    with Mosquitto(tmp_path / "broker") as broker:
        env["CHAIN_BROKER"] = broker.url
        log = (tmp_path / "chain.log").open("wb")
        proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "run-chain.sh")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{kiosk}"
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

        def wait_for(what: str, check: object, timeout: float = 60) -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                assert proc.poll() is None, (tmp_path / "chain.log").read_text()
                try:
                    page = opener.open(base + "/welcome", timeout=5).read().decode()
                    if callable(check) and check(page):
                        return page
                except OSError:
                    pass
                time.sleep(0.3)
            raise AssertionError(f"{what}: {(tmp_path / 'chain.log').read_text()[-4000:]}")

        def tap() -> None:
            tapped = subprocess.run(
                [str(ROOT / ".venv" / "bin" / "kiosk-edge"), "sim", "tap", "04A1B2C3D4E5F6"],
                env={**env, "KIOSK_EDGE_DATA__DIR": str(tmp_path / "chain" / "node")},
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert tapped.returncode == 0, tapped.stderr

        try:
            deadline = time.monotonic() + 180  # setup.sh may still have to install the package
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=2) as response:
                        if json.loads(response.read())["broker"]["connected"]:
                            break
                except OSError:
                    pass
                time.sleep(0.3)
            tap()
            wait_for("the unknown card's invitation", lambda p: 'data-state="unknown"' in p)
            page = opener.open(base + "/join", timeout=5).read().decode()
            token = re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', page)
            nonce = re.search(r'name="nonce" value="([^"]+)"', page)
            assert token and nonce, page
            form = {"csrf_token": token.group(1), "nonce": nonce.group(1), "first_name": "Ayşe"}
            form.update(email="ayse@example.com", privacy="y")
            joined = opener.open(base + "/join", data=urllib.parse.urlencode(form).encode(), timeout=5)
            assert joined.geturl().endswith("/joined")
            tap()  # the next simulated sale takes the customer present at the till
            page = wait_for(
                "the member's name and points",
                lambda p: "Welcome back, Ayşe!" in p and re.search(r"\b[1-9][0-9]* points", p) is not None,
            )
            assert "ayse@example.com" not in page
            os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
    text = (tmp_path / "chain.log").read_text()
    assert "Traceback" not in text and "node stopped" in text
