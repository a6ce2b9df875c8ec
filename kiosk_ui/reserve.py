"""Reservation pages: scan (or type) a product, choose quantity and pick-up date, leave a name and contact."""

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
from edge.reservation import ReservationRequest

if TYPE_CHECKING:
    from kiosk_ui import KioskState
    from kiosk_ui.forms import ReservationForm

log = logging.getLogger(__name__)
bp = Blueprint("reserve", __name__)


def _state() -> KioskState:
    from kiosk_ui import kiosk_state

    return kiosk_state(current_app)


def _render(form: ReservationForm, status: int, **extra: object) -> tuple[str, int]:
    session["reserve_nonce"] = secrets.token_urlsafe(16)
    return render_template("reserve.html", form=form, nonce=session["reserve_nonce"], **extra), status


@bp.route("/reserve", methods=["GET", "POST"])
def reserve() -> BaseResponse | str | tuple[str, int]:
    state = _state()
    if state.reservations is None:
        return render_template("join_unavailable.html"), 503
    from kiosk_ui.forms import ReservationForm  # the form stack loads on the first form page

    form = ReservationForm(phone_region=state.config.phone_region)
    if not form.is_submitted():
        scanned = state.feed.last_product()
        if scanned:
            form.product.data = scanned
        return _render(form, 200)
    nonce = session.pop("reserve_nonce", None)
    sent = http_request.form.get("nonce", "")
    if not nonce or not isinstance(sent, str) or not secrets.compare_digest(str(nonce), sent):
        return redirect("/reserved" if session.get("reserved") else "/reserve", code=303)
    if not form.validate():
        return _render(form, 400)
    assert form.pickup_date.data is not None  # validate_pickup_date refused a missing date
    request = ReservationRequest(
        gtin=form.clean.get("gtin"),
        sku=form.clean.get("sku"),
        quantity=int(form.quantity.data or 1),
        pickup_date=form.pickup_date.data,
        name=form.clean["name"],
        email=form.clean.get("email"),
        phone=form.clean.get("phone"),
        language=session.get("lang") or state.config.default_language,
    )
    visitor = state.feed.visitor()
    try:
        reservation = state.reservations.reserve(request, visitor.token if visitor else None)
    except (CloudSyncError, MemberCodesExhausted) as exc:
        log.error("reservation not accepted: %s", exc)
        return _render(form, 503, failed=True)
    state.feed.forget_visitor()
    session["reserved"] = {"code": reservation.code, "date": request.pickup_date.isoformat()}
    return redirect("/reserved", code=303)


@bp.get("/reserved")
def reserved() -> BaseResponse | str:
    done = session.get("reserved")
    if not isinstance(done, dict) or "code" not in done:
        return redirect("/")
    code = str(done["code"])
    qr = segno.make(code, error="m").svg_data_uri(scale=8, border=2)
    return render_template("reserved.html", code=code, date=str(done.get("date", "")), qr=qr)
