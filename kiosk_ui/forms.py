"""The kiosk's forms: WTForms fields with the domain's own checks (edge/signup.py) and translated messages."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, SelectField, StringField, TelField
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]  # WTForms 3.3; stubs are 3.2
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from edge.signup import MAX_NAME, clean_email, clean_name, clean_phone


class SignupForm(FlaskForm):  # type: ignore[misc]
    """First name and one contact now; granular consent; marketing unticked by default."""

    first_name = StringField(
        _l("First name"),
        validators=[DataRequired(_l("Please enter your first name.")), Length(max=MAX_NAME)],
        render_kw={"autocomplete": "off", "maxlength": MAX_NAME, "autocapitalize": "words"},
    )
    email = EmailField(
        _l("E-mail"),
        validators=[Optional(), Length(max=254)],
        render_kw={"autocomplete": "off", "maxlength": 254, "inputmode": "email"},
    )
    phone = TelField(
        _l("Mobile phone"),
        validators=[Optional(), Length(max=32)],
        render_kw={"autocomplete": "off", "maxlength": 32, "inputmode": "tel"},
    )
    privacy = BooleanField(
        _l("I have read the privacy notice."),
        validators=[DataRequired(_l("Please confirm you have read the privacy notice."))],
    )
    marketing_email = BooleanField(_l("Send me offers by e-mail."), default=False)
    marketing_sms = BooleanField(_l("Send me offers by SMS."), default=False)
    heard_via = SelectField(
        _l("How did you hear about us?"),
        choices=[
            SelectChoice("not_said", _l("Prefer not to say")),
            SelectChoice("friend", _l("From a friend")),
            SelectChoice("in_store", _l("In the store")),
            SelectChoice("social", _l("Social media")),
            SelectChoice("search", _l("Web search")),
            SelectChoice("advert", _l("An advert")),
            SelectChoice("other", _l("Other")),
        ],
        default="not_said",
    )

    def __init__(self, *args: Any, phone_region: str = "NL", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phone_region = phone_region
        self.clean: dict[str, str | None] = {}

    def validate_first_name(self, field: StringField) -> None:
        name = clean_name(field.data or "")
        if name is None:
            raise ValidationError(_l("Please use letters only (spaces, hyphens and apostrophes are fine)."))
        self.clean["first_name"] = name

    def validate_email(self, field: EmailField) -> None:
        if field.data:
            address = clean_email(field.data)
            if address is None:
                raise ValidationError(_l("This e-mail address does not look right."))
            self.clean["email"] = address

    def validate_phone(self, field: TelField) -> None:
        if field.data:
            number = clean_phone(field.data, self.phone_region)
            if number is None:
                raise ValidationError(_l("This phone number does not look right."))
            self.clean["phone"] = number

    def validate(self, extra_validators: Any = None) -> bool:
        """Fields first, then the rules that span fields (one contact; marketing needs its channel)."""
        ok: bool = super().validate(extra_validators)
        if not (self.email.data or self.phone.data):
            self.email.errors = [*self.email.errors, _l("Please give an e-mail address or a phone number.")]
            ok = False
        if self.marketing_email.data and not self.email.data:
            self.marketing_email.errors = [_l("Offers by e-mail need an e-mail address.")]
            ok = False
        if self.marketing_sms.data and not self.phone.data:
            self.marketing_sms.errors = [_l("Offers by SMS need a phone number.")]
            ok = False
        return ok
