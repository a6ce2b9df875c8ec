"""The POS API's OpenAPI document: valid, complete, its examples valid, and true of the running API.

Three layers: the document on its own (OpenAPI 3.1, formatting, the copy in docs/, an example request on
every operation, every example valid against its schema and the sale rules); the document against the
Flask app's routes (no undocumented route, no documented one missing); and the document against the
real app over real pairing, till and outbox services: every example request gets a documented answer, and
every documented status of every operation is produced and its body, content type and headers match.

The app is built with every optional service the node passes (``edge.node.Node._make_pos``): reward
redemptions (whose central receiver is a stand-in that checks the signed request and answers like the real
one), reservation pick-ups, the staff pairing page (with a PIN set) and the cashier's event feed, so the
route check covers every operation the node serves.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from nacl.signing import SigningKey, VerifyKey
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from werkzeug.test import TestResponse

from cloud_sync.central.program import LoyaltySection
from cloud_sync.codes import make_reservation_code, normalize_member_code
from cloud_sync.envelope import Signer, verify
from cloud_sync.errors import OutboxClosed, OutboxFull
from cloud_sync.loyalty import points_for
from cloud_sync.outbox import Outbox, OutboxUnavailable
from cloud_sync.relay import RequestUnavailable
from edge.identity import Pseudonymizer
from edge.members import MemberDirectory, MemberSummary
from edge.pos.api import MAX_BODY, create_pos_app
from edge.pos.events import CashierFeed
from edge.pos.pairing import Pairing
from edge.pos.pickup import PickupService
from edge.pos.redeem import OfflineAllowance, RedemptionService
from edge.pos.sale import validate_sale
from edge.pos.sales import SaleService
from edge.pos.staff import PIN_FILE, StaffPin, set_pin
from edge.pos.till import TillSession

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "edge" / "pos" / "openapi.json"
DOCS_COPY = ROOT / "docs" / "openapi.json"
BASE_URI = "urn:kiosk-edge:pos-openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PROBLEM_BASE = "https://kiosk-edge.invalid/problems/"

DOC: dict[str, Any] = json.loads(DOC_PATH.read_text(encoding="utf-8"))
OPERATIONS: list[tuple[str, str]] = [
    (path, method) for path, item in DOC["paths"].items() for method in HTTP_METHODS if method in item
]
REGISTRY: Registry[Any] = Registry().with_resource(BASE_URI, DRAFT202012.create_resource(DOC))


def escape(token: str) -> str:
    """One JSON pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str) -> str:
    return "".join("/" + escape(t) for t in tokens)


def resolve(pointer_: str) -> Any:
    node: Any = DOC
    for token in pointer_.split("/")[1:]:
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def deref(obj: dict[str, Any], at: str) -> tuple[dict[str, Any], str]:
    """Follow a local ``$ref`` (responses, parameters, headers): the object and its pointer."""
    while "$ref" in obj:
        at = obj["$ref"].removeprefix("#")
        obj = resolve(at)
    return obj, at


