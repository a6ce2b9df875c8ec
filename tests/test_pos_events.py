"""The cashier's screen: ``GET /pos/v1/events`` and the console page, over the real POS app and services.

Devices are played through the real ``Intake`` (real outbox, real pseudonymiser, real notifier), so a tap
or a scan travels the node's path: intake -> notifier -> till session / feed -> SSE. Every event read is
checked against its schema in the OpenAPI document, and every stream against what must never be in it:
a card UID, a member code, an identity token, the bearer token.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from playwright.sync_api import Browser, Page, expect
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from werkzeug.test import TestResponse

from cloud_sync.codes import make_member_code, make_reservation_code
from cloud_sync.envelope import Signer
from cloud_sync.outbox import Outbox
from edge.devices.cardread import CardRead
from edge.httpserver import WsgiServer
from edge.identity import Pseudonymizer
from edge.intake import Intake
from edge.keys import init_keys, load_signing_key
from edge.members import MemberDirectory
from edge.notify import Notifier, ScanNotice
from edge.pos.api import create_pos_app
from edge.pos.events import CONSOLE_CSP, CashierFeed
from edge.pos.pairing import Pairing
from edge.pos.sales import SaleService
from edge.pos.till import TillSession
from tests.support.browser import PageWatch, chromium, touch_context

ROOT = Path(__file__).resolve().parents[1]
DOC: dict[str, Any] = json.loads((ROOT / "edge" / "pos" / "openapi.json").read_text(encoding="utf-8"))
BASE_URI = "urn:kiosk-edge:pos-openapi"
REGISTRY: Registry[Any] = Registry().with_resource(BASE_URI, DRAFT202012.create_resource(DOC))
SCHEMAS = {
    "customer": "CustomerEvent",
    "scan": "ScanEvent",
    "assist": "AssistEvent",
    "alarms": "AlarmsEvent",
    "end": "EndEvent",
}
KEY = bytes(range(32))
UID = bytes.fromhex("04A1B2C3D4E5F6")
GTIN = "4006381333931"
KEEPALIVE = 0.05
SALE = {
    "lines": [
        {"gtin": GTIN, "name": "Fineliner", "quantity": 1, "unit_price": 199, "category": "stationery"}
    ],
    "total": 199,
    "currency": "EUR",
    "payment": "card",
}


def assert_documented(event: str, data: Any) -> None:
    schema = {"$ref": f"{BASE_URI}#/components/schemas/{SCHEMAS[event]}"}
    errors = list(Draft202012Validator(schema, registry=REGISTRY).iter_errors(data))
    assert not errors, f"{event} {data}: " + "; ".join(e.message for e in errors)


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class Stream:
    """Reads an SSE body (the app's iterator) in the test's thread: the keep-alive bounds every read."""

    def __init__(self, chunks: Iterable[bytes | str]) -> None:
        self._chunks = iter(chunks)
        self.raw = ""
        self._buffer = ""
        self._events: list[tuple[str, dict[str, Any]]] = []
        self.ended = False

    def _pull(self) -> None:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.ended = True
            return
        text = chunk.decode() if isinstance(chunk, bytes) else chunk
        self.raw += text
        self._buffer += text
        while "\n\n" in self._buffer:
            block, self._buffer = self._buffer.split("\n\n", 1)
            lines = [line for line in block.split("\n") if not line.startswith(":")]
            if not lines:
                continue  # a comment: ": connected", ": keep-alive"
            fields = dict(line.split(": ", 1) for line in lines)
            assert set(fields) == {"event", "data"}, block
            data = json.loads(fields["data"])
            assert_documented(fields["event"], data)
            self._events.append((fields["event"], data))

    def next(self, timeout: float = 2.0) -> tuple[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not self._events:
            assert not self.ended, f"the stream ended; it said:\n{self.raw[-400:]}"
            assert time.monotonic() < deadline, (
                f"no event within {timeout} s; the stream said:\n{self.raw[-400:]}"
            )
            self._pull()
        return self._events.pop(0)

    def expect(self, event: str, timeout: float = 2.0) -> dict[str, Any]:
        name, data = self.next(timeout)
        assert name == event, (name, data)
        return data

    def quiet(self, seconds: float = 0.3) -> list[tuple[str, dict[str, Any]]]:
        """Everything that arrives within ``seconds`` (keep-alives keep the reads short)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.ended:
            self._pull()
        events, self._events = self._events, []
        return events

    def to_end(self, timeout: float = 2.0) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while not self.ended:
            assert time.monotonic() < deadline, f"the stream did not end:\n{self.raw[-400:]}"
            self._pull()
        events, self._events = self._events, []
        return events


@dataclass
class Rig:
    app: Flask
    client: FlaskClient
    feed: CashierFeed
    notifier: Notifier
    intake: Intake
    till: TillSession
    pairing: Pairing
    clock: Clock
    token: str
    pseudonymizer: Pseudonymizer
    responses: list[TestResponse] = field(default_factory=list)

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def open(self, token: str | None = None) -> tuple[Stream, TestResponse]:
        response = self.client.get("/pos/v1/events", headers=self.auth(token))
        self.responses.append(response)
        assert response.status_code == 200, response.get_data()
        assert response.mimetype == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-store"
        return Stream(response.response), response

    def connect(self, token: str | None = None) -> Stream:
        """A stream whose initial state (nobody present, no alarms) has been read."""
        stream, _ = self.open(token)
        assert stream.expect("customer") == {"present": False}
        assert stream.expect("alarms") == {"active": []}
        return stream

    def tap(self, uid: bytes = UID) -> None:
        self.intake.card_tapped(CardRead(uid, "nfc0", "ntag215"))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    init_keys(tmp_path, None)
    outbox = Outbox(
        tmp_path / "outbox.sqlite3", Signer(load_signing_key(tmp_path), "store-7", "till-node"), "retail/v1"
    )
    notifier = Notifier()
    clock = Clock()
    pseudonymizer = Pseudonymizer(KEY)
    feed = CashierFeed(notifier, keepalive=KEEPALIVE)
    till = TillSession(pseudonymizer, 120, clock=clock, on_change=feed.customer_changed)
    feed.follow(till)
    notifier.subscribe(till.on_notice)
    members = MemberDirectory()
    sales = SaleService(outbox, till, members)
    pairing = Pairing(tmp_path / "local.sqlite3")
    app = create_pos_app(
        pairing, till, sales, members, node={"store": "store-7", "node": "till-node"}, events=feed
    )
    token = pairing.pair(pairing.new_code().code, "till-1", "Till 1")
    intake = Intake(outbox, pseudonymizer, notifier=notifier)
    rig = Rig(app, app.test_client(), feed, notifier, intake, till, pairing, clock, token, pseudonymizer)
    try:
        yield rig
    finally:
        feed.close()
        for response in rig.responses:
            response.close()
        pairing.close()
        outbox.close()


def secret_forms(value: str) -> list[str]:
    """How a UID, code or token could appear: as is, upper and lower case, byte pairs with separators."""
    forms = {value, value.lower(), value.upper()}
    if re.fullmatch(r"[0-9A-Fa-f]+", value) and len(value) % 2 == 0:
        pairs = [value[i : i + 2] for i in range(0, len(value), 2)]
        forms |= {sep.join(pairs).lower() for sep in (":", "-", " ")}
    return sorted(forms)


def assert_absent(raw: str, *secrets: str) -> None:
    lowered = raw.lower()
    leaked = [form for secret in secrets for form in secret_forms(secret) if form.lower() in lowered]
    assert not leaked, f"the stream contains {leaked}"


# -- who may listen ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer kpos_forged-token-0000", "Basic dXNlcjpwYXNz", "kpos_no-scheme"]
)
def test_no_stream_without_a_paired_token(rig: Rig, header: str | None) -> None:
    reply = rig.client.get("/pos/v1/events", headers={"Authorization": header} if header else {})
    assert reply.status_code == 401
    assert reply.mimetype == "application/problem+json"
    assert reply.get_json()["type"].endswith("/unauthorised")
    assert reply.headers["WWW-Authenticate"].startswith("Bearer ")
    assert rig.feed.open_streams == 0


