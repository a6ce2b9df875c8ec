"""The POS API over TLS (pos.tls_cert_file / pos.tls_key_file): a real node, a real TLS client."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.support.broker import free_port
from tests.support.node import KIOSK_EDGE, NodeProcess, base_env
from tests.support.tls import make_tls_material

SALE = {
    "lines": [{"sku": "PEN-1", "name": "Pen", "quantity": 2, "unit_price": 150, "category": "stationery"}],
    "total": 300,
    "currency": "EUR",
    "payment": "card",
}


def _https(
    port: int, ca: Path, method: str, path: str, body: object = None, **headers: str
) -> tuple[int, dict]:
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read() or b"null")
    finally:
        conn.close()


def test_the_pos_api_over_tls(tmp_path: Path) -> None:
    tls = make_tls_material(tmp_path / "tls")
    other = make_tls_material(tmp_path / "other-ca")  # a CA the node's certificate is not from
    with NodeProcess(
        tmp_path / "node",
        f"mqtt://127.0.0.1:{free_port()}",
        POS__TLS_CERT_FILE=str(tls.server_cert),
        POS__TLS_KEY_FILE=str(tls.server_key),
    ) as node:
        assert "POS API listening on https://" in node.log_text()
        code = node.cli("pair").stdout.splitlines()[0].split(":", 1)[1].replace(" ", "")
        status, paired = _https(
            node.pos_port, tls.ca_cert, "POST", "/pos/v1/pair", {"code": code, "pos_id": "t", "name": "T"}
        )
        assert status == 201
        auth = {"Authorization": f"Bearer {paired['token']}", "Idempotency-Key": "RC-TLS-1"}
        status, sale = _https(node.pos_port, tls.ca_cert, "POST", "/pos/v1/sales", SALE, **auth)
        assert status == 201 and sale["receipt"] == "RC-TLS-1"
        # plain HTTP to the TLS port gets no API answer
        plain = http.client.HTTPConnection("127.0.0.1", node.pos_port, timeout=5)
        try:
            plain.request("GET", "/pos/v1/openapi.json")
            answer = plain.getresponse()
            assert answer.status == 400 or b"openapi" not in answer.read()
        except (http.client.HTTPException, ConnectionError):
            pass  # the server hung up: also fine
        finally:
            plain.close()
        # a client that does not trust the node's CA refuses the connection
        with pytest.raises(ssl.SSLCertVerificationError):
            _https(node.pos_port, other.ca_cert, "GET", "/pos/v1/openapi.json")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"KIOSK_EDGE_POS__TLS_CERT_FILE": "/etc/hostname"}, "set both tls_cert_file and tls_key_file"),
        (
            {
                "KIOSK_EDGE_POS__TLS_CERT_FILE": "/nonexistent.crt",
                "KIOSK_EDGE_POS__TLS_KEY_FILE": "/nonexistent.key",
            },
            "pos.tls_cert_file (from KIOSK_EDGE_POS__TLS_CERT_FILE): cannot read /nonexistent.crt",
        ),
    ],
)
def test_bad_tls_settings_stop_start_up_in_one_line(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    env = base_env()
    env.update(KIOSK_EDGE_DATA__DIR=str(tmp_path / "data"), **settings)
    proc = subprocess.run([KIOSK_EDGE, "run"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_a_certificate_that_is_not_one_stops_start_up(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    env = base_env()
    env.update(
        KIOSK_EDGE_DATA__DIR=str(tmp_path / "data"),
        KIOSK_EDGE_ADMIN__PORT=str(free_port()),
        KIOSK_EDGE_KIOSK__PORT=str(free_port()),
        KIOSK_EDGE_POS__PORT=str(free_port()),
        KIOSK_EDGE_POS__TLS_CERT_FILE=str(junk),
        KIOSK_EDGE_POS__TLS_KEY_FILE=str(junk),
    )
    proc = subprocess.run([KIOSK_EDGE, "run"], env=env, capture_output=True, text=True, timeout=30)
    assert (
        proc.returncode == 2
        and "cannot use the TLS certificate" in proc.stderr
        and "Traceback" not in proc.stderr
    )