def validator_at(schema_pointer: str) -> Draft202012Validator:
    """A validator for the schema at ``schema_pointer`` whose ``$ref``s resolve within the document."""
    return Draft202012Validator(
        {"$ref": f"{BASE_URI}#{schema_pointer}"},
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def assert_valid(instance: Any, schema_pointer: str, label: str) -> None:
    errors = sorted(validator_at(schema_pointer).iter_errors(instance), key=lambda e: str(list(e.path)))
    assert not errors, f"{label}: " + "; ".join(
        f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors
    )


def operation(path: str, method: str) -> dict[str, Any]:
    op: dict[str, Any] = DOC["paths"][path][method]
    return op


def is_protected(op: dict[str, Any]) -> bool:
    return bool(op.get("security", DOC.get("security", [])))


def media_examples(media: dict[str, Any]) -> list[tuple[str, Any]]:
    """The examples of one media type (or parameter, or header) object: (name, value)."""
    found: list[tuple[str, Any]] = []
    if "example" in media:
        found.append(("example", media["example"]))
    for name, entry in media.get("examples", {}).items():
        example, _ = deref(entry, "")
        found.append((name, example["value"]))
    return found


def request_examples(path: str, method: str, media_type: str = "application/json") -> list[tuple[str, Any]]:
    body = operation(path, method).get("requestBody", {}).get("content", {}).get(media_type, {})
    return media_examples(body)


def is_page(op: dict[str, Any]) -> bool:
    """An HTML page for a person (the staff page): it refuses in HTML too, not with a problem document."""
    if "200" not in op["responses"]:
        return False
    ok, _ = deref(op["responses"]["200"], "")
    return "text/html" in ok.get("content", {})


@dataclass(frozen=True)
class Example:
    label: str
    value: Any
    schema: str  # JSON pointer of the schema it must satisfy


def all_examples() -> list[Example]:
    """Every example in the document, with the pointer of the schema it belongs to."""
    found: list[Example] = []

    def media_type(media: dict[str, Any], at: str, label: str) -> None:
        for name, value in media_examples(media):
            found.append(Example(f"{label} ({name})", value, at + "/schema"))

    for path, method in OPERATIONS:
        op = operation(path, method)
        at = pointer("paths", path, method)
        label = f"{method.upper()} {path}"
        for i, entry in enumerate(op.get("parameters", [])):
            param, p_at = deref(entry, f"{at}/parameters/{i}")
            media_type(param, p_at, f"{label} parameter {param['name']}")
        for mt, media in op.get("requestBody", {}).get("content", {}).items():
            media_type(media, f"{at}/requestBody/content/{escape(mt)}", f"{label} request {mt}")
        for status, entry in op["responses"].items():
            response, r_at = deref(entry, f"{at}/responses/{status}")
            for name, header_entry in response.get("headers", {}).items():
                header, h_at = deref(header_entry, f"{r_at}/headers/{escape(name)}")
                media_type(header, h_at, f"{label} {status} header {name}")
            for mt, media in response.get("content", {}).items():
                media_type(media, f"{r_at}/content/{escape(mt)}", f"{label} {status} {mt}")
    return found


EXAMPLES = all_examples()


# -- the document on its own -------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"
    validate(DOC, cls=OpenAPIV31SpecValidator)
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_document_is_formatted_and_copied_to_docs() -> None:
    text = DOC_PATH.read_text(encoding="utf-8")
    assert text == json.dumps(DOC, indent=2, ensure_ascii=False) + "\n", "2-space JSON ending in a newline"
    assert list(DOC) == ["openapi", "info", "servers", "security", "tags", "paths", "components"]
    assert DOCS_COPY.read_bytes() == DOC_PATH.read_bytes(), "docs/openapi.json must be a byte-identical copy"


def test_servers_security_and_overview() -> None:
    [server] = DOC["servers"]
    assert server["url"] == "http://{node}:8081"
    assert server["variables"]["node"]["default"] == "kiosk-node.local"
    scheme = DOC["components"]["securitySchemes"]["pairedTill"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert DOC["security"] == [{"pairedTill": []}]
    overview = DOC["info"]["description"]
    for needed in (
        "kiosk-edge pair",  # pairing
        "same key and the same sale",  # idempotency
        "no second event",
        "`409`",
        "minor units",  # money
        "negative",  # returns
        "attached to them",  # the customer at the till
        "offline allowance",  # rewards
        "once per code",  # pick-ups
        "`/pos/staff`",  # the staff pairing page, public
    ):
        assert needed in overview, needed
    assert {"Problem", "FieldError", "SaleRequest", "SaleLine", "SaleResponse", "TillState"} <= set(
        DOC["components"]["schemas"]
    )
    assert {"MemberSummary", "PairRequest", "PairResponse"} <= set(DOC["components"]["schemas"])
    assert {
        "RedemptionRequest",
        "RedemptionResponse",
        "RedemptionApproved",
        "RedemptionDeclined",
        "PickupRequest",
        "PickupResponse",
        "StaffPinForm",
    } <= set(DOC["components"]["schemas"])


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_every_operation_is_described(path: str, method: str) -> None:
    op = operation(path, method)
    for key in ("operationId", "summary", "description", "security", "tags", "responses"):
        assert op.get(key) is not None, f"{method.upper()} {path} has no {key}"
    if is_protected(op):
        assert op["security"] == [{"pairedTill": []}]
        unauthorised, _ = deref(op["responses"]["401"], "")
        assert unauthorised["headers"]["WWW-Authenticate"]["required"] is True
    for status, entry in op["responses"].items():
        response, _ = deref(entry, "")
        if int(status) >= 400 and "text/html" in response["content"]:
            assert is_page(op), f"{method.upper()} {path} {status}: HTML from an API operation"
            assert list(response["content"]) == ["text/html"]
            assert media_examples(response["content"]["text/html"]), f"{status}: no example"
        elif int(status) >= 400:
            media = response["content"]["application/problem+json"]
            assert media["schema"]["allOf"][0] == {"$ref": "#/components/schemas/Problem"}
            assert media_examples(media), f"{method.upper()} {path} {status}: no example"
        elif "content" in response and path != "/pos/v1/openapi.json":
            assert all(media_examples(m) for m in response["content"].values()), f"{status}: no example"


def test_operation_ids_are_unique() -> None:
    ids = [operation(p, m)["operationId"] for p, m in OPERATIONS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_every_operation_has_an_example_request(path: str, method: str) -> None:
    op = operation(path, method)
    if "requestBody" in op:
        for media_type, media in op["requestBody"]["content"].items():
            assert media_examples(media), f"an operation with a body needs an example body ({media_type})"
    else:
        example = op["x-example-request"]
        assert example["method"] == method.upper()
        assert example["path"] == path
        assert ("Authorization" in example.get("headers", {})) == is_protected(op)
    for entry in op.get("parameters", []):
        param, _ = deref(entry, "")
        if param.get("required"):
            assert media_examples(param), f"required parameter {param['name']} needs an example"


def test_examples_were_found() -> None:
    labels = [e.label for e in EXAMPLES]
    assert len(labels) > 30
    assert any("POST /pos/v1/sales request" in label for label in labels)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.label for e in EXAMPLES])
def test_example_matches_its_schema(example: Example) -> None:
    assert_valid(example.value, example.schema, example.label)


def test_sale_examples_obey_the_rules_the_schema_cannot_express() -> None:
    examples = request_examples("/pos/v1/sales", "post")
    assert {"sale", "return"} <= {name for name, _ in examples}
    for _name, body in examples:
        when = body.get("sold_at")
        now = datetime.fromisoformat(when) if when else datetime.now(UTC)
        sale = validate_sale(copy.deepcopy(body), now=now)  # check digits, total, currency in use
        assert sale.total == body["total"]
    returned = dict(examples)["return"]
    assert any(line["quantity"] < 0 for line in returned["lines"])


def test_example_member_codes_and_points_are_consistent() -> None:
    for example in EXAMPLES:
        for code in _values_of(example.value, "member_code"):
            if example.label.startswith("POST /pos/v1/till/customer request"):
                assert normalize_member_code(code) is not None, example.label
            else:
                assert normalize_member_code(code) == code, example.label
    sale = dict(request_examples("/pos/v1/sales", "post"))["sale"]
    answer = operation("/pos/v1/sales", "post")["responses"]["201"]["content"]["application/json"]
    member_answer = answer["examples"]["member"]["value"]["customer"]
    lines = validate_sale(copy.deepcopy(sale)).lines
    assert member_answer["points_earned"] == points_for(
        lines, sale["discount"], member_answer["member"]["tier"]
    )


def _values_of(value: Any, key: str) -> Iterator[Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                yield v
            else:
                yield from _values_of(v, key)
    elif isinstance(value, list):
        for item in value:
            yield from _values_of(item, key)


# -- the running API ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


MEMBER = MemberSummary("M1234567894", "Ana", "gold", 1240, ("free-coffee",))
#: The staff PIN set on the node: the document's example PIN, so the example request shows a code.
PIN = "246810"
REDEMPTION_TOPIC = "retail/v1/store-1/node-1/request/redemption"
REDEMPTION_TIMEOUT = 3.0
TODAY = dt.date(2026, 11, 26)
#: The central receiver's default rewards catalogue: ``points-off`` is variable (at least 100, steps of 100).
CATALOGUE = LoyaltySection()


@dataclass
class Central:
    """The central receiver's redemption responder (a ``Requester``): checks the signed request, answers.

    ``mode``: ``approve`` (with the balance after it), ``decline`` (``insufficient-points``), ``offline``
    (the relay has no broker connection) or ``timeout`` (no answer in time). When approving it prices the
    request with the real catalogue, as the central receiver does: a variable reward's ``points`` (or a
    fixed reward's) that the reward does not take are declined with its reason (``points-required``,
    ``invalid-points``); a fixed reward costs 100 points here.
    """

    verify_key: VerifyKey
    mode: str = "approve"
    asked: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, topic: str, payload: bytes, timeout: float) -> bytes:
        assert (topic, timeout) == (REDEMPTION_TOPIC, REDEMPTION_TIMEOUT)
        envelope = verify(payload, self.verify_key)  # a forged or altered request would raise here
        assert envelope["schema"].endswith("redemption_request"), envelope["schema"]
        request = envelope["body"]
        self.asked.append(request)
        if self.mode == "offline":
            raise RequestUnavailable("not connected to the broker")
        if self.mode == "timeout":
            raise TimeoutError("no answer within 3 s")
        reward = CATALOGUE.reward(request["reward"])
        priced = reward.cost(request.get("points")) if reward is not None else 100
        if self.mode == "approve" and (isinstance(priced, str) or request.get("points", 0) > MEMBER.points):
            reply = {
                "request_id": request["request_id"],
                "approved": False,
                "reason": priced if isinstance(priced, str) else "insufficient-points",
                "points_balance": MEMBER.points,
            }
        elif self.mode == "approve":
            spent = request.get("points", 100)
            reply = {
                "request_id": request["request_id"],
                "approved": True,
                "points_balance": MEMBER.points - spent,
            }
        else:
            reply = {
                "request_id": request["request_id"],
                "approved": False,
                "reason": "insufficient-points",
                "points_balance": 40,
            }
        return json.dumps(reply).encode()


@dataclass
class Node:
    """The POS app over real services, and what a test needs to drive it."""

    app: Flask
    client: FlaskClient
    pairing: Pairing
    clock: Clock
    sales: SaleService
    token: str
    central: Central
    redemptions: RedemptionService
    pickups: PickupService
    staff_dir: Path
    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def call(
        self,
        path: str,
        method: str,
        *,
        json_body: Any = None,
        form: dict[str, str] | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        auth: bool = True,
    ) -> TestResponse:
        """Send a request and check the answer against the document's entry for ``path`` and ``method``.

        ``path`` is the documented path; ``params`` fill in its path parameters.
        """
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = f"Bearer {self.token}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        elif form is not None:
            data = urlencode(form).encode()
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        url = path.format_map(params) if params else path
        response = self.client.open(url, method=method.upper(), data=data, headers=sent)
        check_answer(path, method, response)
        self.seen.add((path, method, response.status_code))
        return response


def check_answer(path: str, method: str, response: TestResponse) -> None:
    """The status is documented for the operation; body, content type and headers are as documented."""
    status = str(response.status_code)
    label = f"{method.upper()} {path} -> {status}"
    responses = operation(path, method)["responses"]
    assert status in responses, f"{label}: undocumented status ({response.get_data()!r})"
    documented, at = deref(responses[status], pointer("paths", path, method, "responses", status))
    assert response.headers["Cache-Control"] == "no-store"
    for name, entry in documented.get("headers", {}).items():
        header, h_at = deref(entry, f"{at}/headers/{escape(name)}")
        if header.get("required"):
            assert name in response.headers, f"{label}: no {name} header"
        if name in response.headers:
            raw = response.headers[name]
            value: Any = int(raw) if header["schema"].get("type") == "integer" else raw
            assert_valid(value, f"{h_at}/schema", f"{label} header {name}")
    content = documented.get("content")
    if content is None:
        assert response.get_data() == b"", f"{label}: a body where none is documented"
        return
    mimetype = response.mimetype or ""
    assert mimetype in content, f"{label}: {mimetype!r} not in {list(content)}"
    if mimetype.endswith("json"):
        assert_valid(response.get_json(), f"{at}/content/{escape(mimetype)}/schema", label)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    clock = Clock()
    pseudonymizer = Pseudonymizer(b"k" * 32)
    pairing = Pairing(tmp_path / "pairing.sqlite3", clock=clock)
    till = TillSession(pseudonymizer)
    members = MemberDirectory()
    members.remember(pseudonymizer.barcode_token(MEMBER.member_code), MEMBER)
    key = SigningKey.generate()
    outbox = Outbox(tmp_path / "outbox.sqlite3", Signer(key, "store-1", "node-1"), "retail/v1")
    sales = SaleService(outbox, till, members)
    feed = CashierFeed()
    # what edge.node passes: the allowance in the pairing database, 1 offline reward per member per day
    allowance = OfflineAllowance(tmp_path / "pairing.sqlite3", 1, today=lambda: TODAY)
    central = Central(key.verify_key)
    redemptions = RedemptionService(
        outbox, till, central, REDEMPTION_TOPIC, allowance, timeout=REDEMPTION_TIMEOUT
    )
    pickups = PickupService(outbox)
    staff_dir = tmp_path / "staff"
    staff_dir.mkdir()
    set_pin(staff_dir, PIN)
    staff = StaffPin(staff_dir, max_failures=5, lockout=300.0, clock=clock)  # the node's defaults
    app = create_pos_app(
        pairing,
        till,
        sales,
        members,
        node={"store": "store-1", "node": "node-1"},
        redemptions=redemptions,
        pickups=pickups,
        events=feed,
        staff=staff,
    )
    token = pairing.pair(pairing.new_code().code, "front-till", "Front till")
    try:
        yield Node(
            app, app.test_client(), pairing, clock, sales, token, central, redemptions, pickups, staff_dir
        )
    finally:
        feed.close()
        outbox.close()
        allowance.close()
        pairing.close()


def _routes(app: Flask) -> set[tuple[str, str]]:
    """(path, method) of every route, in OpenAPI spelling; HEAD and OPTIONS are Flask's automatic ones."""
    routes = set()
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    return routes


def test_documented_operations_are_exactly_the_routes(node: Node) -> None:
    routes = _routes(node.app)
    documented = set(OPERATIONS)
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented operations the app does not serve"


def test_no_static_file_route(node: Node) -> None:
    assert not [path for path, _ in _routes(node.app) if path.startswith("/static/")]


def test_served_document_is_the_shipped_file(node: Node) -> None:
    response = node.call("/pos/v1/openapi.json", "get", auth=False)
    assert response.status_code == 200
    assert response.get_data() == DOC_PATH.read_bytes()


def _live_body(path: str, body: Any, node: Node) -> Any:
    """An example body made current: a fresh pairing code, a sale time of now."""
    body = copy.deepcopy(body)
    if path == "/pos/v1/pair":
        body["code"] = node.pairing.new_code().code
    if isinstance(body, dict) and "sold_at" in body:
        body["sold_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return body


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_example_requests_are_accepted(node: Node, path: str, method: str) -> None:
    op = operation(path, method)
    headers, params = {}, {}
    for entry in op.get("parameters", []):
        param, _ = deref(entry, "")
        if param["in"] == "header":
            headers[param["name"]] = param["example"]
        elif param["in"] == "path":
            params[param["name"]] = param["example"]
    if path == "/pos/v1/redemptions":  # a reward is for the customer present
        node.call("/pos/v1/till/customer", "post", json_body={"member_code": MEMBER.member_code})
    content = op.get("requestBody", {}).get("content", {})
    if not content:
        example = op["x-example-request"]
        response = node.call(path, method, params=params, auth="Authorization" in example.get("headers", {}))
        assert 200 <= response.status_code < 300
        return
    [(media_type, media)] = content.items()
    for i, (name, body) in enumerate(media_examples(media)):
        sent = dict(headers)
        if "Idempotency-Key" in sent:
            sent["Idempotency-Key"] += f"-{i}"  # each example is its own sale (or redemption)
        if media_type == "application/x-www-form-urlencoded":
            response = node.call(path, method, form=body, headers=sent, auth=is_protected(op))
        else:
            live = _live_body(path, body, node)
            response = node.call(
                path, method, json_body=live, headers=sent, params=params, auth=is_protected(op)
            )
        assert 200 <= response.status_code < 300, f"example {name}: {response.get_data()!r}"


def _assert_all_statuses_produced(node: Node, path: str, method: str) -> None:
    produced = {status for p, m, status in node.seen if (p, m) == (path, method)}
    documented = {int(s) for s in operation(path, method)["responses"]}
    assert produced == documented


def documented_examples(path: str, method: str, status: int) -> dict[str, Any]:
    """The response examples of one status, by name (``example`` for a lone one)."""
    response, _ = deref(operation(path, method)["responses"][str(status)], "")
    [media] = response["content"].values()
    return dict(media_examples(media))


def documented_example(path: str, method: str, status: int, name: str = "example") -> Any:
    return documented_examples(path, method, status)[name]


def _problem_type(response: TestResponse) -> str:
    body = response.get_json()
    assert isinstance(body, dict)
    return str(body["type"]).removeprefix(PROBLEM_BASE)


def _unauthorised(
    node: Node,
    path: str,
    method: str,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> None:
    """No token, an unknown token, a token without the Bearer scheme: 401 with a WWW-Authenticate header."""
    for auth in ({}, {"Authorization": "Bearer kpos_not-a-paired-till"}, {"Authorization": node.token}):
        sent = {**(headers or {}), **auth}
        response = node.call(path, method, auth=False, headers=sent, json_body=json_body, params=params)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        assert response.get_json() == documented_example(path, method, 401)


def test_pairing_answers(node: Node) -> None:
    path, method = "/pos/v1/pair", "post"
    code = node.pairing.new_code().code
    ok = node.call(path, method, json_body={"code": code, "pos_id": "till-2", "name": "Till 2"}, auth=False)
    assert ok.status_code == 201
    assert node.pairing.authenticate(ok.get_json()["token"]) == "till-2"
    malformed: list[Any] = [
        [],
        {"code": "123456", "pos_id": "till-2", "name": "x", "till": 1},
        {"code": "12", "pos_id": "t"},
    ]
    for body in malformed:
        assert node.call(path, method, json_body=body, auth=False).status_code == 400
    not_json_type = node.call(path, method, data=b'{"code": "1"}', auth=False)  # no Content-Type
    assert not_json_type.status_code == 400
    big = b'{"name": "' + b"x" * MAX_BODY + b'"}'
    too_large = node.call(path, method, data=big, headers={"Content-Type": "application/json"}, auth=False)
    assert too_large.get_json() == documented_example(path, method, 413)

    code = node.pairing.new_code().code
    wrong = {"code": "000000" if code != "000000" else "111111", "pos_id": "till-2", "name": "Till 2"}
    first_wrong = node.call(path, method, json_body=wrong, auth=False)
    assert first_wrong.get_json() == documented_example(path, method, 403, "wrong-code")
    node.clock.now += node.pairing.code_ttl + 1
    expired = node.call(path, method, json_body={**wrong, "code": code}, auth=False)
    assert expired.get_json() == documented_example(path, method, 403, "expired")
    answers = [node.call(path, method, json_body=wrong, auth=False) for _ in range(4)]
    assert [a.status_code for a in answers] == [403, 403, 429, 429]
    assert answers[2].get_json() == documented_example(path, method, 429)
    assert _problem_type(answers[3]) == "pairing-locked"
    _assert_all_statuses_produced(node, path, method)


def test_till_answers(node: Node) -> None:
    assert node.call("/pos/v1/till", "get").get_json() == {"customer": None}
    attach = node.call("/pos/v1/till/customer", "post", json_body={"member_code": "m 123-456-789 4"})
    assert attach.status_code == 200
    assert attach.get_json()["customer"]["member"] == MEMBER.public()
    assert node.call("/pos/v1/till", "get").get_json() == attach.get_json()
    for body in ({"member_code": 1234567894}, {"member_code": "M1234567894", "x": 1}, ["M1234567894"]):
        malformed = node.call("/pos/v1/till/customer", "post", json_body=body)
        assert malformed.get_json() in documented_examples("/pos/v1/till/customer", "post", 400).values()
    typo = node.call("/pos/v1/till/customer", "post", json_body={"member_code": "M1234567849"})
    assert typo.get_json() == documented_example("/pos/v1/till/customer", "post", 422)
    big = json.dumps({"member_code": "x" * MAX_BODY}).encode()
    big_headers = {"Content-Type": "application/json"}
    assert node.call("/pos/v1/till/customer", "post", data=big, headers=big_headers).status_code == 413
    assert node.call("/pos/v1/till/customer", "delete").status_code == 204
    assert node.call("/pos/v1/till", "get").get_json() == {"customer": None}
    assert node.call("/pos/v1/till/customer", "delete").status_code == 204  # idempotent
    _unauthorised(node, "/pos/v1/till", "get")
    _unauthorised(node, "/pos/v1/till/customer", "post", json_body={"member_code": "M1234567894"})
    _unauthorised(node, "/pos/v1/till/customer", "delete")
    for path, method in (
        ("/pos/v1/till", "get"),
        ("/pos/v1/till/customer", "post"),
        ("/pos/v1/till/customer", "delete"),
    ):
        _assert_all_statuses_produced(node, path, method)


def test_sale_answers(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    path, method = "/pos/v1/sales", "post"
    examples = dict(request_examples(path, method))
    sale, refund = examples["sale"], _live_body(path, examples["return"], node)
    key = {"Idempotency-Key": "T1-20261126-0100"}

    node.call("/pos/v1/till/customer", "post", json_body={"member_code": MEMBER.member_code})
    first = node.call(path, method, json_body=sale, headers=key)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    customer = first.get_json()["customer"]
    assert customer["member"] == MEMBER.public()
    assert customer["source"] == "typed"
    assert node.call("/pos/v1/till", "get").get_json() == {"customer": None}, "the sale consumed the customer"
    replay = node.call(path, method, json_body=sale, headers=key)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == first.get_json()
    conflict = node.call(path, method, json_body=refund, headers=key)
    assert (conflict.status_code, _problem_type(conflict)) == (409, "receipt-conflict")
    anonymous = node.call(path, method, json_body=refund, headers={"Idempotency-Key": "T1-20261126-0101"})
    assert anonymous.status_code == 201
    assert anonymous.get_json()["customer"] is None

    for bad_key in (
        {},
        {"Idempotency-Key": "abc"},
        {"Idempotency-Key": "T1_20261126"},
        {"Idempotency-Key": "x" * 49},
    ):
        response = node.call(path, method, json_body=sale, headers=bad_key)
        assert response.get_json() == documented_example(path, method, 400)
    key = {"Idempotency-Key": "T1-20261126-0102"}
    broken = copy.deepcopy(sale)
    broken["lines"][0]["gtin"] = "4006381333932"
    broken["lines"][1]["unit_price"] = 3.85
    broken["currency"] = "eur"
    invalid = node.call(path, method, json_body=broken, headers=key)
    assert invalid.get_json() == documented_example(path, method, 422, "invalid")
    not_json = node.call(path, method, data=b"", headers=key)
    assert not_json.get_json()["errors"][0]["field"] == ""
    not_json = node.call(path, method, data=b"total=5", headers=key)
    assert (not_json.status_code, not_json.get_json()["errors"][0]["field"]) == (422, "")
    big = json.dumps({**sale, "lines": [sale["lines"][0]] * 3000}).encode()
    assert node.call(path, method, data=big, headers=key).status_code == 413
    _unauthorised(node, path, method, json_body=sale, headers=key)

    failures: list[Exception] = [
        OutboxFull("sale", 50000, 104857600),
        OutboxClosed("the outbox is closing and accepts no new events"),
        OutboxUnavailable("disk I/O error"),
        TimeoutError(),
    ]

    def refuse(*_args: Any) -> Any:
        raise failures.pop(0)

    monkeypatch.setattr(node.sales, "record", refuse)
    full = node.call(path, method, json_body=sale, headers=key)
    assert (full.status_code, full.get_json()["alarm"], full.headers["Retry-After"]) == (
        507,
        "outbox_full",
        "30",
    )
    for _ in range(3):
        not_accepted = node.call(path, method, json_body=sale, headers=key)
        assert (not_accepted.status_code, not_accepted.headers["Retry-After"]) == (503, "5")
    _assert_all_statuses_produced(node, path, method)


def test_openapi_document_answers(node: Node) -> None:
    node.call("/pos/v1/openapi.json", "get", auth=False)
    _assert_all_statuses_produced(node, "/pos/v1/openapi.json", "get")


def _outbox_failures(*extra: Exception) -> list[Exception]:
    """What the outbox raises when it does not take an event: full, closing, broken (then ``extra``)."""
    return [
        OutboxFull("redemption", 50000, 104857600),
        OutboxClosed("the outbox is closing and accepts no new events"),
        OutboxUnavailable("disk I/O error"),
        *extra,
    ]


def test_redemption_answers(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    path, method = "/pos/v1/redemptions", "post"
    examples = dict(request_examples(path, method))
    body = examples["with-receipt"]
    key = {"Idempotency-Key": "T1-20261126-0042-R1"}

    nobody = node.call(path, method, json_body=body, headers=key)
    assert nobody.get_json() == documented_example(path, method, 409, "no-member")
    assert node.central.asked == [], "nothing is asked without a member present"
    node.call("/pos/v1/till/customer", "post", json_body={"member_code": MEMBER.member_code})

    approved = node.call(path, method, json_body=body, headers=key)
    assert approved.status_code == 201
    assert "Idempotent-Replayed" not in approved.headers
    [asked] = node.central.asked
    assert (asked["reward"], asked["receipt"], asked["pos"]) == (
        body["reward"],
        body["receipt"],
        "front-till",
    )
    answer = approved.get_json()
    expected = documented_example(path, method, 201, "central")
    assert answer == {**expected, "request_id": asked["request_id"], "event_id": answer["event_id"]}
    assert node.call("/pos/v1/till", "get").get_json()["customer"] is not None, "the customer stays present"
    replay = node.call(path, method, json_body=body, headers=key)
    assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (200, "true")
    assert replay.get_json() == answer
    assert len(node.central.asked) == 1, "a replay asks nothing and hands nothing over"
    conflict = node.call(path, method, json_body=examples["reward-only"], headers=key)
    assert conflict.get_json() == documented_example(path, method, 409, "receipt-conflict")

    def ask(mode: str, n: int) -> TestResponse:
        node.central.mode = mode
        return node.call(path, method, json_body=body, headers={"Idempotency-Key": f"T1-20261126-0042-R{n}"})

    declined = ask("decline", 2)
    assert declined.status_code == 200
    assert "Idempotent-Replayed" not in declined.headers
    request_id = node.central.asked[-1]["request_id"]
    assert declined.get_json() == {
        **documented_example(path, method, 200, "declined"),
        "request_id": request_id,
    }
    again = ask("decline", 2)
    assert node.central.asked[-1]["request_id"] != request_id, "a decline is not stored: a retry asks again"
    assert again.get_json()["reason"] == "insufficient-points"

    offline = ask("offline", 3)  # today's offline allowance: one reward
    assert offline.status_code == 201
    answer = offline.get_json()
    expected = documented_example(path, method, 201, "offline")
    request_id = node.central.asked[-1]["request_id"]
    assert answer == {**expected, "request_id": request_id, "event_id": answer["event_id"]}
    for mode, n in (("offline", 4), ("timeout", 5)):
        used_up = ask(mode, n)
        request_id = node.central.asked[-1]["request_id"]
        assert used_up.get_json() == {**documented_example(path, method, 200, mode), "request_id": request_id}

    node.central.mode = "approve"
    for bad_key in (
        {},
        {"Idempotency-Key": "R1"},
        {"Idempotency-Key": "T1_R1"},
        {"Idempotency-Key": "x" * 49},
    ):
        response = node.call(path, method, json_body=body, headers=bad_key)
        assert response.get_json() == documented_example(path, method, 400)
    key = {"Idempotency-Key": "T1-20261126-0042-R6"}
    invalid = node.call(path, method, json_body={"reward": "Free coffee", "points": 0}, headers=key)
    assert invalid.get_json() == documented_example(path, method, 422, "invalid")
    not_json = node.call(path, method, data=b"reward=free-coffee", headers=key)
    assert not_json.get_json() == documented_example(path, method, 422, "not-json")
    big = json.dumps({"reward": "x" * MAX_BODY}).encode()
    assert node.call(path, method, data=big, headers=key).status_code == 413
    _unauthorised(node, path, method, json_body=body, headers=key)

    failures = _outbox_failures()

    def refuse(*_args: Any) -> Any:
        raise failures.pop(0)

    monkeypatch.setattr(node.redemptions, "redeem", refuse)
    full = node.call(path, method, json_body=body, headers=key)
    assert full.get_json() == documented_example(path, method, 507)
    assert full.headers["Retry-After"] == "30"
    closing = node.call(path, method, json_body=body, headers=key)
    assert closing.get_json() == documented_example(path, method, 503)
    broken = node.call(path, method, json_body=body, headers=key)
    assert (broken.status_code, broken.headers["Retry-After"]) == (503, "5")
    _assert_all_statuses_produced(node, path, method)


def test_partial_redemption_answers(node: Node) -> None:
    """A variable reward with ``points``: approved and echoed, priced centrally, never offline."""
    path, method = "/pos/v1/redemptions", "post"
    examples = dict(request_examples(path, method))
    body = examples["partial"]
    assert CATALOGUE.reward(body["reward"]).variable  # type: ignore[union-attr]
    node.call("/pos/v1/till/customer", "post", json_body={"member_code": MEMBER.member_code})

    def ask(sent: dict[str, Any], n: int) -> TestResponse:
        return node.call(path, method, json_body=sent, headers={"Idempotency-Key": f"T1-20261126-0043-R{n}"})

    approved = ask(body, 1)
    assert approved.status_code == 201
    [asked] = node.central.asked
    assert (asked["reward"], asked["points"], asked["receipt"]) == (
        body["reward"],
        body["points"],
        body["receipt"],
    )
    answer = approved.get_json()
    expected = documented_example(path, method, 201, "partial")
    assert answer == {**expected, "request_id": asked["request_id"], "event_id": answer["event_id"]}
    assert answer["points_balance"] == MEMBER.points - body["points"]
    replay = ask(body, 1)
    assert (replay.status_code, replay.get_json()) == (200, answer)
    conflict = ask({**body, "points": body["points"] + 100}, 1)  # the same key, another number of points
    documented = documented_example(path, method, 409, "receipt-conflict")
    detail = documented["detail"].replace("T1-20261126-0042-R1", "T1-20261126-0043-R1")
    assert conflict.get_json() == {**documented, "detail": detail}
    assert len(node.central.asked) == 1

    off_step = ask({**body, "points": 250}, 2)
    assert off_step.status_code == 200
    assert off_step.get_json() == {
        **documented_example(path, method, 200, "invalid-points"),
        "request_id": node.central.asked[-1]["request_id"],
    }
    no_points = ask({k: v for k, v in body.items() if k != "points"}, 3)
    assert (no_points.get_json()["approved"], no_points.get_json()["reason"]) == (False, "points-required")
    fixed_with_points = ask({"reward": "free-coffee", "points": 300}, 4)
    assert fixed_with_points.get_json()["reason"] == "invalid-points"

    # a chosen number of points is never spent under the offline allowance, though today's is unused
    for n, mode in enumerate(("offline", "timeout"), start=5):
        node.central.mode = mode
        declined = ask(body, n)
        assert declined.status_code == 200
        assert declined.get_json() == {
            **documented_example(path, method, 200, mode),
            "reward": body["reward"],
            "request_id": node.central.asked[-1]["request_id"],
        }
    node.central.mode = "offline"
    fixed = ask(examples["reward-only"], 7)  # the allowance is still there for a fixed reward
    assert (fixed.status_code, fixed.get_json()["approval"]) == (201, "offline")
    assert "points" not in fixed.get_json()


#: ``points`` the node refuses (and the document's schema too): not an integer from 1 to 10,000,000.
HOSTILE_POINTS: list[Any] = [0, -1, 10_000_001, 1.5, True, "5", 10**30, [300], {"points": 300}]


@pytest.mark.parametrize("points", [*HOSTILE_POINTS, 300.0], ids=repr)
def test_hostile_points_are_refused_by_the_node_and_the_schema(node: Node, points: Any) -> None:
    path, method = "/pos/v1/redemptions", "post"
    body = {**dict(request_examples(path, method))["partial"], "points": points}
    schema = pointer("paths", path, method, "requestBody", "content", "application/json", "schema")
    # JSON Schema cannot tell 300.0 from 300 (the overview says so for money): only the node refuses it
    whole_float = isinstance(points, float) and points.is_integer()
    assert bool(list(validator_at(schema).iter_errors(body))) is not whole_float, points
    node.call("/pos/v1/till/customer", "post", json_body={"member_code": MEMBER.member_code})
    refused = node.call(path, method, json_body=body, headers={"Idempotency-Key": "T1-20261126-0044-R1"})
    assert refused.status_code == 422
    documented = documented_example(path, method, 422, "invalid")
    [points_error] = [e for e in documented["errors"] if e["field"] == "/points"]
    assert refused.get_json() == {**documented, "detail": "1 problem(s)", "errors": [points_error]}
    assert node.central.asked == [], "nothing is asked for a refused body"


@pytest.mark.parametrize("points", [1, 100, 10_000_000])
def test_points_within_the_bounds_reach_the_central_receiver(node: Node, points: int) -> None:
    path, method = "/pos/v1/redemptions", "post"
    body = {**dict(request_examples(path, method))["partial"], "points": points}
    schema = pointer("paths", path, method, "requestBody", "content", "application/json", "schema")
    assert_valid(body, schema, f"points={points}")
    node.call("/pos/v1/till/customer", "post", json_body={"member_code": MEMBER.member_code})
    answer = node.call(path, method, json_body=body, headers={"Idempotency-Key": "T1-20261126-0045-R1"})
    [asked] = node.central.asked
    assert asked["points"] == points
    # 100 is the reward's minimum and step; 1 is below it; 10,000,000 is more than the member has
    assert answer.get_json()["approved"] is (points == 100), answer.get_json()
    if points != 100:
        assert answer.get_json()["reason"] == ("invalid-points" if points == 1 else "insufficient-points")


def test_pickup_answers(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    path, method = "/pos/v1/reservations/{code}/pickup", "post"
    code = DOC["components"]["parameters"]["ReservationCode"]["example"]
    paid = dict(request_examples(path, method))["paid-at-till"]

    first = node.call(path, method, params={"code": code}, json_body=paid)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    answer = first.get_json()
    expected = documented_example(path, method, 201)
    assert answer == {
        **expected,
        "pos": "front-till",
        "event_id": answer["event_id"],
        "picked_up_at": answer["picked_up_at"],
    }
    again = node.call(path, method, params={"code": code.lower()})  # scanned again, no body, lower case
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (200, "true")
    assert again.get_json() == answer
    fresh = make_reservation_code(7)
    bodiless = node.call(path, method, params={"code": fresh})
    assert (bodiless.status_code, bodiless.get_json()["code"]) == (201, fresh)

    other = {"code": make_reservation_code(8)}
    mistyped = node.call(path, method, params={"code": code[:-1] + str((int(code[-1]) + 3) % 10)})
    assert mistyped.get_json() == documented_example(path, method, 422, "check-digit")
    bad_body = node.call(path, method, params=other, json_body={"shelf": "A3", "receipt": "T1 0042"})
    assert bad_body.get_json() == documented_example(path, method, 422, "bad-body")
    not_json = node.call(path, method, params=other, data=b"[]")
    assert not_json.get_json() == documented_example(path, method, 422, "not-json")
    big = json.dumps({"receipt": "x" * MAX_BODY}).encode()
    assert node.call(path, method, params=other, data=big).status_code == 413
    _unauthorised(node, path, method, params=other)

    failures = _outbox_failures(TimeoutError())
    failures[0] = OutboxFull("pickup", 50000, 104857600)

    def refuse(*_args: Any) -> Any:
        raise failures.pop(0)

    monkeypatch.setattr(node.pickups, "pick_up", refuse)
    full = node.call(path, method, params=other)
    assert full.get_json() == documented_example(path, method, 507)
    assert full.headers["Retry-After"] == "30"
    closing = node.call(path, method, params=other)
    assert closing.get_json() == documented_example(path, method, 503)
    for _ in range(2):
        not_recorded = node.call(path, method, params=other)
        assert (not_recorded.status_code, not_recorded.headers["Retry-After"]) == (503, "5")
    _assert_all_statuses_produced(node, path, method)


CODE_RE = re.compile(r'<strong id="code">(\d{3}) (\d{3})</strong>')


def _page_lines(html: str) -> list[str]:
    """A page's non-blank lines, stripped, with the pairing code and its time made generic."""
    lines = [line.strip() for line in html.splitlines() if line.strip()]
    return [re.sub(r"until \d\d:\d\d\.", "until HH:MM.", CODE_RE.sub("CODE", line)) for line in lines]


def _same_page(response: TestResponse, documented: Any, label: str) -> None:
    assert _page_lines(response.get_data(as_text=True)) == _page_lines(documented), label


def test_staff_page_answers(node: Node) -> None:
    path = "/pos/staff"
    csp = operation(path, "get")["responses"]["200"]["headers"]["Content-Security-Policy"]["example"]

    form = node.call(path, "get", auth=False)
    assert form.headers["Content-Security-Policy"] == csp
    _same_page(form, documented_example(path, "get", 200, "form"), "the form")
    shown = node.call(path, "post", form={"pin": PIN}, auth=False)
    assert shown.status_code == 200
    _same_page(shown, documented_example(path, "post", 200), "the code")
    match = CODE_RE.search(shown.get_data(as_text=True))
    assert match is not None
    token = node.pairing.pair(match[1] + match[2], "back-till", "Back till")
    assert node.pairing.authenticate(token) == "back-till"

    wrong = node.call(path, "post", form={"pin": "135791"}, auth=False)
    assert wrong.status_code == 403
    _same_page(wrong, documented_example(path, "post", 403), "a wrong PIN")
    answers = [node.call(path, "post", form=f, auth=False) for f in ({}, {"pin": "12"}, {"pin": "x"})]
    assert [a.status_code for a in answers] == [403, 403, 403], "missing and malformed PINs are wrong PINs"
    fifth = node.call(path, "post", form={"pin": "135791"}, auth=False)
    assert fifth.status_code == 403, "the 5th wrong PIN is refused, and locks the page"
    locked = node.call(path, "post", form={"pin": PIN}, auth=False)
    assert (locked.status_code, locked.headers["Retry-After"]) == (429, "300")
    _same_page(locked, documented_example(path, "post", 429), "locked")
    node.clock.now += 300
    assert node.call(path, "post", form={"pin": PIN}, auth=False).status_code == 200

    big = {"pin": "1" * MAX_BODY}
    assert node.call(path, "post", form=big, auth=False).get_json() == documented_example(path, "post", 413)

    (node.staff_dir / PIN_FILE).unlink()
    no_pin = node.call(path, "get", auth=False)
    _same_page(no_pin, documented_example(path, "get", 200, "no-pin"), "no PIN set")
    not_set = node.call(path, "post", form={"pin": PIN}, auth=False)
    assert not_set.status_code == 404
    _same_page(not_set, documented_example(path, "post", 404), "no PIN set (POST)")
    _assert_all_statuses_produced(node, path, "get")
    _assert_all_statuses_produced(node, path, "post")