def test_a_revoked_token_is_refused_and_its_open_stream_ends(rig: Rig) -> None:
    stream = rig.connect()
    other = rig.pairing.pair(rig.pairing.new_code().code, "till-2", "Till 2")
    bystander = rig.connect(other)
    assert rig.feed.open_streams == 2
    assert rig.pairing.revoke("till-1")
    rig.intake.code_scanned(GTIN, "scanner")  # published after the revocation
    assert stream.to_end() == [("end", {"reason": "revoked"})]
    assert_absent(stream.raw, GTIN)
    assert rig.client.get("/pos/v1/events", headers=rig.auth()).status_code == 401
    # the other till is not affected
    assert bystander.expect("scan") == {"kind": "gtin", "value": "0" + GTIN}
    assert rig.feed.open_streams == 1


def test_a_quiet_stream_ends_at_the_next_keep_alive_after_revocation(rig: Rig) -> None:
    stream = rig.connect()
    assert stream.quiet(KEEPALIVE * 4) == []
    assert stream.raw.count(": keep-alive") >= 2
    assert rig.pairing.revoke("till-1")
    assert stream.to_end(timeout=KEEPALIVE * 10) == [("end", {"reason": "revoked"})]


def test_pairing_the_till_again_ends_the_old_tokens_stream(rig: Rig) -> None:
    stream = rig.connect()
    new_token = rig.pairing.pair(rig.pairing.new_code().code, "till-1", "Till 1 (reinstalled)")
    assert stream.to_end() == [("end", {"reason": "revoked"})]
    rig.connect(new_token)


