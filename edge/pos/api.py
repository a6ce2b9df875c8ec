"""The POS API (HTTP JSON on the shop LAN): views translate HTTP to calls on the pos services.

Everything except pairing, the OpenAPI document and the cashier console's static shell needs a paired
till's bearer token; errors are RFC 9457 problem documents (``application/problem+json``) whose ``type``
names the problem for the integrator and, for a bad sale, whose ``errors`` list every bad field as a JSON
pointer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from flask import Flask, Response, g, jsonify, render_template_string, request

from cloud_sync.errors import OutboxClosed, OutboxFull
from cloud_sync.outbox import OutboxUnavailable
from edge.admin import problem
from edge.members import MemberDirectory
from edge.pos.events import CONSOLE_PATHS, CashierFeed, register_events
from edge.pos.pairing import Pairing, PairingRefused
from edge.pos.pickup import PickupService
from edge.pos.redeem import NoMemberPresent, RedemptionService
from edge.pos.sale import RECEIPT_RE, SaleInvalid
from edge.pos.sales import ReceiptConflict, SaleService
from edge.pos.staff import PinLocked, StaffPin
from edge.pos.till import Customer, TillSession

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024
PROBLEM_BASE = "https://kiosk-edge.invalid/problems/"
_PUBLIC = frozenset({"/pos/staff", "/pos/v1/pair", "/pos/v1/openapi.json"}) | CONSOLE_PATHS


def _problem(status: int, kind: str, title: str, detail: str, **extra: Any) -> Response:
    return problem(status, title, detail, type=PROBLEM_BASE + kind, **extra)


def openapi_document() -> bytes:
    """The OpenAPI 3.1 document shipped with the package (also in docs/openapi.json)."""
    return resources.files("edge.pos").joinpath("openapi.json").read_bytes()


def create_pos_app(
    pairing: Pairing,
    till: TillSession,
    sales: SaleService,
    members: MemberDirectory,
    *,
    node: dict[str, str],
    describe: Callable[[], bytes] = openapi_document,
    events: CashierFeed | None = None,
    redemptions: RedemptionService | None = None,
    staff: StaffPin | None = None,
    pickups: PickupService | None = None,
) -> Flask:
    """Build the POS API around the node's services."""
    app = Flask("kiosk_edge_pos", static_folder=None)  # an API: no static files, ever
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, JSON_SORT_KEYS=False)

    _install_guards(app, pairing)

    @app.get("/pos/v1/openapi.json")
    def openapi() -> Response:
        return Response(describe(), mimetype="application/json")

    @app.post("/pos/v1/pair")
    def pair() -> Response:
        data = _json_object()
        if isinstance(data, Response):
            return data
        unknown = sorted(set(data) - {"code", "pos_id", "name"})
        if unknown:
            return _problem(400, "malformed", "Malformed request", f"unknown members: {', '.join(unknown)}")
        try:
            token = pairing.pair(data.get("code"), data.get("pos_id"), data.get("name"))
        except ValueError as exc:
            return _problem(400, "malformed", "Malformed request", str(exc))
        except PairingRefused as exc:
            status = 429 if exc.reason == "locked" else 403
            response = _problem(status, f"pairing-{exc.reason}", "Pairing refused", str(exc))
            if exc.retry_after is not None:
                response.headers["Retry-After"] = str(exc.retry_after)
            return response
        response = jsonify({**node, "token": token, "token_type": "Bearer", "pos_id": data["pos_id"]})
        response.status_code = 201
        return response

    @app.get("/pos/v1/till")
    def get_till() -> Response:
        return jsonify(_till_view(till.current()))

    @app.post("/pos/v1/till/customer")
    def attach() -> Response:
        data = _json_object()
        if isinstance(data, Response):
            return data
        if set(data) != {"member_code"} or not isinstance(data["member_code"], str):
            return _problem(400, "malformed", "Malformed request", 'the body must be {"member_code": "M…"}')
        try:
            customer = till.attach_member_code(data["member_code"])
        except ValueError as exc:
            return _problem(
                422,
                "invalid-member-code",
                "Invalid member code",
                str(exc),
                errors=[_err("/member_code", str(exc))],
            )
        log.info("POS %s attached a member by code", g.pos_id)
        return jsonify(_till_view(customer))

    @app.delete("/pos/v1/till/customer")
    def clear() -> Response:
        till.clear()
        return Response(status=204)

    @app.post("/pos/v1/sales")
    def post_sale() -> Response:
        return _record_sale(sales)

    if staff is not None:
        _install_staff_page(app, staff, pairing, node.get("node", "this node"))

    if pickups is not None:

        @app.post("/pos/v1/reservations/<code>/pickup")
        def post_pickup(code: str) -> Response:
            return _pick_up(pickups, code)

    if redemptions is not None:

        @app.post("/pos/v1/redemptions")
        def post_redemption() -> Response:
            return _redeem(redemptions)

    def _till_view(customer: Customer | None) -> dict[str, Any]:
        if customer is None:
            return {"customer": None}
        member = members.lookup(customer.token)
        return {
            "customer": {
                "masked": customer.masked,
                "source": customer.source,
                "expires_in_s": max(0, round(customer.expires - till.now())),
                "member": member.public() if member is not None else None,
            }
        }

    if events is not None:
        register_events(app, events, pairing)  # GET /pos/v1/events and the console page

    _install_error_pages(app)
    return app


