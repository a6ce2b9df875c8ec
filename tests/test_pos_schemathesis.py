"""The POS API fuzzed against its own OpenAPI 3.1 document with schemathesis, in process.

The document the node ships (and serves at ``/pos/v1/openapi.json``) drives the generation, operation by
operation: its examples, then schemathesis's coverage cases (boundaries, missing and unknown members,
wrong types, undeclared methods), then random positive and negative (schema-violating, hostile) requests.
Every answer is checked against the document: no server error; a documented status code, content type,
body and headers; schema-violating input refused; no secured operation usable without the token. On top
of schemathesis's checks (``FUZZ_CHECKS``): every 4xx is an RFC 9457 problem document, every answer
carries ``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff``, every event of the cashier's
stream is a documented one, and every sale the API accepts is in the outbox exactly once, as sent (after
normalisation), and replays identically; a second property sends sales made valid beyond the schema
(check digits, totals, currencies, sold_at) so that most are accepted.

The node is real and in one process, as in ``test_pos_api.py`` and wired as ``edge.node`` wires it: a
SQLite outbox, pairing, till session, sale service, member directory, cashier feed, redemptions (with a
stand-in for the central receiver that checks the node's signature), pick-ups and the staff page, in a
temporary directory shared by every operation of the module. The till is paired once, before the
fuzzing, with a real code; the fuzzed ``/pair`` requests then use up the wrong-code budget and lock
pairing (``429``, documented), which must not affect the paired till. The bearer token goes with every
request except to the public operations (``security: []``: pairing, this document, the staff page and
the console's static files).

Hypothesis is derandomized (the same requests on every run) and keeps no example database.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from nacl.signing import VerifyKey
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from stdnum import ean

from cloud_sync.codes import make_member_code
from cloud_sync.envelope import Signer, verify
from cloud_sync.outbox import Outbox
from cloud_sync.relay import RequestUnavailable
from edge.identity import Pseudonymizer
from edge.keys import init_keys, load_signing_key
from edge.members import MemberDirectory, MemberSummary
from edge.notify import IdentityNotice, Notifier
from edge.pos.api import create_pos_app, openapi_document
from edge.pos.events import CashierFeed
from edge.pos.pairing import Pairing
from edge.pos.pickup import PickupService
from edge.pos.redeem import OfflineAllowance, RedemptionService
from edge.pos.sales import SaleService
from edge.pos.staff import StaffPin, set_pin
from edge.pos.till import TillSession

KEY = bytes(range(32))
DOCUMENT: dict[str, Any] = json.loads(openapi_document())
#: Random requests per operation in schemathesis's fuzzing phase (examples and coverage cases come on top).
FUZZ_EXAMPLES = 80
#: Sales in the acceptance property (each is sent twice: once recorded, once replayed).
SALE_EXAMPLES = 60
PUBLIC = frozenset(
    path
    for path, item in DOCUMENT["paths"].items()
    for operation in item.values()
    if operation.get("security") == []
)
PROBLEM_TYPE = "https://kiosk-edge.invalid/problems/"
#: The member in the document's examples (M1234567894): known to the node, so answers carry a MemberSummary.
EXAMPLE_MEMBER = "M1234567894"
#: A few currencies in use (ISO 4217, legal tender today); the schema's pattern alone admits any 3 letters.
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "JPY", "SEK", "PLN", "CZK")
REDEMPTION_TOPIC = "retail/v1/store-7/till-node/request/redemption"
STAFF_PIN = "246810"


# -- the node ----------------------------------------------------------------------------------------


class _CurrentApp:
    """The WSGI app schemathesis calls; the module's node is plugged in by the ``node`` fixture.

    The schema is loaded at import time (``schema.parametrize()`` needs it then), the node only in a
    fixture; ``from_fixture`` would join them, but it does not run under pytest 9 (``Function._nodeid``).
    Setting ``schema.app`` (not only passing ``app=`` to ``call``) matters: the ``ignored_auth`` check
    sends its probes through the schema's transport.
    """

    app: Flask | None = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        assert self.app is not None, "the node fixture is not active"
        return self.app(environ, start_response)


CURRENT_APP = _CurrentApp()
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.app = CURRENT_APP
schema.config.generation.update(max_examples=FUZZ_EXAMPLES, deterministic=True, database="none")
# GET /pos/v1/events never ends: read what it sends on connect (customer, alarms), then let it go
schema.config.max_stream_events = 2


@dataclass
class Central:
    """The central receiver's side of a redemption (a ``Requester``): checks the node's signature, then
    approves, declines, is offline or times out, chosen by the reward's name (so the fuzzing meets all)."""

    verify_key: VerifyKey

    def __call__(self, topic: str, payload: bytes, timeout: float) -> bytes:
        assert topic == REDEMPTION_TOPIC
        request = verify(payload, self.verify_key)["body"]
        outcome = sum(request["reward"].encode()) % 4
        if outcome == 2:
            raise RequestUnavailable("not connected to the broker")
        if outcome == 3:
            raise TimeoutError("no answer in time")
        reply: dict[str, Any] = {"request_id": request["request_id"], "approved": outcome == 0}
        if outcome == 0:
            reply["points_balance"] = 1140
        else:
            reply.update(reason="insufficient-points", points_balance=40)
        return json.dumps(reply).encode()


