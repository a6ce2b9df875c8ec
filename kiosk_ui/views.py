"""Kiosk pages. Views only read and render; what a tap means lives in edge/intake.py and live.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    send_file,
    session,
)
from flask_babel import get_locale
from werkzeug.wrappers import Response as BaseResponse

from kiosk_ui.i18n import LANGUAGES

if TYPE_CHECKING:
    from kiosk_ui import KioskState
from kiosk_ui.live import TooManyStreams

bp = Blueprint("kiosk", __name__)


def _state() -> KioskState:
    from kiosk_ui import kiosk_state

    return kiosk_state(current_app)


@bp.app_context_processor
def page_context() -> dict[str, object]:
    state = _state()
    code = session.get("lang") or state.config.default_language
    language = LANGUAGES.get(code, LANGUAGES["en"])
    return {
        "info": state.info,
        "kiosk": state.config,
        "language": language,
        "languages": [LANGUAGES[c] for c in state.config.languages if c in LANGUAGES],
        "locale": get_locale(),
        # the idle reset only matters once someone changed something (a language, a visitor)
        "idle_armed": code != state.config.default_language or request.endpoint != "kiosk.attract",
    }


@bp.get("/")
def attract() -> str:
    if request.args.get("idle"):
        # The idle timer (or "Done") sent us here: the next customer starts with a clean screen.
        session.clear()
        _state().feed.forget_visitor()
    return render_template("attract.html")


@bp.get("/welcome")
def welcome() -> BaseResponse | str:
    state = _state()
    visitor = state.feed.visitor()
    if visitor is None:
        return redirect("/")
    # only a first name, the tier, the balance and rewards: no contact data ever reaches the screen
    member = state.members.lookup(visitor.token) if state.members is not None else None
    return render_template("welcome.html", visitor_state="member" if member else visitor.state, member=member)


@bp.get("/privacy")
def privacy() -> str:
    return render_template("privacy.html")


@bp.post("/lang")
def set_language() -> BaseResponse:
    code = request.form.get("lang", "")
    if code not in LANGUAGES or code not in _state().config.languages:
        abort(400)
    session["lang"] = code
    back = request.form.get("next", "/")
    # only our own paths: never an open redirect
    return redirect(
        back if back in ("/", "/welcome", "/privacy", "/join", "/reserve", "/survey", "/warranty") else "/"
    )


@bp.get("/events")
def events() -> Response:
    try:
        body = _state().feed.stream()
    except TooManyStreams:
        return Response("too many live streams\n", status=503, headers={"Retry-After": "5"})
    return Response(
        body,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@bp.get("/brand.css")
def brand_css() -> Response:
    # Colours come from validated config (#rrggbb); served as a stylesheet so the CSP needs no inline style.
    cfg = _state().config
    css = f":root {{ --brand: {cfg.brand_color}; --accent: {cfg.accent_color}; }}\n"
    return Response(css, mimetype="text/css")


@bp.get("/brand/logo")
def logo() -> BaseResponse:
    path = _state().config.logo_file
    if path is None:
        abort(404)
    return send_file(path, mimetype="image/svg+xml" if path.suffix.lower() == ".svg" else "image/png")


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.app_errorhandler(400)
def bad_request(_exc: Exception) -> tuple[str, int]:
    return render_template("error.html", code=400), 400


@bp.app_errorhandler(429)
def too_many(_exc: Exception) -> tuple[str, int]:
    return render_template("error.html", code=429), 429


@bp.app_errorhandler(404)
def not_found(_exc: Exception) -> tuple[str, int]:
    return render_template("error.html", code=404), 404