# -- what the screen sees ---------------------------------------------------------------------------------


def test_a_tap_shows_the_customer_masked_and_nothing_identifying(rig: Rig) -> None:
    stream = rig.connect()
    rig.tap()
    token = rig.pseudonymizer.card_token(UID)
    customer = stream.expect("customer")
    assert customer == {"present": True, "masked": "…" + token[-6:], "source": "nfc", "expires_in_s": 120}
    assert_absent(stream.raw, UID.hex(), token, rig.token)
    assert stream.quiet() == []  # the identity is not also a "scan"


def test_a_member_code_scan_never_puts_the_code_on_the_screen(rig: Rig) -> None:
    stream = rig.connect()
    code = make_member_code(4242)
    rig.intake.code_scanned(code.lower(), "scanner")
    token = rig.pseudonymizer.barcode_token(code)
    assert stream.expect("customer") == {
        "present": True,
        "masked": "…" + token[-6:],
        "source": "barcode",
        "expires_in_s": 120,
    }
    misread = code[:-1] + str((int(code[-1]) + 1) % 10)  # a wrong check digit: rejected, not shown
    rig.intake.code_scanned(misread, "scanner")
    assert stream.expect("scan") == {"kind": "rejected", "error": "bad member code check digit"}
    assert stream.quiet() == []
    assert_absent(stream.raw, code, code[1:], misread, misread[1:], token, rig.token)


def test_scans_are_classified_with_a_value_only_for_products_reservations_and_receipts(rig: Rig) -> None:
    stream = rig.connect()
    reservation = make_reservation_code(77)
    other_chain = "OTHERCHAIN-LOYALTY-0099"
    rig.intake.code_scanned(GTIN, "scanner")
    rig.intake.code_scanned(reservation, "scanner")
    rig.intake.code_scanned("rc-2026-0001", "scanner")
    rig.intake.code_scanned(other_chain, "scanner")
    rig.intake.code_scanned("4006381333932", "scanner")  # a misread GTIN
    rig.intake.scan_failed("scan longer than 128 characters", "scanner")
    assert [stream.next() for _ in range(6)] == [
        ("scan", {"kind": "gtin", "value": "04006381333931"}),
        ("scan", {"kind": "reservation", "value": reservation}),
        ("scan", {"kind": "receipt", "value": "RC-2026-0001"}),
        ("scan", {"kind": "unknown"}),
        ("scan", {"kind": "gtin", "error": "bad GTIN check digit"}),
        ("scan", {"kind": "rejected", "error": "scan longer than 128 characters"}),
    ]
    assert_absent(stream.raw, other_chain, "4006381333932")


