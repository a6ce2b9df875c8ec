"""Central-receiver test helpers: a registered node that signs events, bodies, and a worker process."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from nacl.signing import SigningKey
from sqlalchemy import Engine

from cloud_sync.central.ingest import Incoming
from cloud_sync.central.registry import add_node
from cloud_sync.envelope import SignedMessage, Signer, encode_public_key

KIOSK_CENTRAL = str(Path(sys.executable).with_name("kiosk-central"))
ROOT = "retail/v1"


def token(n: int) -> str:
    """A distinct, valid 64-hex identity token."""
    return f"{n:064x}"


def sale_body(
    receipt: str,
    *,
    customer: str | None = None,
    lines: list[dict[str, Any]] | None = None,
    discount: int = 0,
    source: str = "nfc",
) -> dict[str, Any]:
    """A valid sale body; the default basket is two 2.50 items (5.00, 5 points at 100 %)."""
    basket = lines or [
        {"name": "Milk 1L", "quantity": 2, "unit_price": 250, "category": "dairy", "gtin": "08712345678906"}
    ]
    gross = sum(line["quantity"] * line["unit_price"] for line in basket)
    body: dict[str, Any] = {
        "receipt": receipt,
        "pos": "till-1",
        "lines": basket,
        "total": gross - discount if gross >= 0 else gross + discount,
        "currency": "EUR",
        "payment": "card",
    }
    if discount:
        body["discount"] = discount
    if customer:
        body["customer"] = {"source": source, "token": customer}
    return body


def signup_body(member_token: str, card_token: str | None = None) -> dict[str, Any]:
    """A valid sign-up body (the sealed part is opaque here: the vault opens it)."""
    body: dict[str, Any] = {
        "member_token": member_token,
        "consent": {
            "privacy_notice": True,
            "marketing_email": True,
            "marketing_sms": False,
            "notice_version": "2026-11",
        },
        "language": "en",
        "sealed": "A" * 64,
        "vault_key": "0123456789abcdef",
    }
    if card_token:
        body["card_token"] = card_token
    return body


class FakeNode:
    """A registered node's key and sequence: seals events as ``kiosk-edge`` does."""

    def __init__(self, store: str = "store-1", node: str = "node-1", engine: Engine | None = None) -> None:
        self.key = SigningKey.generate()
        self.store, self.node = store, node
        self.signer = Signer(self.key, store, node)
        self._seq = itertools.count(1)
        if engine is not None:
            self.register(engine)

    @property
    def public_key(self) -> str:
        return encode_public_key(self.key.verify_key)

    def register(self, engine: Engine) -> None:
        add_node(engine, self.store, self.node, self.public_key)

    def topic(self, event_type: str) -> str:
        return f"{ROOT}/{self.store}/{self.node}/event/{event_type}"

    def seal(self, event_type: str, body: dict[str, Any], seq: int | None = None) -> SignedMessage:
        return self.signer.seal(event_type, next(self._seq) if seq is None else seq, body)

    def incoming(self, event_type: str, body: dict[str, Any], seq: int | None = None) -> Incoming:
        return Incoming(self.topic(event_type), self.seal(event_type, body, seq).payload)


def base_env() -> dict[str, str]:
    """The environment without any KIOSK_CENTRAL_* the developer may have exported."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_CENTRAL_")}


class CentralProcess:
    """``kiosk-central run`` as a child process with its own environment (no KIOSK_CENTRAL_* leaks in)."""

    def __init__(
        self,
        workdir: Path,
        db_url: str,
        broker_url: str,
        client_id: str,
        *,
        config: Path | None = None,
        **settings: str,
    ) -> None:
        self.config = config
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{client_id}.log"
        self.env = base_env()
        self.env.update(
            KIOSK_CENTRAL_DB__URL=db_url,
            KIOSK_CENTRAL_MQTT__URL=broker_url,
            KIOSK_CENTRAL_MQTT__CLIENT_ID=client_id,
            KIOSK_CENTRAL_METRICS__PORT="0",
            KIOSK_CENTRAL_DATA__DIR=str(workdir / "data"),
        )
        self.env.update({f"KIOSK_CENTRAL_{k.upper()}": v for k, v in settings.items()})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 20.0) -> CentralProcess:
        """Start and wait until the worker has subscribed (it logs it)."""
        self._log = self.log_path.open("ab")
        offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [KIOSK_CENTRAL, *(["--config", str(self.config)] if self.config else []), "run"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"kiosk-central exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"
                )
            if "subscribing to" in self.log_text()[offset:]:
                return self
            time.sleep(0.05)
        raise TimeoutError(f"kiosk-central did not connect within {timeout} s:\n{self.log_text()[-3000:]}")

    def stored(self) -> int:
        """Events this worker stored first-hand, from the summary it logs when it stops (summed over runs)."""
        return sum(int(m) for m in re.findall(r"stopped: (\d+) stored", self.log_text()))

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _end(self, sig: signal.Signals, timeout: float) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        if self._log is not None:
            self._log.close()
        self.proc = None
        return code

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash mid-batch."""
        self._end(signal.SIGKILL, 5.0)
