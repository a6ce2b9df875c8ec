"""Configuration: TOML plus KIOSK_EDGE_* overrides, and one clear line for every bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load_settings, parse_broker_url
from edge.errors import ConfigError

KIOSK_EDGE = str(Path(sys.executable).with_name("kiosk-edge"))


def test_defaults_and_env_overrides(tmp_path: Path) -> None:
    env = {
        "KIOSK_EDGE_NODE__STORE": "berlin-01",
        "KIOSK_EDGE_NODE__ID": "till-2",
        "KIOSK_EDGE_MQTT__URL": "mqtt://broker.example:1884",
        "KIOSK_EDGE_DATA__DIR": str(tmp_path),
        "KIOSK_EDGE_KIOSK__PORT": "8090",
        "KIOSK_EDGE_POS__HOST": "192.0.2.10",
        "KIOSK_EDGE_POS__PORT": "9443",
    }
    s = load_settings(None, env)
    assert (s.node.store, s.node.id) == ("berlin-01", "till-2")
    assert s.mqtt.broker.host == "broker.example" and s.mqtt.broker.port == 1884 and not s.mqtt.broker.tls
    assert s.data.dir == tmp_path
    assert s.kiosk.port == 8090
    assert (s.pos.host, s.pos.port) == ("192.0.2.10", 9443)


def test_env_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[node]\nstore = "file-store"\nid = "file-node"\n[kiosk]\nport = 8081\n')
    s = load_settings(cfg, {"KIOSK_EDGE_NODE__ID": "env-node"})
    assert (s.node.store, s.node.id, s.kiosk.port) == ("file-store", "env-node", 8081)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KIOSK_EDGE_KIOSK__PORT": "eighty"}, "kiosk.port (from KIOSK_EDGE_KIOSK__PORT)"),
        ({"KIOSK_EDGE_KIOSK__PORT": "70000"}, "kiosk.port"),
        ({"KIOSK_EDGE_MQTT__URL": "http://x"}, "must start with mqtt:// or mqtts://"),
        ({"KIOSK_EDGE_MQTT__URL": "mqtt://"}, "has no host name"),
        ({"KIOSK_EDGE_MQTT__URL": "mqtt://h:99999"}, "malformed URL"),
        ({"KIOSK_EDGE_MQTT__URL": "mqtt://h/topic"}, "no path"),
        ({"KIOSK_EDGE_NODE__STORE": "a/b"}, "node.store"),
        ({"KIOSK_EDGE_NODE__ID": "+"}, "node.id"),
        ({"KIOSK_EDGE_NODE__ID": "x" * 65}, "node.id"),
        ({"KIOSK_EDGE_MQTT__URLL": "mqtt://h"}, "KIOSK_EDGE_MQTT__URLL: unknown setting mqtt.urll"),
        ({"KIOSK_EDGE_NOSECTION": "1"}, "KIOSK_EDGE_NOSECTION: unknown setting"),
        ({"KIOSK_EDGE_MQTT__CA_FILE": "/nonexistent/ca.pem"}, "cannot read /nonexistent/ca.pem"),
        ({"KIOSK_EDGE_POS__HOST": "<script>"}, "pos.host"),
        (
            {"KIOSK_EDGE_GPIO__BUTTON": "17"},
            "gpio.button (from KIOSK_EDGE_GPIO__BUTTON): pin 17 is already used",
        ),
        ({"KIOSK_EDGE_GPIO__LED_RED": "54"}, "gpio.led_red"),
        ({"KIOSK_EDGE_GPIO__BUZZER": "-2"}, "gpio.buzzer"),
        ({"KIOSK_EDGE_NFC__MIN_INTERVAL": "-1"}, "nfc.min_interval"),
        ({"KIOSK_EDGE_NFC__ENABLED": "maybe"}, "nfc.enabled"),
        ({"KIOSK_EDGE_SCANNER__LAYOUT": "fr"}, "scanner.layout"),
        ({"KIOSK_EDGE_SCANNER__USB_ID": "0c2e-0b61"}, "scanner.usb_id"),
        ({"KIOSK_EDGE_SCANNER__RECEIPT_PREFIX": "rc'--"}, "scanner.receipt_prefix"),
        (
            {"KIOSK_EDGE_SCANNER__DEVICE": "", "KIOSK_EDGE_SCANNER__NAME_PATTERN": ""},
            "give device, usb_id or name_pattern",
        ),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, env)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_and_bad_toml_in_file(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text("[mqtt]\nurl = 'mqtt://h'\nwindoww = 5\n")
    with pytest.raises(ConfigError, match=r"mqtt\.windoww \(in .*edge\.toml\): unknown setting"):
        load_settings(cfg, {})
    cfg.write_text("[mqtt\nurl=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", {})


def test_tls_settings_checked_at_load(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="not a usable CA certificate"):
        load_settings(None, {"KIOSK_EDGE_MQTT__URL": "mqtts://h", "KIOSK_EDGE_MQTT__CA_FILE": str(garbage)})
    with pytest.raises(ConfigError, match="must be given together"):
        load_settings(None, {"KIOSK_EDGE_MQTT__URL": "mqtts://h", "KIOSK_EDGE_MQTT__CERT_FILE": str(garbage)})
    with pytest.raises(ConfigError, match="use mqtts://"):
        load_settings(None, {"KIOSK_EDGE_MQTT__URL": "mqtt://h", "KIOSK_EDGE_MQTT__CA_FILE": str(garbage)})


def test_unreadable_cert_file(tmp_path: Path) -> None:
    # A directory is unreadable as a file for every user, root included (chmod 0 would not stop root).
    key = tmp_path / "key.pem"
    key.mkdir()
    with pytest.raises(ConfigError, match=r"cannot read .*key\.pem: Is a directory"):
        load_settings(
            None,
            {
                "KIOSK_EDGE_MQTT__URL": "mqtts://h",
                "KIOSK_EDGE_MQTT__CERT_FILE": str(key),
                "KIOSK_EDGE_MQTT__KEY_FILE": str(key),
            },
        )


def test_broker_url_credentials_are_hidden_from_display() -> None:
    address = parse_broker_url("mqtts://node%201:s3cr%40t@broker:8883")
    assert address.username == "node 1" and address.password == "s3cr@t"
    assert "s3cr" not in address.display()


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"KIOSK_EDGE_KIOSK__PORT": "abc"}, "kiosk.port (from KIOSK_EDGE_KIOSK__PORT)"),
        ({"KIOSK_EDGE_MQTT__URL": "mqtt//nohost"}, "mqtt.url"),
        (
            {
                "KIOSK_EDGE_MQTT__CERT_FILE": "/no/such/cert.pem",
                "KIOSK_EDGE_MQTT__KEY_FILE": "/no/such/key.pem",
                "KIOSK_EDGE_MQTT__URL": "mqtts://h",
            },
            "cannot read /no/such/cert.pem",
        ),
        ({"KIOSK_EDGE_BOGUS__KEY": "1"}, "KIOSK_EDGE_BOGUS__KEY: unknown setting"),
    ],
)
def test_cli_exits_2_with_one_line_and_no_traceback(
    tmp_path: Path, env: dict[str, str], fragment: str
) -> None:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_EDGE_")}
    full_env.update(env, KIOSK_EDGE_DATA__DIR=str(tmp_path))
    for command in (["run", "--simulate"], ["status"], ["keys", "init"]):
        proc = subprocess.run(
            [KIOSK_EDGE, *command], env=full_env, capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert fragment in lines[0]
        assert "Traceback" not in proc.stderr


def test_cli_bad_config_file_path(tmp_path: Path) -> None:
    proc = subprocess.run(
        [KIOSK_EDGE, "run", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "cannot read" in proc.stderr and "Traceback" not in proc.stderr


def test_device_sections_from_the_environment() -> None:
    s = load_settings(
        None,
        {
            "KIOSK_EDGE_NFC__READERS": "ACS ACR122U, Identiv uTrust",
            "KIOSK_EDGE_SCANNER__DEVICE": "",
            "KIOSK_EDGE_SCANNER__USB_ID": "0c2e:0b61",
            "KIOSK_EDGE_GPIO__BUZZER": "-1",
        },
    )
    assert s.nfc.reader_names == ["ACS ACR122U", "Identiv uTrust"]
    assert s.scanner.device is None and s.scanner.usb_id == "0c2e:0b61"
    from edge.node import gpio_pins, scanner_match

    assert gpio_pins(s).buzzer is None and gpio_pins(s).led_green == 17
    match = scanner_match(s)
    assert (match.vendor, match.product, match.name, match.path) == (0x0C2E, 0x0B61, None, None)