def _not_stored(exc: Exception, what: str) -> Response:
    """The outbox did not take it: 507 when full (protected events are never evicted), else 503.

    Either way nothing was recorded, so the till retries with the same Idempotency-Key after Retry-After.
    """
    if isinstance(exc, OutboxFull):
        response = _problem(507, "outbox-full", f"{what}: storage full", str(exc), alarm="outbox_full")
        response.headers["Retry-After"] = "30"
    else:
        response = _problem(503, "not-accepted", what, str(exc))
        response.headers["Retry-After"] = "5"
    return response


def _answer(body: dict[str, Any], status: int, *, replayed: bool) -> Response:
    """A recorded (or replayed) answer; a replay says so in a header, its body is the stored one."""
    response = jsonify(body)
    response.status_code = status
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _record_sale(sales: SaleService) -> Response:
    """POST /pos/v1/sales: the receipt id, the sale, and every way it can be refused."""
    key = request.headers.get("Idempotency-Key", "")
    if not RECEIPT_RE.match(key):
        return _problem(
            400,
            "idempotency-key",
            "Idempotency-Key required",
            "send the receipt id as the Idempotency-Key header: 4-48 letters, digits or '-'",
        )
    try:
        result = sales.record(g.pos_id, key, request.get_data(cache=False))
    except SaleInvalid as exc:
        errors = [_err(e.field, e.problem) for e in exc.errors]
        return _problem(
            422, "invalid-sale", "Invalid sale", f"{len(errors)} problem(s) in the sale", errors=errors
        )
    except ReceiptConflict as exc:
        return _problem(409, "receipt-conflict", "Idempotency-Key reused", str(exc))
    except (OutboxFull, OutboxUnavailable, OutboxClosed, TimeoutError) as exc:
        return _not_stored(exc, "Sale not accepted")
    return _answer(result.response, 200 if result.replayed else 201, replayed=result.replayed)


def _idempotency_key() -> str | Response:
    key = request.headers.get("Idempotency-Key", "")
    if not RECEIPT_RE.match(key):
        return _problem(
            400,
            "idempotency-key",
            "Idempotency-Key required",
            "send a unique id for this request as the Idempotency-Key header: 4-48 letters, digits or '-'",
        )
    return key


def _pick_up(pickups: PickupService, code: str) -> Response:
    """POST /pos/v1/reservations/{code}/pickup: 201 recorded, 200 recorded before (same answer)."""
    try:
        result = pickups.pick_up(g.pos_id, code, request.get_data(cache=False))
    except SaleInvalid as exc:
        errors = [_err(e.field, e.problem) for e in exc.errors]
        return _problem(422, "invalid-pickup", "Invalid pick-up", f"{len(errors)} problem(s)", errors=errors)
    except (OutboxFull, OutboxUnavailable, OutboxClosed, TimeoutError) as exc:
        return _not_stored(exc, "Not recorded")
    return _answer(result.response, 200 if result.replayed else 201, replayed=result.replayed)


