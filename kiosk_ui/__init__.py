"""The customer-facing kiosk (Flask). For now a branded placeholder; the full kiosk has its own issue."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, render_template


@dataclass(frozen=True, slots=True)
class KioskInfo:
    """What the kiosk may show about the node (never anything about a customer)."""

    store: str
    node: str
    version: str


def create_app(info: KioskInfo, test_config: dict[str, object] | None = None) -> Flask:
    """Build the kiosk app; nothing is created at import time (flaskr's habit)."""
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    if test_config:
        app.config.update(test_config)

    @app.get("/")
    def attract() -> str:
        return render_template("placeholder/attract.html", info=info)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.after_request
    def headers(response):  # type: ignore[no-untyped-def]
        response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    return app
