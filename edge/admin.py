"""The loopback admin endpoint: status, Prometheus metrics and, with --simulate, device injection.

Views only translate HTTP to calls on the node's services and errors to RFC 9457 problem responses.
Injection needs the bearer token from the data directory, so only a user who can read the node's
data (root or the service user) can make it see taps.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, Protocol

from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from cloud_sync.envelope import SignedMessage
from cloud_sync.errors import EnvelopeError, OutboxClosed, OutboxFull
from cloud_sync.outbox import OutboxUnavailable
from edge.intake import ScanOutcome

MAX_BODY = 4096


class Simulator(Protocol):
    """What the control endpoint can inject."""

    def tap(self, uid: bytes) -> SignedMessage:
        """Inject a card tap."""
        ...

    def scan(self, code: str) -> ScanOutcome:
        """Inject a scan."""
        ...

    def press(self) -> SignedMessage:
        """Inject a button press."""
        ...


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    """An RFC 9457 problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body.update(extra)  # may set a specific "type"
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def create_admin_app(
    status: Callable[[], dict[str, Any]],
    registry: CollectorRegistry,
    simulator: Simulator | None,
    control_token: str,
) -> Flask:
    """Build the admin app around the node's services."""
    app = Flask("kiosk_edge_admin")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY)

    @app.get("/status")
    def get_status() -> Response:
        return jsonify(status())

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    def authorised() -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), control_token.encode())

    def inject(action: Callable[[Simulator, dict[str, Any]], SignedMessage | ScanOutcome]) -> Response:
        if simulator is None:
            return problem(404, "Not simulating", "the node was not started with --simulate")
        if not authorised():
            return problem(401, "Unauthorised", "a valid control token is required")
        data = request.get_json(silent=True) if request.content_length else {}
        if not isinstance(data, dict):
            return problem(400, "Malformed request", "the body must be a JSON object")
        try:
            message = action(simulator, data)
        except (EnvelopeError, ValueError) as exc:
            return problem(400, "Invalid device input", str(exc))
        except OutboxFull as exc:
            response = problem(507, "Outbox full", str(exc), alarm="outbox_full")
            response.headers["Retry-After"] = "30"
            return response
        except (OutboxUnavailable, OutboxClosed) as exc:
            return problem(503, "Not accepted", str(exc))
        if isinstance(message, ScanOutcome):
            if message.error is not None:
                return problem(422, "Scan rejected", message.error, kind=message.kind)
            if message.message is None:  # a product, reservation or receipt: for the screens, no event
                return jsonify({"accepted": False, "kind": message.kind})
            kind, message = message.kind, message.message
            return jsonify(
                {
                    "accepted": True,
                    "kind": kind,
                    "id": message.id,
                    "seq": message.seq,
                    "schema": message.schema,
                }
            )
        return jsonify({"accepted": True, "id": message.id, "seq": message.seq, "schema": message.schema})

    @app.post("/sim/tap")
    def sim_tap() -> Response:
        def action(sim: Simulator, data: dict[str, Any]) -> SignedMessage:
            uid = data.get("uid")
            if not isinstance(uid, str):
                raise ValueError("'uid' must be a hex string")
            try:
                raw = bytes.fromhex(uid)
            except ValueError:
                raise ValueError("'uid' must be hexadecimal (e.g. 04A1B2C3D4E5F6)") from None
            return sim.tap(raw)

        return inject(action)

    @app.post("/sim/scan")
    def sim_scan() -> Response:
        def action(sim: Simulator, data: dict[str, Any]) -> ScanOutcome:
            code = data.get("code")
            if not isinstance(code, str):
                raise ValueError("'code' must be a string")
            return sim.scan(code)

        return inject(action)

    @app.post("/sim/button")
    def sim_button() -> Response:
        return inject(lambda sim, _data: sim.press())

    @app.errorhandler(413)
    def too_large(_exc: Exception) -> Response:
        return problem(413, "Request too large", f"bodies are limited to {MAX_BODY} bytes")

    @app.errorhandler(404)
    def not_found(_exc: Exception) -> Response:
        return problem(404, "Not found", "no such admin endpoint")

    @app.errorhandler(405)
    def wrong_method(_exc: Exception) -> Response:
        return problem(405, "Method not allowed", "see docs for the admin endpoint")

    return app