@dataclass
class Node:
    app: Flask
    client: FlaskClient
    outbox: Outbox
    pairing: Pairing
    notifier: Notifier
    members: MemberDirectory
    token: str
    path: Path
    verify_key: VerifyKey

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp_path = tmp_path_factory.mktemp("pos-node")
    init_keys(tmp_path, None)
    signer_key = load_signing_key(tmp_path)
    outbox = Outbox(tmp_path / "outbox.sqlite3", Signer(signer_key, "store-7", "till-node"), "retail/v1")
    notifier = Notifier()
    pseudonymizer = Pseudonymizer(KEY)
    feed = CashierFeed(notifier)  # wired as edge.node wires it
    till = TillSession(pseudonymizer, 120, on_change=feed.customer_changed)
    feed.follow(till)
    notifier.subscribe(till.on_notice)
    members = MemberDirectory()
    members.remember(
        pseudonymizer.barcode_token(EXAMPLE_MEMBER),
        MemberSummary(EXAMPLE_MEMBER, "Ana", "gold", 1240, ("free-coffee",)),
    )
    sales = SaleService(outbox, till, members)
    pairing = Pairing(tmp_path / "local.sqlite3")
    # every optional service, as edge.node passes them (the allowance in the node's local database)
    allowance = OfflineAllowance(tmp_path / "local.sqlite3", 1)
    redemptions = RedemptionService(outbox, till, Central(signer_key.verify_key), REDEMPTION_TOPIC, allowance)
    set_pin(tmp_path, STAFF_PIN)
    app = create_pos_app(
        pairing,
        till,
        sales,
        members,
        node={"store": "store-7", "node": "till-node"},
        redemptions=redemptions,
        pickups=PickupService(outbox),
        events=feed,
        staff=StaffPin(tmp_path, max_failures=5, lockout=300.0),
    )
    client = app.test_client()
    # paired once, before any fuzzing, with a real code: the fuzzed /pair requests lock pairing later
    reply = client.post(
        "/pos/v1/pair", json={"code": pairing.new_code().code, "pos_id": "till-1", "name": "Till 1"}
    )
    assert reply.status_code == 201, reply.get_json()
    assert client.get("/pos/v1/openapi.json").get_data() == openapi_document()  # what is fuzzed is served
    CURRENT_APP.app = app
    try:
        yield Node(
            app,
            client,
            outbox,
            pairing,
            notifier,
            members,
            reply.get_json()["token"],
            tmp_path / "outbox.sqlite3",
            signer_key.verify_key,
        )
    finally:
        CURRENT_APP.app = None
        feed.close()
        outbox.close()
        allowance.close()
        pairing.close()


_SERIAL = count(1)


def _tap(node: Node, *, member: bool) -> None:
    """A customer taps a card at the till (a new card each time); ``member``: the node knows them."""
    token = f"{next(_SERIAL):064x}"
    if member:
        summary = MemberSummary(make_member_code(7), "Zoë", "silver", 10, ("free-coffee",))
        node.members.remember(token, summary)
    node.notifier.publish(IdentityNotice("nfc", token, "nfc0", "ntag", None, "id", 1))


def _last_seq(node: Node) -> int:
    """The outbox's last event seq (events of every type)."""
    conn = sqlite3.connect(node.path)
    try:
        return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0])
    finally:
        conn.close()


