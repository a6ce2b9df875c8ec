"""``kiosk-edge pos-sim``: a reference POS client that pairs with a node and plays realistic sales.

For demos, for the POS benchmark, and for integrators who want a working example of the API: pairing,
the bearer token, an ``Idempotency-Key`` per receipt, retrying a sale whose answer was lost (same key, so
never a second sale), attaching a member by code, returns as negative quantities, and reading RFC 9457
problems. It uses only the standard library's HTTP client, as a till's integration might.
"""

from __future__ import annotations

import http.client
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from stdnum import ean

from cloud_sync.codes import make_member_code

#: (name, category, unit price in cents, GTIN without its check digit)
CATALOGUE: tuple[tuple[str, str, int, str], ...] = (
    ("Fineliner 0.4 black", "stationery", 199, "400638133393"),
    ("A5 notebook, dotted", "stationery", 649, "871234500001"),
    ("Espresso beans 250 g", "grocery", 599, "871234500002"),
    ("Oat drink 1 l", "grocery", 229, "871234500003"),
    ("USB-C cable 1 m", "electronics", 1299, "871234500004"),
    ("AA batteries, 4 pack", "electronics", 549, "871234500005"),
    ("Hand cream 75 ml", "care", 799, "871234500006"),
    ("Greeting card", "gifts", 349, "871234500007"),
    ("Gift card 25 EUR", "gift_card", 2500, "871234500008"),
    ("Carrier bag", "service_fee", 25, "871234500009"),
)
PAYMENTS = ("card", "card", "card", "mobile", "cash", "cash", "voucher")


class PosSimError(Exception):
    """The simulator cannot go on (no node, pairing refused); the message says why."""


@dataclass
class Figures:
    """What a run did, for its summary line."""

    sent: int = 0
    created: int = 0
    replayed: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    members: int = 0
    points: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """The q-th percentile of the sale latencies (ms), 0 with none."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _gtin(stem: str) -> str:
    return stem + ean.calc_check_digit(stem)


def make_basket(rng: random.Random) -> dict[str, Any]:
    """A plausible basket: 1-6 lines, now and then a return line, sometimes a discount."""
    lines: list[dict[str, Any]] = []
    for item in rng.sample(CATALOGUE, rng.randint(1, 6)):
        name, category, price, stem = item
        lines.append(
            {
                "gtin": _gtin(stem),
                "name": name,
                "quantity": rng.choice((1, 1, 1, 2, 3)),
                "unit_price": price,
                "category": category,
            }
        )
    if rng.random() < 0.08:  # a returned item (negative quantity)
        name, category, price, stem = rng.choice(CATALOGUE)
        lines.append(
            {"gtin": _gtin(stem), "name": name, "quantity": -1, "unit_price": price, "category": category}
        )
    gross = sum(line["quantity"] * line["unit_price"] for line in lines)
    discount = rng.choice((0, 0, 0, 0, 50, 100)) if gross > 1000 else 0
    return {
        "lines": lines,
        "discount": discount,
        "total": gross - discount,
        "currency": "EUR",
        "payment": rng.choice(PAYMENTS),
    }


class PosClient:
    """A minimal POS API client over one kept-alive HTTP connection."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise PosSimError(f"--node must look like http://HOST:PORT, not {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or 8081
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self.token: str | None = None

    def request(
        self, method: str, path: str, body: Any = None, **headers: str
    ) -> tuple[int, Any, dict[str, str]]:
        """One request; reconnects once if a kept-alive connection went stale."""
        data = None if body is None else json.dumps(body).encode()
        send = {"Content-Type": "application/json", **headers}
        if self.token is not None:
            send["Authorization"] = f"Bearer {self.token}"
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            try:
                self._conn.request(method, path, body=data, headers=send)
                reply = self._conn.getresponse()
                raw = reply.read()
            except (ConnectionError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2:
                    raise PosSimError(
                        f"the node at {self._host}:{self._port} does not answer: {exc}"
                    ) from exc
                continue
            except OSError as exc:
                self.close()
                raise PosSimError(f"the node at {self._host}:{self._port} does not answer: {exc}") from exc
            parsed = json.loads(raw) if raw else None
            return reply.status, parsed, {k.lower(): v for k, v in reply.getheaders()}
        raise AssertionError("unreachable")

    def pair(self, code: str, pos_id: str, name: str) -> None:
        """Exchange the staff's code for a token."""
        status, body, _ = self.request("POST", "/pos/v1/pair", {"code": code, "pos_id": pos_id, "name": name})
        if status != 201:
            detail = body.get("detail") if isinstance(body, dict) else body
            raise PosSimError(f"pairing refused ({status}): {detail}")
        self.token = str(body["token"])

    def close(self) -> None:
        """Drop the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _customer_present(client: PosClient) -> bool:
    status, body, _ = client.request("GET", "/pos/v1/till")
    return status == 200 and isinstance(body, dict) and body.get("customer") is not None


def play(
    client: PosClient,
    count: int,
    rate: float,
    *,
    seed: int | None = None,
    member_share: float = 0.4,
    progress: Callable[[Figures], None] | None = None,
) -> Figures:
    """Send ``count`` sales at ``rate`` per second (0 = as fast as the node answers)."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    figures = Figures()
    started = time.monotonic()
    for i in range(count):
        if rate > 0:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if rng.random() < member_share and not _customer_present(client):
            # a cashier types a member code only when nobody tapped or scanned at the till already
            code = make_member_code(rng.randint(1, 99_999))
            status, _body, _ = client.request("POST", "/pos/v1/till/customer", {"member_code": code})
            if status != 200:
                raise PosSimError(f"attaching member {code} failed with {status}")
        receipt = "RC-" + uuid.uuid4().hex[:16].upper()
        basket = make_basket(rng)
        began = time.perf_counter()
        status, body, headers = client.request(
            "POST", "/pos/v1/sales", basket, **{"Idempotency-Key": receipt}
        )
        figures.latencies_ms.append((time.perf_counter() - began) * 1000)
        figures.sent += 1
        if status == 201:
            figures.created += 1
            if body.get("customer"):
                figures.members += 1
                figures.points += int(body["customer"]["points_earned"])
            if rng.random() < 0.05:  # the till "lost" the answer and retries: same key, same sale
                again, replay, _ = client.request(
                    "POST", "/pos/v1/sales", basket, **{"Idempotency-Key": receipt}
                )
                if again != 200 or replay["event_id"] != body["event_id"]:
                    raise PosSimError(f"a retry of {receipt} did not return the recorded sale ({again})")
                figures.replayed += 1
        else:
            figures.refused[status] = figures.refused.get(status, 0) + 1
            if headers.get("retry-after") and status in (503, 507):
                time.sleep(min(5.0, float(headers["retry-after"])))
        if progress is not None and (i + 1) % 100 == 0:
            progress(figures)
    return figures
