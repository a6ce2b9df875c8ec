"""The whole chain with real processes: a kiosk-edge node, Mosquitto, and kiosk-central on PostgreSQL.

A card nobody knows is tapped (the kiosk invites to join); the card turns out to belong to a member who
joined in another store; a sale at this till books points centrally and the new figures come back to the
node's kiosk; a reward is approved centrally over request/response and its cost booked once.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cloud_sync.central.db import make_engine, migrate
from cloud_sync.central.ingest import Ingestor, balance
from cloud_sync.central.schema import redemptions
from edge.identity import Pseudonymizer
from edge.keys import PSEUDONYM_KEY_FILE, load_pseudonym_key
from tests.support.broker import Mosquitto
from tests.support.central import (
    KIOSK_CENTRAL,
    CentralProcess,
    FakeNode,
    base_env,
    sale_body,
    signup_body,
    token,
)
from tests.support.node import NodeProcess
from tests.support.postgres import PostgresServer

UID = "04a1b2c3d4e5f6"
SALE = {
    "lines": [{"name": "Flat white", "quantity": 2, "unit_price": 375, "category": "coffee", "sku": "FW-1"}],
    "total": 750,
    "currency": "EUR",
    "payment": "card",
}


def call(port: int, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **headers})
        reply = conn.getresponse()
        raw = reply.read()
        try:
            return reply.status, json.loads(raw) if raw else None
        except ValueError:
            return reply.status, raw.decode(errors="replace")
    finally:
        conn.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def welcome(node: NodeProcess) -> str:
    status, page = call(node.kiosk_port, "GET", "/welcome")
    return page if status == 200 and isinstance(page, str) else ""


def test_tap_join_elsewhere_sell_push_and_redeem(tmp_path: Path, postgres: PostgresServer) -> None:
    db_url = postgres.create_database("chain")
    engine = make_engine(db_url)
    migrate(engine)
    with Mosquitto(tmp_path / "broker") as broker, NodeProcess(tmp_path / "node", broker.url) as node:
        pubkey = node.cli("keys", "show").stdout.strip()
        added = subprocess.run(
            [KIOSK_CENTRAL, "nodes", "add", "--db", db_url, "store-7", "till-1", pubkey],
            capture_output=True,
            text=True,
            timeout=60,
            env=base_env(),
        )
        assert added.returncode == 0, added.stderr
        # the chain doubles points on coffee: the central receiver books it, and tells the tills
        config = tmp_path / "central.toml"
        config.write_text("[loyalty.category_percent]\ncoffee = 200\n")
        central = CentralProcess(
            tmp_path / "central", db_url, broker.url, "central-chain", config=config
        ).start()
        try:
            wait_until(lambda: node.status()["broker"]["connected"], 10, "the node's broker connection")
            wait_until(
                lambda: "earn rules from the central receiver" in node.log_text(), 10, "the earn rules"
            )
            card = Pseudonymizer(load_pseudonym_key(node.data_dir / PSEUDONYM_KEY_FILE)).card_token(
                bytes.fromhex(UID)
            )
            # 1. a card nobody knows: the central receiver says so, the kiosk invites to join
            node.tap(UID)
            wait_until(lambda: 'data-state="unknown"' in welcome(node), 10, "the 'not registered' screen")

            # 2. it belongs to a member who joined in another store and earned 200 points there
            elsewhere = FakeNode("store-2", "till-9", engine=engine)
            ingestor = Ingestor(engine, "retail/v1")
            member = token(4242)
            outcomes = ingestor.ingest(
                [
                    elsewhere.incoming("signup", signup_body(member, card_token=card)),
                    elsewhere.incoming(
                        "sale",
                        sale_body(
                            "RCPT-EL-1",
                            customer=card,
                            lines=[
                                {
                                    "name": "Boots",
                                    "quantity": 1,
                                    "unit_price": 20_000,
                                    "category": "shoes",
                                    "sku": "B-1",
                                }
                            ],
                        ),
                    ),
                ]
            )
            assert [o.status for o in outcomes] == ["stored", "stored"]

            # 3. a sale at this till for the tapped card: booked centrally, figures pushed back
            pair = node.cli("pair")
            code = pair.stdout.splitlines()[0].split(":", 1)[1].replace(" ", "")
            status, paired = call(
                node.pos_port, "POST", "/pos/v1/pair", {"code": code, "pos_id": "till-A", "name": "A"}
            )
            assert status == 201, paired
            auth = {"Authorization": f"Bearer {paired['token']}"}
            node.tap(UID)
            status, sale = call(
                node.pos_port, "POST", "/pos/v1/sales", SALE, **auth, **{"Idempotency-Key": "RC-7001"}
            )
            assert status == 201, sale
            assert sale["customer"]["points_earned"] == 15  # 7.50 of coffee at 200 %, at the till already
            wait_until(lambda: balance(engine, member) == 215, 15, "the sale's 15 points in the ledger")
            wait_until(lambda: "215 points" in welcome(node), 10, "the pushed figures on the kiosk")
            page = welcome(node)
            assert 'data-state="member"' in page and "Stamp card: 2 of 9" in page

            # 4. a reward approved centrally: the cost is booked once, even after the node's event arrives
            node.tap(UID)
            status, answer = call(
                node.pos_port,
                "POST",
                "/pos/v1/redemptions",
                {"reward": "coffee"},
                **auth,
                **{"Idempotency-Key": "RD-7001"},
            )
            assert status == 201, answer
            assert (
                answer["approved"] is True
                and answer["approval"] == "central"
                and answer["points_balance"] == 65
            )

            def settled() -> bool:
                with engine.connect() as conn:
                    row = conn.execute(select(redemptions.c.event_id)).scalar_one_or_none()
                return row is not None

            wait_until(settled, 15, "the node's redemption event")
            assert balance(engine, member) == 65
        finally:
            assert central.stop() == 0
        assert "Traceback" not in central.log_text()
    engine.dispose()
