"""The kiosk's forms: WTForms fields with the domain's own checks (edge/signup.py) and translated messages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    IntegerField,
    RadioField,
    SelectField,
    StringField,
    TelField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]  # WTForms 3.3; stubs are 3.2
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError

from edge.feedback import MAX_COMMENT, clean_receipt, clean_serial
from edge.reservation import MAX_QUANTITY, parse_item, pickup_window
from edge.signup import MAX_NAME, clean_email, clean_name, clean_phone


class _ContactChecks:
    """The e-mail and phone checks every form with a contact shares (WTForms finds ``validate_<field>``)."""

    phone_region: str
    clean: dict[str, Any]

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


class SignupForm(_ContactChecks, FlaskForm):  # type: ignore[misc]
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


class ReservationForm(_ContactChecks, FlaskForm):  # type: ignore[misc]
    """Product (scanned or typed), quantity, pick-up date, name and one contact."""

    product = StringField(
        _l("Product barcode or article number"),
        validators=[DataRequired(_l("Scan the product's barcode or type its number.")), Length(max=32)],
        render_kw={"autocomplete": "off", "maxlength": 32},
    )
    quantity = IntegerField(
        _l("Quantity"),
        default=1,
        validators=[NumberRange(1, MAX_QUANTITY, _l("Choose between 1 and 20."))],
        render_kw={"min": 1, "max": MAX_QUANTITY, "inputmode": "numeric"},
    )
    pickup_date = DateField(_l("Pick-up date"), validators=[DataRequired(_l("Choose a pick-up date."))])
    name = StringField(
        _l("Name"),
        validators=[DataRequired(_l("Please enter your name.")), Length(max=MAX_NAME)],
        render_kw={"autocomplete": "off", "maxlength": MAX_NAME},
    )
    email = EmailField(_l("E-mail"), validators=[Optional(), Length(max=254)], render_kw={"maxlength": 254})
    phone = TelField(_l("Mobile phone"), validators=[Optional(), Length(max=32)], render_kw={"maxlength": 32})

    def __init__(
        self, *args: Any, phone_region: str = "NL", today: dt.date | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.phone_region = phone_region
        self.first_day, self.last_day = pickup_window(today or dt.date.today())
        self.pickup_date.render_kw = {"min": self.first_day.isoformat(), "max": self.last_day.isoformat()}
        self.clean: dict[str, Any] = {}

    def validate_product(self, field: StringField) -> None:
        gtin, sku = parse_item(field.data or "")
        if not (gtin or sku):
            raise ValidationError(_l("This is not a valid product barcode or article number."))
        self.clean["gtin"], self.clean["sku"] = gtin, sku

    def validate_pickup_date(self, field: DateField) -> None:
        if field.data is None or not self.first_day <= field.data <= self.last_day:
            raise ValidationError(_l("Choose a date from tomorrow to 30 days ahead."))

    def validate_name(self, field: StringField) -> None:
        name = clean_name(field.data or "")
        if name is None:
            raise ValidationError(_l("Please use letters only (spaces, hyphens and apostrophes are fine)."))
        self.clean["name"] = name

    def validate(self, extra_validators: Any = None) -> bool:
        """Fields first, then: one contact is needed."""
        ok: bool = super().validate(extra_validators)
        if not (self.email.data or self.phone.data):
            self.email.errors = [*self.email.errors, _l("Please give an e-mail address or a phone number.")]
            ok = False
        return ok


class SurveyForm(FlaskForm):  # type: ignore[misc]
    """Net Promoter Score 0-10 and an optional "why?"."""

    score = RadioField(
        _l("How likely are you to recommend us to a friend?"),
        choices=[SelectChoice(str(n), str(n)) for n in range(11)],
        validators=[InputRequired(_l("Please choose a number from 0 to 10."))],
    )
    comment = TextAreaField(
        _l("Why? (optional)"),
        validators=[Optional(), Length(max=MAX_COMMENT)],
        render_kw={"maxlength": MAX_COMMENT, "rows": 3},
    )

    def validate_comment(self, field: TextAreaField) -> None:
        if field.data and not " ".join(field.data.split()).isprintable():
            raise ValidationError(_l("Please use plain text."))


class WarrantyForm(_ContactChecks, FlaskForm):  # type: ignore[misc]
    """Serial number and receipt (scanned or typed); name and contact unless the customer tapped in."""

    serial = StringField(
        _l("Serial number"),
        validators=[DataRequired(_l("Scan or type the serial number.")), Length(max=40)],
        render_kw={"autocomplete": "off", "maxlength": 40},
    )
    receipt = StringField(
        _l("Receipt code"),
        validators=[DataRequired(_l("Scan or type the code on your receipt.")), Length(max=48)],
        render_kw={"autocomplete": "off", "maxlength": 48},
    )
    product = StringField(
        _l("Product barcode (optional)"), validators=[Optional(), Length(max=32)], render_kw={"maxlength": 32}
    )
    name = StringField(
        _l("Name"), validators=[Optional(), Length(max=MAX_NAME)], render_kw={"maxlength": MAX_NAME}
    )
    email = EmailField(_l("E-mail"), validators=[Optional(), Length(max=254)], render_kw={"maxlength": 254})
    phone = TelField(_l("Mobile phone"), validators=[Optional(), Length(max=32)], render_kw={"maxlength": 32})

    def __init__(self, *args: Any, phone_region: str = "NL", member: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phone_region = phone_region
        self.member = member
        self.clean: dict[str, Any] = {}

    def validate_serial(self, field: StringField) -> None:
        serial = clean_serial(field.data or "")
        if serial is None:
            raise ValidationError(_l("This serial number does not look right."))
        self.clean["serial"] = serial

    def validate_receipt(self, field: StringField) -> None:
        receipt = clean_receipt(field.data or "")
        if receipt is None:
            raise ValidationError(_l("This receipt code does not look right."))
        self.clean["receipt"] = receipt

    def validate_product(self, field: StringField) -> None:
        if field.data:
            gtin, _sku = parse_item(field.data)
            if gtin is None:
                raise ValidationError(_l("This is not a valid product barcode or article number."))
            self.clean["gtin"] = gtin

    def validate_name(self, field: StringField) -> None:
        if field.data:
            name = clean_name(field.data)
            if name is None:
                raise ValidationError(
                    _l("Please use letters only (spaces, hyphens and apostrophes are fine).")
                )
            self.clean["name"] = name

    def validate(self, extra_validators: Any = None) -> bool:
        """A member who tapped in needs nothing more; anyone else leaves a name and one contact."""
        ok: bool = super().validate(extra_validators)
        if not self.member:
            if not self.name.data:
                self.name.errors = [*self.name.errors, _l("Please enter your name, or tap your card first.")]
                ok = False
            if not (self.email.data or self.phone.data):
                self.email.errors = [
                    *self.email.errors,
                    _l("Please give an e-mail address or a phone number."),
                ]
                ok = False
        return ok
