"""Sign-up pages: the form (plain HTML POST, works without JavaScript) and the "welcome aboard" page."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

import segno
from flask import Blueprint, current_app, redirect, render_template, session
from flask import request as http_request
from werkzeug.wrappers import Response as BaseResponse

from cloud_sync.errors import CloudSyncError
from edge.membercodes import MemberCodesExhausted
from edge.signup import SignupRequest

if TYPE_CHECKING:
    from kiosk_ui import KioskState

log = logging.getLogger(__name__)
bp = Blueprint("signup", __name__)


def _state() -> KioskState:
    from kiosk_ui import kiosk_state

    return kiosk_state(current_app)


def request_form_nonce() -> str:
    """The nonce the submitted form carried."""
    value = http_request.form.get("nonce", "")
    return value if isinstance(value, str) else ""


@bp.route("/join", methods=["GET", "POST"])
def join() -> BaseResponse | str | tuple[str, int]:
    state = _state()
    if state.signup is None:
        return render_template("join_unavailable.html"), 503
    from kiosk_ui.forms import SignupForm  # the form stack loads on the first form page

    form = SignupForm(phone_region=state.config.phone_region)
    if form.is_submitted():
        # One sign-up per form shown: a double tap on "Join" or the browser re-sending the POST must not
        # create a second member. The nonce is spent before anything else happens.
        nonce = session.pop("join_nonce", None)
        if not nonce or not secrets.compare_digest(str(nonce), request_form_nonce()):
            return redirect("/joined" if session.get("joined") else "/join", code=303)
    if not form.validate_on_submit():
        session["join_nonce"] = secrets.token_urlsafe(16)
        return render_template("join.html", form=form, nonce=session["join_nonce"]), (
            400 if form.is_submitted() else 200
        )
    request = SignupRequest(
        first_name=form.clean["first_name"] or "",
        email=form.clean.get("email"),
        phone=form.clean.get("phone"),
        marketing_email=bool(form.marketing_email.data),
        marketing_sms=bool(form.marketing_sms.data),
        heard_via=form.heard_via.data or "not_said",
        language=session.get("lang") or state.config.default_language,
    )
    visitor = state.feed.visitor()
    card = visitor.token if visitor is not None and visitor.source == "nfc" else None
    try:
        registration = state.signup.register(request, card)
    except (CloudSyncError, MemberCodesExhausted) as exc:
        log.error("sign-up not accepted: %s", exc)
        session["join_nonce"] = secrets.token_urlsafe(16)
        return render_template("join.html", form=form, failed=True, nonce=session["join_nonce"]), 503
    state.feed.forget_visitor()
    # Shown once on the next page; the idle wipe clears it with the rest of the session.
    session["joined"] = {"code": registration.member_code, "card": registration.card_bound}
    return redirect("/joined", code=303)


@bp.get("/joined")
def joined() -> BaseResponse | str:
    done = session.get("joined")
    if not isinstance(done, dict) or "code" not in done:
        return redirect("/")
    code = str(done["code"])
    qr = segno.make(code, error="m").svg_data_uri(scale=8, border=2)
    spaced = f"{code[0]} {code[1:5]} {code[5:9]} {code[9:]}"
    return render_template("joined.html", code=code, spaced=spaced, qr=qr, card_bound=bool(done.get("card")))