def _sale_events(node: Node, after: int) -> list[dict[str, Any]]:
    """The ``sale`` events after seq ``after`` in the outbox, signatures checked, in seq order."""
    conn = sqlite3.connect(node.path)
    try:
        rows = conn.execute(
            "SELECT payload FROM outbox WHERE event_type = 'sale' AND seq > ? ORDER BY seq", (after,)
        ).fetchall()
    finally:
        conn.close()
    return [verify(bytes(row[0]), node.verify_key) for row in rows]


# -- checks added to schemathesis's -------------------------------------------------------------------


def _header(response: schemathesis.Response, name: str) -> str | None:
    values = response.headers.get(name.lower())
    return values[0] if values else None


def _documented_media_types(case: schemathesis.Case[Any], status: int) -> set[str]:
    operation = DOCUMENT["paths"][case.operation.path].get(case.method.lower(), {})  # TRACE: none
    answer = operation.get("responses", {}).get(str(status), {})
    if "$ref" in answer:
        answer = DOCUMENT["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return set(answer.get("content", {}))


def problem_documents(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """Every 4xx answer is an RFC 9457 problem: application/problem+json with type, title, status, detail.

    The one exception is the document's own: the staff pairing page "is for a person and answers in
    HTML, also when it refuses" (its 403, 404 and 429 are documented as text/html only).
    """
    if not 400 <= response.status_code < 500:
        return None
    if _documented_media_types(case, response.status_code) == {"text/html"}:
        return None
    content_type = (_header(response, "Content-Type") or "").split(";")[0].strip()
    assert content_type == "application/problem+json", (
        f"{response.status_code} answered as {content_type!r}, not application/problem+json"
    )
    problem = response.json()
    assert isinstance(problem, dict), f"the problem document is not a JSON object: {problem!r}"
    for member, kind in (("type", str), ("title", str), ("status", int), ("detail", str)):
        assert isinstance(problem.get(member), kind), f"problem member {member!r} missing or not {kind}"
    assert problem["type"].startswith(PROBLEM_TYPE), f"problem type {problem['type']!r}"
    assert problem["status"] == response.status_code, (
        f"status {problem['status']} in a {response.status_code}"
    )
    return None


def no_store_headers(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """The document's promise for every response: ``Cache-Control: no-store``, ``nosniff``."""
    assert _header(response, "Cache-Control") == "no-store", "Cache-Control: no-store missing"
    assert _header(response, "X-Content-Type-Options") == "nosniff", "X-Content-Type-Options missing"
    return None


def _sse_validators() -> dict[str, Draft202012Validator]:
    """A validator per documented event name (``x-events`` of GET /pos/v1/events), refs into the document."""
    content = DOCUMENT["paths"]["/pos/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    return {
        name: Draft202012Validator({**ref, "components": DOCUMENT["components"]})
        for name, ref in content["x-events"].items()
    }


SSE_EVENTS = _sse_validators()


def event_stream_events(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """Every event of a ``text/event-stream`` answer is a documented one and its data fits its schema;
    the stream starts with the current state: ``customer``, then ``alarms``."""
    content_type = (_header(response, "Content-Type") or "").split(";")[0].strip()
    if response.status_code != 200 or content_type != "text/event-stream":
        return None
    names = []
    for block in response.content.decode("utf-8").replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.partition(":")[::2] for line in lines)
        name, data = fields.get("event", "").strip(), fields.get("data")
        assert name in SSE_EVENTS and data is not None, f"undocumented event block {block!r}"
        errors = [e.message for e in SSE_EVENTS[name].iter_errors(json.loads(data))]
        assert not errors, f"event {name} {data!r}: {errors}"
        names.append(name)
    assert names[:2] == ["customer", "alarms"], f"the stream started with {names}"
    return None


CheckFunction = Callable[
    [schemathesis.CheckContext, schemathesis.Response, schemathesis.Case[Any]], bool | None
]

#: Every schemathesis check that applies to this API, and ours. Left out, on purpose:
#: - ``positive_data_acceptance`` (schema-valid input must get a 2xx): the document itself lists rules
#:   the schema cannot express (GS1 check digits, totals, currencies in use, the sold_at window, member
#:   code check digits) and answers them with a documented 422, so schema-valid is not valid here;
#: - ``unsupported_method``: runs once per operation in the coverage phase and, when it fails, stops that
#:   operation's fuzzing; it is asserted on its own in ``test_undeclared_methods_are_405_with_allow``.
FUZZ_CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    missing_required_header,
    ignored_auth,
    problem_documents,
    no_store_headers,
    event_stream_events,
]


#: For the event stream, ``response_schema_conformance`` is replaced by ``event_stream_events``, which is
#: stricter. In this OpenAPI 3.1 document the stream's ``schema`` is ``{"type": "string"}`` (the body as a
#: whole, right for 3.1) and each event's schema is under the vendor extension ``x-events``; schemathesis 4
#: reads a pre-3.2 ``text/event-stream`` ``schema`` as the schema of *each* event (3.2's ``itemSchema``)
#: and so fails every answer with "SSE event violates schema: ... is not of type string".
STREAM_CHECKS = [check for check in FUZZ_CHECKS if check is not response_schema_conformance]


def _send(case: schemathesis.Case[Any], node: Node) -> schemathesis.Response:
    headers = None if case.path in PUBLIC else node.auth()
    stream = case.operation.path == "/pos/v1/events"
    return case.call_and_validate(headers=headers, checks=STREAM_CHECKS if stream else FUZZ_CHECKS)


# -- a sale the API accepted --------------------------------------------------------------------------


def _expected_line(line: dict[str, Any]) -> dict[str, Any]:
    """A request line as the event must hold it: GTIN as 14 digits, name stripped, the rest as sent."""
    out: dict[str, Any] = {"gtin": line["gtin"].zfill(14)} if "gtin" in line else {"sku": line["sku"]}
    out.update(
        name=line["name"].strip(),
        quantity=line["quantity"],
        unit_price=line["unit_price"],
        category=line["category"],
    )
    return out


def _check_accepted_sale(
    node: Node, case: schemathesis.Case[Any], response: schemathesis.Response, before: int
) -> None:
    """A 201: exactly one new sale event, holding the request; the same request again is a 200 replay.

    ``before``: the outbox's last seq before the request. The request is read as it was sent.
    """
    sent = response.request.body
    assert isinstance(sent, bytes | str), sent
    request = json.loads(sent)
    answer = response.json()
    key = response.request.headers.get("Idempotency-Key")
    events = _sale_events(node, before)
    assert len(events) == 1, f"{len(events)} new sale events for one 201"
    [event] = events
    body = event["body"]
    assert event["id"] == answer["event_id"] and event["seq"] == answer["seq"]
    assert body["receipt"] == answer["receipt"] == key and body["pos"] == "till-1"
    assert body["lines"] == [_expected_line(line) for line in request["lines"]]
    assert body["total"] == request["total"] and body["currency"] == request["currency"]
    assert body["payment"] == request["payment"]
    assert body.get("discount", 0) == request.get("discount", 0)
    assert body.get("survey", False) is request.get("survey", False) is answer["survey"]
    if "sold_at" in request:
        sold = datetime.fromisoformat(request["sold_at"].upper())
        stored = datetime.fromisoformat(body["sold_at"].replace("Z", "+00:00"))
        assert body["sold_at"].endswith("Z") and abs(sold - stored) < timedelta(milliseconds=1)
    else:
        assert "sold_at" not in body
    assert ("customer" in body) is (answer["customer"] is not None)

    replay = case.call(headers=node.auth())
    case.validate_response(replay, checks=FUZZ_CHECKS, headers=node.auth())
    assert replay.status_code == 200, replay.text
    assert _header(replay, "Idempotent-Replayed") == "true"
    assert replay.json() == answer
    assert _sale_events(node, event["seq"]) == [], "a replay created an event"


# -- schemathesis: every operation against the document ----------------------------------------------


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_conforms_to_the_document(case: schemathesis.Case[Any], node: Node) -> None:
    if case.operation.path == "/pos/v1/redemptions" and next(_SERIAL) % 4:
        _tap(node, member=True)  # mostly with a member present: the others get the documented 409
    before = _last_seq(node)
    response = _send(case, node)
    if case.operation.path == "/pos/v1/sales" and response.status_code == 201:
        _check_accepted_sale(node, case, response, before)
    elif response.status_code != 201:
        assert _sale_events(node, before) == [], f"a {response.status_code} recorded a sale"


# -- every accepted sale is in the outbox once, as sent ----------------------------------------------

SALES = schema["/pos/v1/sales"]["POST"]


def _valid_gtin(gtin: str) -> str:
    return gtin[:-1] + ean.calc_check_digit(gtin[:-1])


def _valid_sale(body: dict[str, Any], currency: str, sold_ago: int | None) -> dict[str, Any]:
    """A schema-valid generated sale, made to also pass the rules the schema cannot express.

    Only what those rules need is changed (check digits, an empty name, the total, the currency, sold_at
    within the window, integral numbers as integers); names, SKUs, categories, quantities, prices and
    the other members are left as generated.
    """
    lines = []
    for generated in body["lines"]:
        # JSON Schema's "integer" admits 28.0; the document's prose and the node refuse it (a 422)
        line = {
            **generated,
            "quantity": int(generated["quantity"]),
            "unit_price": int(generated["unit_price"]),
        }
        if "gtin" in line:
            line["gtin"] = _valid_gtin(line["gtin"])
        if not line["name"].strip():
            line["name"] += "x"
        lines.append(line)
    gross = sum(line["quantity"] * line["unit_price"] for line in lines)
    if abs(gross) > 10**12:
        for line in lines:
            line["unit_price"] %= 1000
        gross = sum(line["quantity"] * line["unit_price"] for line in lines)
    sale = {**body, "lines": lines, "currency": currency}
    discount = min(int(sale.get("discount", 0)), abs(gross))
    if "discount" in sale:
        sale["discount"] = discount
    sale["total"] = gross - discount if gross >= 0 else gross + discount
    if sold_ago is None:
        sale.pop("sold_at", None)
    else:
        sale["sold_at"] = (datetime.now(UTC) - timedelta(seconds=sold_ago)).isoformat()
    return sale


@settings(
    max_examples=SALE_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    case=SALES.as_strategy(),
    currency=st.sampled_from(CURRENCIES),
    sold_ago=st.none() | st.integers(min_value=-240, max_value=29 * 24 * 3600),
    tap=st.sampled_from([None, "unknown", "member"]),
)
def test_every_accepted_sale_is_recorded_once_as_sent_and_replays(
    node: Node, case: schemathesis.Case[Any], currency: str, sold_ago: int | None, tap: str | None
) -> None:
    assert isinstance(case.body, dict)
    case.body = _valid_sale(case.body, currency, sold_ago)
    # a fresh receipt id: the generated one, made unique in this run
    assert case.headers is not None
    key = case.headers["Idempotency-Key"]
    case.headers["Idempotency-Key"] = f"{next(_SERIAL)}-{key}"[:48]
    if tap is not None:
        _tap(node, member=tap == "member")
    before = _last_seq(node)
    response = _send(case, node)
    assert response.status_code == 201, response.text
    _check_accepted_sale(node, case, response, before)


# -- what the fuzzing does not show on its own ----------------------------------------------------------


def test_pairing_locks_out_but_the_paired_till_keeps_working(node: Node) -> None:
    """Wrong codes (the fuzzing sends hundreds) lock pairing for everyone, not the till already paired."""
    for _ in range(node.pairing.max_failures):
        reply = node.client.post("/pos/v1/pair", json={"code": "000000", "pos_id": "laptop", "name": "x"})
    assert reply.status_code == 429 and int(reply.headers["Retry-After"]) >= 1
    code = node.pairing.new_code().code  # even a fresh, right code is refused while locked
    locked = node.client.post("/pos/v1/pair", json={"code": code, "pos_id": "laptop", "name": "x"})
    assert locked.status_code == 429
    assert node.client.get("/pos/v1/till", headers=node.auth()).status_code == 200


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "TRACE")


def test_undeclared_methods_are_405_with_allow(node: Node) -> None:
    """The document: another method on a known path is a 405 (``method``), after authentication.
    RFC 9110 §15.5.6: "The origin server MUST generate an Allow header field in a 405 response"."""
    wrong = []
    for path, item in sorted(DOCUMENT["paths"].items()):
        declared = {method.upper() for method in item if method.upper() in METHODS}
        url = path.replace("{code}", "R12345671")
        allows = {}
        for method in sorted(set(METHODS) - declared):
            reply = node.client.open(url, method=method, headers=node.auth())
            assert reply.status_code == 405, (method, path, reply.status_code)
            assert reply.mimetype == "application/problem+json", (method, path, reply.mimetype)
            assert reply.get_json()["type"] == PROBLEM_TYPE + "method", (method, path)
            allows[method] = reply.headers.get("Allow")
        missing = {
            method: allow
            for method, allow in allows.items()
            if not declared <= {m.strip() for m in (allow or "").split(",")}
        }
        if missing:
            wrong.append(f"{url} (declares {sorted(declared)}): 405 with Allow {missing}")
    assert not wrong, "405 without the methods it supports in Allow:\n" + "\n".join(wrong)