def _redeem(redemptions: RedemptionService) -> Response:
    """POST /pos/v1/redemptions: approved (201, recorded), declined (200, with the reason), or a problem."""
    key = _idempotency_key()
    if isinstance(key, Response):
        return key
    try:
        result = redemptions.redeem(g.pos_id, key, request.get_data(cache=False))
    except SaleInvalid as exc:
        errors = [_err(e.field, e.problem) for e in exc.errors]
        return _problem(
            422, "invalid-redemption", "Invalid redemption", f"{len(errors)} problem(s)", errors=errors
        )
    except NoMemberPresent as exc:
        return _problem(409, "no-member", "No member present", str(exc))
    except ReceiptConflict as exc:
        return _problem(409, "receipt-conflict", "Idempotency-Key reused", str(exc))
    except (OutboxFull, OutboxUnavailable, OutboxClosed, TimeoutError) as exc:
        return _not_stored(exc, "Not recorded")
    status = 201 if result.response["approved"] and not result.replayed else 200
    return _answer(result.response, status, replayed=result.replayed)


def _install_staff_page(app: Flask, staff: StaffPin, pairing: Pairing, node_name: str) -> None:
    """``/pos/staff``: a pairing code for a member of staff who knows the PIN (no token needed)."""
    template = resources.files("edge.pos").joinpath("templates/staff.html").read_text(encoding="utf-8")

    def page(status: int = 200, **values: Any) -> Response:
        html = render_template_string(template, node=node_name, configured=staff.configured, **values)
        response = Response(html, status=status, mimetype="text/html")
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.get("/pos/staff")
    def staff_form() -> Response:
        return page()

    @app.post("/pos/staff")
    def staff_code() -> Response:
        if not staff.configured:
            return page(404)
        try:
            ok = staff.verify(request.form.get("pin", ""))
        except PinLocked as exc:
            response = page(429, error=f"Too many wrong PINs. Try again in {exc.retry_after} seconds.")
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if not ok:
            return page(403, error="That PIN is not right.")
        code = pairing.new_code()
        log.info("a pairing code was shown on the staff page to %s", request.remote_addr)
        return page(code=code.code, until=time.strftime("%H:%M", time.localtime(code.expires_at)))


def _install_guards(app: Flask, pairing: Pairing) -> None:
    """Token check before every non-public request; no caching of anything after."""

    @app.before_request
    def authenticate() -> Response | None:
        if request.path in _PUBLIC:
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        pos_id = pairing.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        if pos_id is None:
            response = _problem(
                401,
                "unauthorised",
                "Unauthorised",
                "a paired till's bearer token is required (POST /pos/v1/pair)",
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="kiosk-edge POS", error="invalid_token"'
            log.warning(
                "POS API: request to %s without a valid token from %s", request.path, request.remote_addr
            )
            return response
        g.pos_id = pos_id
        return None

    @app.after_request
    def no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _install_error_pages(app: Flask) -> None:
    """Problem documents instead of HTML for the framework's own errors."""

    @app.errorhandler(413)
    def too_large(_exc: Exception) -> Response:
        return _problem(413, "too-large", "Request too large", f"bodies are limited to {MAX_BODY} bytes")

    @app.errorhandler(404)
    def not_found(_exc: Exception) -> Response:
        return _problem(404, "not-found", "Not found", "no such POS API endpoint (see /pos/v1/openapi.json)")

    @app.errorhandler(405)
    def wrong_method(exc: Exception) -> Response:
        response = _problem(405, "method", "Method not allowed", "see /pos/v1/openapi.json")
        allowed = getattr(exc, "valid_methods", None)  # werkzeug's MethodNotAllowed knows them
        if allowed:
            response.headers["Allow"] = ", ".join(sorted(allowed))  # RFC 9110: a 405 names them
        return response


def _err(field: str, detail: str) -> dict[str, str]:
    return {"field": field, "problem": detail}


def _json_object() -> dict[str, Any] | Response:
    data = request.get_json(silent=True, force=True)  # like /sales: the body decides, not the header
    if not isinstance(data, dict):
        return _problem(400, "malformed", "Malformed request", "the body must be a JSON object")
    return data