def test_a_value_that_does_not_look_like_its_kind_is_not_shown(rig: Rig) -> None:
    stream = rig.connect()
    code = make_member_code(5)
    rig.notifier.publish(ScanNotice("receipt", "not a receipt <b>", "scanner"))
    rig.notifier.publish(ScanNotice("reservation", code, "scanner"))
    rig.notifier.publish(ScanNotice("unknown", "SOME FREE TEXT", "scanner"))
    assert [stream.next() for _ in range(3)] == [
        ("scan", {"kind": "receipt"}),
        ("scan", {"kind": "reservation"}),
        ("scan", {"kind": "unknown"}),
    ]
    assert_absent(stream.raw, code, "SOME FREE TEXT", "<b>")


def test_an_assistance_press_is_queued_and_shown(rig: Rig) -> None:
    stream = rig.connect()
    message = rig.intake.assistance_requested("gpio-button")
    assert message.seq >= 1  # durable before anyone is told
    assert stream.expect("assist") == {"device": "gpio-button"}


def test_the_customer_is_cleared_by_the_cashier_a_sale_or_the_clock(rig: Rig) -> None:
    stream = rig.connect()
    rig.tap()
    assert stream.expect("customer")["present"] is True
    assert rig.client.delete("/pos/v1/till/customer", headers=rig.auth()).status_code == 204
    assert stream.expect("customer") == {"present": False}

    rig.tap()
    assert stream.expect("customer")["present"] is True
    sale = rig.client.post(
        "/pos/v1/sales", json=SALE, headers={**rig.auth(), "Idempotency-Key": "RC-EV-0001"}
    )
    assert sale.status_code == 201 and sale.get_json()["customer"] is not None
    assert stream.expect("customer") == {"present": False}

    rig.tap()
    assert stream.expect("customer")["expires_in_s"] == 120
    rig.clock.now += 60
    assert stream.quiet(KEEPALIVE * 3) == []
    rig.clock.now += 61  # the window has passed: the till forgets silently, the screen is told
    assert stream.expect("customer", timeout=KEEPALIVE * 10) == {"present": False}
    assert rig.till.current() is None
    assert stream.quiet(KEEPALIVE * 3) == []  # once


def test_a_new_stream_starts_with_the_current_state(rig: Rig) -> None:
    rig.tap()
    rig.clock.now += 30
    rig.feed.set_alarms(["outbox_full"])
    stream, _ = rig.open()
    token = rig.pseudonymizer.card_token(UID)
    assert stream.next() == (
        "customer",
        {"present": True, "masked": "…" + token[-6:], "source": "nfc", "expires_in_s": 90},
    )
    assert stream.next() == ("alarms", {"active": ["outbox_full"]})
    assert stream.quiet() == []


def test_alarms_are_sent_when_they_change(rig: Rig) -> None:
    stream = rig.connect()
    rig.feed.set_alarms(["outbox_full"])
    assert stream.expect("alarms") == {"active": ["outbox_full"]}
    rig.feed.set_alarms(["outbox_full"])  # the heartbeat repeats itself every second: nothing new
    assert stream.quiet() == []
    rig.feed.set_alarms(["outbox_full", "nfc-reader_absent", "outbox_full", "<script>", ""])
    assert stream.expect("alarms") == {"active": ["outbox_full", "nfc-reader_absent"]}
    rig.feed.set_alarms([])
    assert stream.expect("alarms") == {"active": []}


