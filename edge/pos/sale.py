"""The POS's sale request (the body of ``POST /pos/v1/sales``), checked strictly and normalised.

The API answers a bad request with an RFC 9457 problem that names *every* bad field, because the person
reading it is an integrator fixing their till software, and one round trip per mistake wastes their day.
So this is a hand-written checker that collects errors (as JSON pointers) instead of a msgspec Struct,
which stops at the first error, or jsonschema, which is not a runtime dependency of the node. It runs on
every sale: a 5-line sale takes 50-90 us on the 2-core development VM, about a third of it in
``json.loads`` (``tests/test_pos_sale.py`` keeps a loose bound on it).

Rules (the table in ``docs/loyalty.md`` is the integrators' copy):

- Body: UTF-8 JSON, at most 256 KiB, one object. ``NaN``/``Infinity`` are refused (not JSON); a member
  given twice in one object is refused (two parsers could keep different copies); unknown members are
  refused, each named; ``null`` is never accepted for a member (leave an optional one out instead).
- Numbers are integers: money in minor units (cents). A JSON number with a fraction or an exponent
  (``1.5``, ``398.0``, ``1e2``) is refused, and so are ``true``/``false`` where a number belongs.
- ``total`` must equal the lines' sum less the discount. The discount shrinks the *size* of the amount:
  for a pure return (negative sum) it shrinks the refund, so ``total = sum + discount`` there. This is what
  makes a full return the mirror image of its sale (same lines with negated quantities, same discount,
  negated total), which the loyalty rules (:mod:`cloud_sync.loyalty`) rely on. The totals are checked
  only when every line is valid: a sum over broken lines would only add noise to the problem.
- Line names are kept verbatim apart from stripping surrounding whitespace: ``<script>`` or SQL in a
  product name is the till's text, and it is escaped where it is displayed or stored, not "sanitised"
  here. Control characters (C0, C1) and the line/paragraph separators U+2028/U+2029 are refused: they
  break receipts, logs and JSON-in-JavaScript. Lone surrogates are refused too (not encodable as UTF-8).

Nothing here logs: a sale body may be attached to a member.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Literal, cast, get_args

import msgspec
from stdnum import ean

MAX_BODY_BYTES: Final = 256 * 1024
MAX_LINES: Final = 500
MAX_ERRORS: Final = 50
MAX_AMOUNT: Final = 10**12
MAX_DISCOUNT: Final = 1_000_000_000
MAX_UNIT_PRICE: Final = 100_000_000
MAX_QUANTITY: Final = 9999
MAX_NAME_LENGTH: Final = 120
MAX_FUTURE: Final = timedelta(minutes=5)
MAX_AGE: Final = timedelta(days=30)

FLOAT_PROBLEM: Final = "use an integer number of minor units (no decimals)"

Payment = Literal["cash", "card", "mobile", "voucher", "mixed", "other"]
PAYMENTS: Final = frozenset(get_args(Payment))

_SALE_MEMBERS: Final = ("lines", "discount", "total", "currency", "payment", "sold_at", "survey")
_LINE_MEMBERS: Final = ("gtin", "sku", "name", "quantity", "unit_price", "category")
_SALE_KEYS: Final = frozenset(_SALE_MEMBERS)
_LINE_KEYS: Final = frozenset(_LINE_MEMBERS)

# Patterns end in \Z, not $: Python's $ also matches before a trailing newline. re.ASCII: \d and friends
# would otherwise accept Arabic-Indic or full-width digits.
_GTIN_SHAPE: Final = re.compile(r"(?:[0-9]{8}|[0-9]{12,14})\Z", re.ASCII)
_SKU: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}\Z", re.ASCII)
_CATEGORY: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z", re.ASCII)
_CURRENCY_SHAPE: Final = re.compile(r"[A-Z]{3}\Z", re.ASCII)
_SKU_RULE: Final = "1-32 of A-Z a-z 0-9 . _ - starting with a letter or digit"
_CATEGORY_RULE: Final = "1-32 of a-z 0-9 _ - starting with a letter or digit"
# bidi embedding/override/isolate controls (U+202A-202E, U+2066-2069) would let a name reorder the text
# around it on receipts and screens ("Trojan Source"), so they are refused like control characters
_BAD_NAME_CHARS: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})\Z",
    re.ASCII,
)
# Python's int() refuses literals of more than 4,300 digits. Only then is a body parsed a second time, with
# integer literals longer than this (out of every range here) replaced by a stand-in of the same sign.
_MAX_INT_DIGITS: Final = 40
_HUGE: Final = 10**_MAX_INT_DIGITS
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class FieldError:
    """One bad field: where (a JSON pointer into the request, "" for the whole body) and what is wrong."""

    field: str
    problem: str


class SaleInvalid(Exception):  # noqa: N818 - the name the API and its callers use
    """The sale request was refused; ``errors`` lists every problem found (at least one)."""

    def __init__(self, errors: list[FieldError]) -> None:
        if not errors:
            raise ValueError("SaleInvalid needs at least one FieldError")
        self.errors = errors
        shown = "; ".join(f"{e.field or '(body)'}: {e.problem}" for e in errors[:5])
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        count = f"{len(errors)} problem" + ("s" if len(errors) > 1 else "")
        super().__init__(f"invalid sale request ({count}): {shown}{more}")


class SaleLine(msgspec.Struct, frozen=True):
    """One normalised line: exactly one of ``gtin`` (14 digits) or ``sku``; satisfies ``EarnLine``."""

    gtin: str | None
    sku: str | None
    name: str
    quantity: int
    unit_price: int
    category: str

    def event_dict(self) -> dict[str, object]:
        """This line as it goes into the outbox event body (only the identifier that is present)."""
        out: dict[str, object] = {"gtin": self.gtin} if self.gtin is not None else {"sku": self.sku}
        out["name"] = self.name
        out["quantity"] = self.quantity
        out["unit_price"] = self.unit_price
        out["category"] = self.category
        return out


class Sale(msgspec.Struct, frozen=True):
    """A validated sale; ``sold_at`` is UTC ``YYYY-MM-DDTHH:MM:SS.mmmZ`` or None when the POS gave none."""

    lines: tuple[SaleLine, ...]
    discount: int
    total: int
    currency: str
    payment: Payment
    sold_at: str | None
    survey: bool

    def event_lines(self) -> list[dict[str, object]]:
        """The lines for the outbox event body, in request order."""
        return [line.event_dict() for line in self.lines]


if TYPE_CHECKING:
    from cloud_sync.loyalty import EarnLine

    def _sale_lines_earn(line: SaleLine) -> EarnLine:
        """Never called: mypy checks here that a SaleLine can be scored by the loyalty rules."""
        return line


# -- decoding ---------------------------------------------------------------------------------------


class _NotJsonError(ValueError):
    pass


class _JsonObject(dict[str, Any]):
    """A decoded object in which some member names occurred more than once (rare: the slow path)."""

    __slots__ = ("duplicates",)
    duplicates: tuple[str, ...]


RECEIPT_RE: Final = re.compile(r"^[0-9A-Za-z-]{4,48}\Z")


def small_object(
    raw: bytes, allowed: frozenset[str], limit: int, shape: str
) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """A small JSON object body (a redemption, a pick-up): the object, or ``shape`` as the reason it is not
    one; every member outside ``allowed`` is named."""
    try:
        doc = json.loads(raw.decode("utf-8")) if len(raw) <= limit else None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        return None, [FieldError("", shape)]
    return doc, [FieldError(f"/{key}", "unknown member") for key in sorted(set(doc) - allowed)]


def optional_receipt(doc: dict[str, Any], errors: list[FieldError]) -> str | None:
    """The optional ``receipt`` member (the till's receipt id); a bad one is added to ``errors``."""
    receipt = doc.get("receipt")
    if "receipt" in doc and receipt is None:
        errors.append(FieldError("/receipt", "receipt must be a string when given (leave it out otherwise)"))
    elif receipt is not None and (not isinstance(receipt, str) or not RECEIPT_RE.match(receipt)):
        errors.append(FieldError("/receipt", "receipt must be 4-48 letters, digits or '-'"))
    else:
        return receipt
    return None


def _object_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    dups: dict[str, None] = {}
    for key, _ in pairs:
        if key in seen:
            dups[key] = None
        seen.add(key)
    marked = _JsonObject(obj)
    marked.duplicates = tuple(dups)
    return marked


def _parse_int(text: str) -> int:
    if len(text) <= _MAX_INT_DIGITS:
        return int(text)
    return -_HUGE if text.startswith("-") else _HUGE


def _refuse_constant(name: str) -> Any:
    raise _NotJsonError(f"{name} is not a JSON number")


def _loads(text: str, parse_int: Callable[[str], int] | None) -> Any:
    return json.loads(
        text, object_pairs_hook=_object_hook, parse_int=parse_int, parse_constant=_refuse_constant
    )


def _body_error(problem: str) -> SaleInvalid:
    return SaleInvalid([FieldError("", problem)])


def parse_sale(raw: bytes, *, now: datetime | None = None) -> Sale:
    """Decode and validate a sale request body; raises SaleInvalid naming every bad field.

    Errors about the body as a whole (too large, not UTF-8, not JSON, not an object) have field "".
    ``now`` (timezone-aware, default: the current time) is what ``sold_at`` is compared with.
    """
    if len(raw) > MAX_BODY_BYTES:
        raise _body_error(f"the request body is {len(raw)} bytes; at most {MAX_BODY_BYTES} are accepted")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _body_error(f"the request body is not valid UTF-8 (at byte {exc.start})") from None
    if not text.strip():
        raise _body_error("the request body is empty; send the sale as a JSON object")
    return validate_sale(_decode(text), now=now)


def _decode(text: str) -> Any:
    """The decoded JSON; SaleInvalid (field "") when it is not JSON we accept."""
    try:
        try:
            return _loads(text, None)
        except (_NotJsonError, json.JSONDecodeError, RecursionError):
            raise
        except ValueError:
            # int() refuses literals of more than 4,300 digits (CVE-2020-10735): parse again with a
            # stand-in for long literals, so such a number is refused by its field's range check.
            return _loads(text, _parse_int)
    except _NotJsonError as exc:
        raise _body_error(f"the request body is not JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise _body_error(
            f"the request body is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise _body_error("the request body is not acceptable JSON: it is nested too deeply") from None


# -- validation -------------------------------------------------------------------------------------


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _member(base: str, key: object) -> str:
    """The JSON pointer of member ``key`` of the object at ``base`` (RFC 6901 escaping)."""
    return base + "/" + str(key).replace("~", "~0").replace("/", "~1")


class _Checker:
    """Collects FieldErrors while walking one request; one instance per request."""

    __slots__ = ("errors",)

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str, problem: str) -> None:
        self.errors.append(FieldError(field, problem))

    def members(self, obj: dict[str, Any], ptr: str, allowed: frozenset[str], names: tuple[str, ...]) -> None:
        """Refuse unknown and repeated members of ``obj``."""
        if not allowed.issuperset(obj):
            for key in obj:
                if key not in allowed:
                    self.add(_member(ptr, key), f"unknown member; allowed are {', '.join(names)}")
        for key in getattr(obj, "duplicates", ()):
            self.add(_member(ptr, key), "member given more than once; send it once")

    def integer(
        self, obj: dict[str, Any], base: str, key: str, low: int, high: int, *, money: bool
    ) -> int | None:
        """``obj[key]`` if it is an integer in ``low..high``, else None and an error at ``base/key``."""
        value = obj.get(key, _MISSING)
        if type(value) is int and low <= value <= high:  # type(): True and False are ints to Python
            return value
        if value is _MISSING:
            problem = f"{key} is required"
        elif type(value) is int:
            problem = f"{key} must be between {low} and {high}"
        elif isinstance(value, float):
            problem = FLOAT_PROBLEM if money else f"use an integer {key} (no decimals)"
        else:
            unit = "integer number of minor units" if money else "integer"
            problem = f"{key} must be an {unit}, not {_json_type(value)}"
        self.add(f"{base}/{key}", problem)
        return None

    def string(
        self, obj: dict[str, Any], base: str, key: str, pattern: re.Pattern[str], rule: str, *, required: bool
    ) -> str | None:
        """``obj[key]`` if it is a string matching ``pattern``, else None (and an error unless absent
        and optional)."""
        value = obj.get(key, _MISSING)
        if type(value) is str and pattern.match(value):
            return value
        if value is _MISSING:
            if required:
                self.add(f"{base}/{key}", f"{key} is required")
        elif type(value) is not str:
            self.add(f"{base}/{key}", f"{key} must be a string, not {_json_type(value)}")
        else:
            self.add(f"{base}/{key}", f"{key} must be {rule}")
        return None

    def gtin(self, value: object, base: str) -> str | None:
        """The GTIN as 14 digits (GS1's form for storing and comparing GTINs of any length)."""
        if type(value) is not str:
            self.add(base + "/gtin", f"gtin must be a string of digits, not {_json_type(value)}")
        elif not _GTIN_SHAPE.match(value):
            self.add(base + "/gtin", "gtin must be 8, 12, 13 or 14 digits")
        elif not _check_digit_ok(value):
            self.add(base + "/gtin", "gtin has a wrong check digit")
        else:
            return value.zfill(14)
        return None

    def name(self, obj: dict[str, Any], base: str) -> str | None:
        """The product name, stripped of surrounding whitespace, otherwise verbatim."""
        value = obj.get("name", _MISSING)
        if type(value) is str and not _BAD_NAME_CHARS.search(value):
            stripped = value.strip()
            if 0 < len(stripped) <= MAX_NAME_LENGTH:
                return stripped
            problem = (
                f"name must be at most {MAX_NAME_LENGTH} characters" if stripped else "name must not be empty"
            )
        elif value is _MISSING:
            problem = "name is required"
        elif type(value) is not str:
            problem = f"name must be a string, not {_json_type(value)}"
        else:
            problem = "name must not contain control characters, line separators or bidi controls"
        self.add(base + "/name", problem)
        return None

    def line(self, obj: object, ptr: str) -> SaleLine | None:
        """One normalised line, or None when anything in it is wrong (each problem recorded)."""
        if not isinstance(obj, dict):
            self.add(ptr, f"each line must be a JSON object, not {_json_type(obj)}")
            return None
        before = len(self.errors)
        self.members(obj, ptr, _LINE_KEYS, _LINE_MEMBERS)
        has_gtin = "gtin" in obj
        if has_gtin == ("sku" in obj):
            self.add(ptr, "a line needs exactly one of gtin or sku" + (", not both" if has_gtin else ""))
        gtin = self.gtin(obj["gtin"], ptr) if has_gtin else None
        sku = self.string(obj, ptr, "sku", _SKU, _SKU_RULE, required=False)
        name = self.name(obj, ptr)
        quantity = self.integer(obj, ptr, "quantity", -MAX_QUANTITY, MAX_QUANTITY, money=False)
        if quantity == 0:
            self.add(ptr + "/quantity", "quantity must not be 0 (negative for a returned item)")
        unit_price = self.integer(obj, ptr, "unit_price", 0, MAX_UNIT_PRICE, money=True)
        category = self.string(obj, ptr, "category", _CATEGORY, _CATEGORY_RULE, required=True)
        if len(self.errors) != before or name is None or quantity is None or unit_price is None:
            return None
        if category is None:
            return None
        return SaleLine(gtin, sku, name, quantity, unit_price, category)

    def lines(self, doc: dict[str, Any]) -> list[SaleLine] | None:
        """The normalised lines, or None when the array or any line in it is wrong."""
        raw = doc.get("lines", _MISSING)
        if raw is _MISSING:
            self.add("/lines", "lines is required")
        elif not isinstance(raw, list):
            self.add("/lines", f"lines must be an array of line objects, not {_json_type(raw)}")
        elif not raw:
            self.add("/lines", "a sale needs at least one line")
        elif len(raw) > MAX_LINES:
            self.add("/lines", f"a sale has at most {MAX_LINES} lines, not {len(raw)}")
        else:
            parsed = [self.line(item, f"/lines/{i}") for i, item in enumerate(raw)]
            if all(line is not None for line in parsed):
                return cast(list[SaleLine], parsed)
        return None

    def totals(self, lines: list[SaleLine], discount: int, total: int) -> None:
        """Check that ``total`` is the lines' sum with the discount taken off its size."""
        gross = sum(line.quantity * line.unit_price for line in lines)
        if abs(gross) > MAX_AMOUNT:
            self.add("/lines", f"the lines add up to {gross}, beyond the limit of {MAX_AMOUNT} minor units")
        elif discount > abs(gross):
            self.add(
                "/discount", f"the discount ({discount}) must not exceed the lines' value ({abs(gross)})"
            )
        else:
            expected = gross - discount if gross >= 0 else gross + discount
            if total != expected:
                how = "less" if gross >= 0 else "with its size reduced by"
                self.add(
                    "/total",
                    f"total must be {expected} (the lines' sum {gross} {how} the discount {discount}), "
                    f"not {total}",
                )

    def sold_at(self, value: object, now: datetime) -> datetime | None:
        ptr = "/sold_at"
        if type(value) is not str:
            self.add(ptr, f"sold_at must be an RFC 3339 date-time string, not {_json_type(value)}")
            return None
        if not _RFC3339.match(value):
            self.add(ptr, "sold_at must be an RFC 3339 date-time with an offset, e.g. 2026-11-26T12:00:00Z")
            return None
        if value[17:19] == "60":
            self.add(ptr, "sold_at must not be a leap second (use :59)")
            return None
        try:
            # the pattern above admits only RFC 3339; fromisoformat (C, 3.11+) then checks the calendar
            when = datetime.fromisoformat(value.upper()).astimezone(UTC)
        except (ValueError, OverflowError):
            self.add(ptr, "sold_at is not a real date and time")
            return None
        if when - now > MAX_FUTURE:
            self.add(ptr, "sold_at is more than 5 minutes in the future; check the till's clock")
            return None
        if now - when > MAX_AGE:
            self.add(ptr, "sold_at is more than 30 days in the past")
            return None
        return when

    def currency(self, value: object, on: date) -> str | None:
        ptr = "/currency"
        if value is _MISSING:
            self.add(ptr, "currency is required")
        elif type(value) is not str:
            self.add(ptr, f"currency must be an ISO 4217 code string, not {_json_type(value)}")
        elif not _CURRENCY_SHAPE.match(value):
            self.add(ptr, "currency must be an ISO 4217 code of three upper-case letters, e.g. EUR")
        elif value not in _currencies_in_use(on):
            self.add(ptr, f"currency {value} is not an ISO 4217 currency in use")
        else:
            return value
        return None


@lru_cache(maxsize=4)
def _currencies_in_use(on: date) -> frozenset[str]:
    """ISO 4217 codes that are legal tender somewhere on day ``on`` (CLDR data, through Babel).

    Babel's ``list_currencies()`` also lists withdrawn ones (DEM, HRK) and codes that are not money
    (XXX "no currency", XTS "for testing", XAU gold); a till that sends one of those is misconfigured.
    Imported here, not at module level: Babel's global data costs ~3.5 MB, paid only when a sale arrives.
    """
    from babel.core import get_global

    day = (on.year, on.month, on.day)
    codes: set[str] = set()
    for history in get_global("territory_currencies").values():
        for code, start, end, tender in history:
            if tender and (start is None or start <= day) and (end is None or day <= end):
                codes.add(code)
    return frozenset(codes)


@lru_cache(maxsize=4096)
def _check_digit_ok(digits: str) -> bool:
    """Whether a GTIN of a valid shape has the right GS1 check digit.

    Cached: a shop sells the same few thousand products all day, and stdnum's check costs more than the
    rest of a line's validation.
    """
    return ean.calc_check_digit(digits[:-1]) == digits[-1]


def _utc_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now


def _capped(errors: list[FieldError]) -> list[FieldError]:
    if len(errors) <= MAX_ERRORS:
        return errors
    return [*errors[:MAX_ERRORS], FieldError("", f"... and {len(errors) - MAX_ERRORS} more problems")]


def validate_sale(doc: object, *, now: datetime | None = None) -> Sale:
    """Validate an already-decoded JSON sale request; raises SaleInvalid naming every bad field.

    ``doc`` is what a JSON decoder produced (dicts, lists, str, int, float, bool, None). At most
    ``MAX_ERRORS`` problems are listed, then one "... and N more problems".
    """
    current = _utc_now(now)
    if not isinstance(doc, dict):
        raise _body_error(f"the request body must be a JSON object, not {_json_type(doc)}")
    check = _Checker()
    check.members(doc, "", _SALE_KEYS, _SALE_MEMBERS)
    lines = check.lines(doc)
    discount = check.integer(doc, "", "discount", 0, MAX_DISCOUNT, money=True) if "discount" in doc else 0
    total = check.integer(doc, "", "total", -MAX_AMOUNT, MAX_AMOUNT, money=True)
    sold_at = check.sold_at(doc["sold_at"], current) if "sold_at" in doc else None
    # the day the sale happened decides which currencies were legal tender (BGN until 2026-01-31)
    currency = check.currency(doc.get("currency", _MISSING), (sold_at or current).date())
    payment = doc.get("payment", _MISSING)
    if payment is _MISSING:
        check.add("/payment", "payment is required")
    elif type(payment) is not str or payment not in PAYMENTS:
        check.add("/payment", f"payment must be one of {', '.join(get_args(Payment))}")
    survey = doc.get("survey", False)
    if type(survey) is not bool:
        check.add("/survey", f"survey must be true or false, not {_json_type(survey)}")
    if lines is not None and discount is not None and total is not None:
        check.totals(lines, discount, total)
    if check.errors:
        raise SaleInvalid(_capped(check.errors))
    assert lines is not None and discount is not None and total is not None and currency is not None
    return Sale(
        lines=tuple(lines),
        discount=discount,
        total=total,
        currency=currency,
        payment=cast(Payment, payment),
        sold_at=None if sold_at is None else _format_utc(sold_at),
        survey=cast(bool, survey),
    )


def _format_utc(when: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` for a UTC datetime (isoformat: half the cost of strftime)."""
    return when.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
