"""Survey and warranty pages. The survey follows a sale (``/survey?receipt=…`` when the POS asks for it)."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from flask import Blueprint, current_app, redirect, render_template, request, session
from werkzeug.wrappers import Response as BaseResponse

from cloud_sync.errors import CloudSyncError
from edge.feedback import SurveyAnswer, WarrantyRequest, clean_comment, clean_receipt

if TYPE_CHECKING:
    from kiosk_ui import KioskState

log = logging.getLogger(__name__)
bp = Blueprint("feedback", __name__)


def _state() -> KioskState:
    from kiosk_ui import kiosk_state

    return kiosk_state(current_app)


def _spend_nonce(key: str) -> bool:
    nonce = session.pop(key, None)
    sent = request.form.get("nonce", "")
    return bool(nonce) and isinstance(sent, str) and secrets.compare_digest(str(nonce), sent)


def _page(template: str, key: str, status: int, **context: object) -> tuple[str, int]:
    session[key] = secrets.token_urlsafe(16)
    return render_template(template, nonce=session[key], **context), status


@bp.route("/survey", methods=["GET", "POST"])
def survey() -> BaseResponse | str | tuple[str, int]:
    state = _state()
    if state.feedback is None:
        return render_template("join_unavailable.html"), 503
    from kiosk_ui.forms import SurveyForm  # the form stack loads on the first form page

    form = SurveyForm()
    receipt = clean_receipt(request.values.get("receipt", "")) if request.values.get("receipt") else None
    if not form.is_submitted():
        return _page("survey.html", "survey_nonce", 200, form=form, receipt=receipt)
    if not _spend_nonce("survey_nonce"):
        return redirect("/thanks" if session.get("thanked") else "/survey", code=303)
    if not form.validate():
        return _page("survey.html", "survey_nonce", 400, form=form, receipt=receipt)
    answer = SurveyAnswer(
        score=int(form.score.data),
        comment=clean_comment(form.comment.data or ""),
        language=session.get("lang") or state.config.default_language,
        receipt=receipt,
    )
    visitor = state.feed.visitor()
    try:
        state.feedback.answer_survey(answer, visitor.token if visitor else None)
    except CloudSyncError as exc:
        log.error("survey answer not accepted: %s", exc)
        return _page("survey.html", "survey_nonce", 503, form=form, receipt=receipt, failed=True)
    session["thanked"] = True
    return redirect("/thanks", code=303)


@bp.route("/warranty", methods=["GET", "POST"])
def warranty() -> BaseResponse | str | tuple[str, int]:
    state = _state()
    if state.feedback is None:
        return render_template("join_unavailable.html"), 503
    visitor = state.feed.visitor()
    from kiosk_ui.forms import WarrantyForm  # the form stack loads on the first form page

    form = WarrantyForm(phone_region=state.config.phone_region, member=visitor is not None)
    if not form.is_submitted():
        return _page("warranty.html", "warranty_nonce", 200, form=form, member=visitor is not None)
    if not _spend_nonce("warranty_nonce"):
        return redirect("/thanks" if session.get("thanked") else "/warranty", code=303)
    if not form.validate():
        return _page("warranty.html", "warranty_nonce", 400, form=form, member=visitor is not None)
    registration = WarrantyRequest(
        serial=form.clean["serial"],
        receipt=form.clean["receipt"],
        gtin=form.clean.get("gtin"),
        name=form.clean.get("name"),
        email=form.clean.get("email"),
        phone=form.clean.get("phone"),
        language=session.get("lang") or state.config.default_language,
    )
    try:
        state.feedback.register_warranty(registration, visitor.token if visitor else None)
    except (CloudSyncError, ValueError) as exc:
        log.error("warranty registration not accepted: %s", exc)
        return _page(
            "warranty.html", "warranty_nonce", 503, form=form, member=visitor is not None, failed=True
        )
    state.feed.forget_visitor()
    session["thanked"] = True
    return redirect("/thanks", code=303)


@bp.get("/thanks")
def thanks() -> BaseResponse | str:
    if not session.pop("thanked", None):
        return redirect("/")
    return render_template("thanks.html")