# -- bounded: slow screens, too many screens, stopping ----------------------------------------------------


def test_slow_screens_never_block_the_publisher() -> None:
    notifier = Notifier()
    feed = CashierFeed(notifier, keepalive=KEEPALIVE, max_streams=4, queue_size=8)
    streams = [Stream(feed.stream()) for _ in range(4)]
    for stream in streams:  # connected, then nobody reads
        assert [name for name, _ in (stream.next(), stream.next())] == ["customer", "alarms"]
    count = 5000
    started = time.perf_counter()
    for i in range(count):
        notifier.publish(ScanNotice("receipt", f"RC{i:08d}", "scanner"))
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"publishing {count} scans to 4 stalled screens took {elapsed:.2f} s"
    assert feed.dropped == 4 * (count - 8)
    for stream in streams:  # each holds the newest 8, in order
        got = [data["value"] for _, data in (stream.next() for _ in range(8))]
        assert got == [f"RC{i:08d}" for i in range(count - 8, count)]
        assert stream.quiet(KEEPALIVE * 2) == []
    feed.close()
    for stream in streams:
        assert stream.to_end() == [("end", {"reason": "shutdown"})]


def test_a_stalled_http_client_does_not_block_others(rig: Rig) -> None:
    """Through a real server: a client that never reads, and one that does, while scans pour in."""
    server = WsgiServer(rig.app, "127.0.0.1", 0, name="POS API", setting="pos.port", threads=4)
    server.start()
    try:
        stalled = _raw_stream(server.port, rig.token)
        reading = _raw_stream(server.port, rig.token)
        _wait(lambda: rig.feed.open_streams == 2, "two streams")
        started = time.perf_counter()
        for i in range(2000):
            rig.intake.code_scanned(f"RC{i:08d}", "scanner")
        assert time.perf_counter() - started < 5.0
        received = bytearray()
        deadline = time.monotonic() + 5
        while b"RC00001999" not in received and time.monotonic() < deadline:
            received += reading.recv(65536)
        assert b"RC00001999" in received
        stalled.close()
        reading.close()
    finally:
        rig.feed.close()
        server.stop()


def _raw_stream(port: int, token: str) -> Any:
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        f"GET /pos/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    return sock


