"""The customer-facing kiosk: a Flask app factory, served by the node's waitress on 127.0.0.1.

Nothing is created at import time (flaskr's habit): the node builds the app with what it may show
(``KioskInfo``, ``KioskConfig``) and the live feed of device notices. Every page works as plain HTML;
JavaScript only adds live updates, the idle reset and (later) the on-screen keyboard.

Privacy by construction: the session is a signed cookie holding only the language and the last-seen
time, with a key made fresh at every start; no personal data ever goes in a URL; every response is
``no-store`` so the browser's back button cannot show the previous customer.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask, Response, request, session
from flask_babel import Babel
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFProtect

from edge.members import MemberDirectory
from kiosk_ui.i18n import LANGUAGES
from kiosk_ui.live import LiveFeed

if TYPE_CHECKING:
    from edge.feedback import SurveyAnswer, WarrantyRequest
    from edge.reservation import Reservation, ReservationRequest
    from edge.signup import Registration, SignupRequest

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class KioskInfo:
    """What the kiosk may show about the node (never anything about a customer)."""

    store: str
    node: str
    version: str


class SignupPort(Protocol):
    """What the kiosk needs from the node to sign a customer up (edge.signup.SignupService)."""

    def register(self, request: SignupRequest, card_token: str | None) -> Registration:
        """Join; returns the new member code."""
        ...


class ReservationPort(Protocol):
    """What the kiosk needs to take a reservation (edge.reservation.ReservationService)."""

    def reserve(self, request: ReservationRequest, member_token: str | None) -> Reservation:
        """Reserve; returns the confirmation code."""
        ...


class FeedbackPort(Protocol):
    """Survey answers and warranty registrations (edge.feedback.FeedbackService)."""

    def answer_survey(self, answer: SurveyAnswer, member_token: str | None) -> object:
        """Queue a survey answer."""
        ...

    def register_warranty(self, request: WarrantyRequest, member_token: str | None) -> object:
        """Queue a warranty registration."""
        ...


@dataclass(frozen=True, slots=True)
class KioskConfig:
    """Branding and behaviour from the ``[kiosk]`` section."""

    display_name: str = "Welcome"
    idle_timeout: float = 60.0
    default_language: str = "en"
    brand_color: str = "#0b3d5c"
    accent_color: str = "#ffb400"
    logo_file: Path | None = None
    languages: tuple[str, ...] = field(default=tuple(LANGUAGES))
    phone_region: str = "NL"
    signups_per_minute: int = 6


def create_app(
    info: KioskInfo,
    test_config: dict[str, object] | None = None,
    *,
    config: KioskConfig | None = None,
    feed: LiveFeed | None = None,
    signup: SignupPort | None = None,
    reservations: ReservationPort | None = None,
    feedback: FeedbackPort | None = None,
    members: MemberDirectory | None = None,
) -> Flask:
    """Build the kiosk app around the node's services."""
    cfg = config or KioskConfig()
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=64 * 1024,
        SECRET_KEY=secrets.token_bytes(32),  # fresh at every start: a restart ends every session
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        WTF_CSRF_TIME_LIMIT=None,  # the session's idle wipe bounds it instead
        BABEL_TRANSLATION_DIRECTORIES=str(Path(__file__).parent / "translations"),
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["kiosk"] = KioskState(
        info, cfg, feed or LiveFeed(None, cfg.idle_timeout), signup, reservations, feedback, members
    )

    def locale() -> str:
        code = session.get("lang") or cfg.default_language
        return LANGUAGES[code].babel if code in LANGUAGES else "en"

    Babel(app, locale_selector=locale)
    CSRFProtect(app)

    # Every request comes from the kiosk browser on loopback, so the limit is per kiosk, not per address:
    # it stops a flood of sign-ups (someone scripting the screen), not a particular client.
    limiter = Limiter(lambda: "kiosk", app=app, storage_uri="memory://", default_limits=[])

    from kiosk_ui import feedback as feedback_views
    from kiosk_ui import reserve as reserve_views
    from kiosk_ui import signup as signup_views
    from kiosk_ui.views import bp

    app.register_blueprint(bp)
    for blueprint in (signup_views.bp, reserve_views.bp, feedback_views.bp):
        limiter.limit(f"{cfg.signups_per_minute}/minute", methods=["POST"])(blueprint)
        app.register_blueprint(blueprint)

    @app.before_request
    def idle_wipe() -> None:
        # Even without JavaScript, a session idle longer than the timeout starts over.
        if request.endpoint in ("kiosk.events", "static"):
            return
        now = time.time()
        seen = session.get("seen")
        if isinstance(seen, (int, float)) and now - seen > cfg.idle_timeout:
            session.clear()
        session["seen"] = int(now)

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


@dataclass(frozen=True, slots=True)
class KioskState:
    """What the views need, kept on the app (no module-level globals)."""

    info: KioskInfo
    config: KioskConfig
    feed: LiveFeed
    signup: SignupPort | None = None
    reservations: ReservationPort | None = None
    feedback: FeedbackPort | None = None
    #: the node's in-memory member cache (filled by the central receiver), for the welcome screen
    members: MemberDirectory | None = None


def kiosk_state(app: Any) -> KioskState:
    """The app's ``KioskState``."""
    state: KioskState = app.extensions["kiosk"]
    return state