def _wait(predicate: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_fifth_screen_ends_the_oldest_stream(rig: Rig) -> None:
    streams = [rig.connect() for _ in range(4)]
    newest = rig.connect()
    assert streams[0].to_end() == [("end", {"reason": "evicted"})]
    assert rig.feed.open_streams == 4 and rig.feed.evicted == 1
    rig.intake.assistance_requested("button")
    for stream in [*streams[1:], newest]:
        assert stream.expect("assist") == {"device": "button"}


def test_close_ends_every_stream_and_refuses_new_ones(rig: Rig) -> None:
    streams = [rig.connect() for _ in range(3)]
    closer = threading.Thread(target=rig.feed.close)
    closer.start()
    closer.join(1)
    assert not closer.is_alive()
    for stream in streams:
        assert stream.to_end() == [("end", {"reason": "shutdown"})]
    assert rig.feed.open_streams == 0
    refused = rig.client.get("/pos/v1/events", headers=rig.auth())
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    documented = DOC["paths"]["/pos/v1/events"]["get"]["responses"]["503"]
    assert refused.get_json() == documented["content"]["application/problem+json"]["example"]
    rig.tap()  # after close the feed no longer listens; nothing breaks
    rig.feed.close()  # idempotent


def test_a_stream_that_goes_away_frees_its_slot(rig: Rig) -> None:
    _, response = rig.open()
    assert rig.feed.open_streams == 1
    response.close()  # what the server does when a write to a closed connection fails
    assert rig.feed.open_streams == 0


# -- the console page -------------------------------------------------------------------------------------


def test_the_console_is_a_public_static_shell_with_a_strict_policy(rig: Rig) -> None:
    rig.tap()  # whatever is going on, the page carries no data
    page = rig.client.get("/pos/console")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert html == (ROOT / "edge" / "pos" / "templates" / "console.html").read_text(encoding="utf-8")
    assert page.headers["Content-Security-Policy"] == CONSOLE_CSP
    assert "unsafe" not in CONSOLE_CSP and "script-src 'self'" in CONSOLE_CSP
    assert page.headers["Cache-Control"] == "no-store" and page.headers["X-Frame-Options"] == "DENY"
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/pos/console/console.js" defer>']
    assert "<style" not in html and not re.search(r"<[^>]*\s(style|on\w+)\s*=", html, re.IGNORECASE)
    for path, mimetype in (
        ("/pos/console/console.js", "text/javascript"),
        ("/pos/console/console.css", "text/css"),
    ):
        asset = rig.client.get(path)
        assert asset.status_code == 200 and asset.mimetype == mimetype, path
    script = rig.client.get("/pos/console/console.js").get_data(as_text=True)
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
        assert forbidden not in script, forbidden
    assert "new EventSource" not in script and "sessionStorage" in script and "Authorization" in script
    assert rig.client.get("/pos/console/other.js").status_code == 401  # only the shell is public


# -- the console in a browser -----------------------------------------------------------------------------


@pytest.fixture
def served(rig: Rig) -> Iterator[str]:
    server = WsgiServer(rig.app, "127.0.0.1", 0, name="POS API", setting="pos.port", threads=8)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        rig.feed.close()  # ends the page's stream, or the server would wait for it
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with touch_context(browser) as context:
        yield context.new_page()


def test_the_console_shows_the_till_live_and_treats_data_as_text(rig: Rig, served: str, page: Page) -> None:
    watch = PageWatch.attach(page, served)
    page.goto(f"{served}/pos/console")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", "kpos_mistyped-token-0000")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("refused")
    page.fill("#token", rig.token)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#status")).to_have_text("Connected")
    expect(page.locator("#customer")).to_have_text("Nobody")

    rig.tap()
    token = rig.pseudonymizer.card_token(UID)
    expect(page.locator("#customer")).to_have_text("…" + token[-6:])
    expect(page.locator("#customer-source")).to_have_text("Card tap")
    expect(page.locator("#countdown")).to_contain_text(re.compile(r"[12]:\d\d left"))

    rig.intake.code_scanned(GTIN, "scanner")
    expect(page.locator("#scans li").first).to_contain_text("04006381333931")
    hostile = '<img src=x onerror="alert(1)">'
    rig.intake.assistance_requested(hostile)
    expect(page.locator("#assist-panel")).to_have_attribute("data-active", "true")
    expect(page.locator("#assists li").first).to_contain_text(hostile)  # shown as text, never as markup
    assert page.locator("#assists img").count() == 0
    page.locator("#assists .done").first.click()
    expect(page.locator("#assist-panel")).to_have_attribute("data-active", "false")

    rig.feed.set_alarms(["outbox_full", "scanner_absent"])
    expect(page.locator("#alarms li")).to_have_text(["Storage full: sales may be refused", "Scanner missing"])
    rig.feed.set_alarms([])
    expect(page.locator("#no-alarms")).to_be_visible()

    assert rig.client.delete("/pos/v1/till/customer", headers=rig.auth()).status_code == 204
    expect(page.locator("#customer")).to_have_text("Nobody")
    text = page.locator("body").inner_text()
    assert_absent(text, UID.hex(), token, rig.token)

    assert rig.pairing.revoke("till-1")
    expect(page.locator("#login")).to_be_visible(timeout=KEEPALIVE * 1000 + 3000)
    expect(page.locator("#login-error")).to_contain_text("unpaired")
    assert page.evaluate("() => sessionStorage.length") == 0
    # the deliberate 401 of the mistyped token is the only error the browser may report
    watch.console_errors = [e for e in watch.console_errors if "401" not in e]
    watch.assert_clean(page)
