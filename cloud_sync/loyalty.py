"""Loyalty earn rules: how many points a sale earns, computed by the same code on the node and centrally.

Why shared: the till shows a *provisional* points figure the moment the node accepts a sale (``POST
/pos/v1/sales``, DESIGN.md Contracts), and the central receiver books the real figure in the ledger when
the sale event arrives. If the two were computed by different code, a customer would see one number at the
till and another on their statement. Both import this module, and it is integer arithmetic only (amounts
are integer minor units, no floats, no Decimal contexts), so the two figures are equal on a Pi and on the
server, for any input. Nothing here imports from ``edge/`` or ``kiosk_ui/``: the central receiver does not
ship the node.

The rules (also in ``docs/loyalty.md``):

- A line's amount is ``quantity * unit_price``. Lines whose category is in ``excluded_categories`` earn
  nothing (tobacco, gift cards, lottery, deposits, service fees: regulated or money-like goods), but they
  still count in the basket's gross.
- A basket-level ``discount`` is spread over the lines in proportion to their amounts, so the eligible
  amount shrinks by the eligible share of the discount: ``eligible * (|gross| - discount) / |gross|``.
- Category multipliers (``category_percent``, e.g. 200 % on "organic") and promotional windows
  (``promotions``: a percent on all lines, or on some categories, between two instants of the sale
  time) weight each line: ``weight = category % * promotion %`` (both 100 when not set). The eligible
  amount is the weighted sum divided by 100 * 100 — so with no multiplier and no promotion it is exactly
  the plain sum, to the unit.
- Points are ``eligible * tier_percent / 100 / minor_per_point``; unknown tiers, and no tier, earn 100 %.
- Every division truncates toward zero and the sign is applied afterwards ("sign-symmetric"), so negating
  every quantity negates the result exactly.

Returns: a return is a basket with negative quantities. Its ``discount`` is the same non-negative number
as the sale's: a discount always shrinks the *size* of the amount (a smaller payment for a sale, a smaller
refund for a return), never its sign. So the full return of a sale is the same lines with every quantity
negated and the same discount, and it earns exactly minus what the sale earned: the two net to zero. A
partial return is scored on its own, so after truncation a customer may keep less than one point more than
an exact pro-rata share would give.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Final, Protocol

import msgspec

#: Categories that never earn: regulated goods and things that are money in another form.
DEFAULT_EXCLUDED_CATEGORIES: Final = frozenset({"tobacco", "gift_card", "lottery", "deposit", "service_fee"})
MAX_PERCENT: Final = 1000
NO_TIER_PERCENT: Final = 100
#: bounds of published rules (a node refuses more): generous for a real programme, small for a node's memory
MAX_CATEGORIES: Final = 256
MAX_TIERS: Final = 64
MAX_PROMOTIONS: Final = 64
MAX_RULES_BYTES: Final = 64 * 1024
#: a line's weight when no multiplier or promotion applies: 100 % x 100 %
_UNIT_WEIGHT: Final = 10_000


def _default_tiers() -> dict[str, int]:
    return {"basic": 100, "silver": 125, "gold": 150}


class EarnLine(Protocol):
    """What a basket line must offer to be scored (``edge.pos.sale.SaleLine`` is one).

    Read-only properties rather than plain attributes, so frozen structs satisfy it too.
    """

    @property
    def quantity(self) -> int:
        """Units sold; negative for a returned item."""
        ...

    @property
    def unit_price(self) -> int:
        """Price of one unit in integer minor units (cents), >= 0."""
        ...

    @property
    def category(self) -> str:
        """The product category, compared with ``EarnRules.excluded_categories``."""
        ...


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Promotion(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Extra points for a while: ``percent`` of the normal rate for sales at ``start <= sold_at < end``, on
    every earning line or only on ``categories``. Overlapping promotions multiply."""

    start: datetime
    end: datetime
    percent: int
    categories: Annotated[frozenset[str], msgspec.Meta(max_length=MAX_CATEGORIES)] = frozenset()

    def __post_init__(self) -> None:
        if not _is_int(self.percent) or not 0 <= self.percent <= MAX_PERCENT:
            raise ValueError(f"a promotion's percent must be an integer in 0..{MAX_PERCENT}")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a promotion's start and end need a time zone (e.g. 2026-12-01T00:00:00Z)")
        if self.end <= self.start:
            raise ValueError("a promotion must end after it starts")

    def applies(self, category: str, at: datetime | None) -> bool:
        """Whether a line of ``category`` sold ``at`` gets this promotion."""
        return (
            at is not None
            and self.start <= at < self.end
            and (not self.categories or category in self.categories)
        )


class EarnRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The chain's earn rules; one instance is configured centrally and the same values on every node.

    Decodable from configuration (``msgspec.convert``), which runs the same checks as the constructor.
    """

    #: minor units of spend per point: 100 = one point per 1.00 of currency
    minor_per_point: int = 100
    excluded_categories: Annotated[frozenset[str], msgspec.Meta(max_length=MAX_CATEGORIES)] = (
        DEFAULT_EXCLUDED_CATEGORIES
    )
    #: earn rate per tier in percent of the base rate; tiers not listed earn ``NO_TIER_PERCENT``
    tier_percent: Annotated[dict[str, int], msgspec.Meta(max_length=MAX_TIERS)] = msgspec.field(
        default_factory=_default_tiers
    )
    #: earn rate per category in percent (e.g. {"organic": 200}); categories not listed earn 100 %
    category_percent: Annotated[dict[str, int], msgspec.Meta(max_length=MAX_CATEGORIES)] = msgspec.field(
        default_factory=dict
    )
    promotions: Annotated[tuple[Promotion, ...], msgspec.Meta(max_length=MAX_PROMOTIONS)] = ()

    def __post_init__(self) -> None:
        if not _is_int(self.minor_per_point) or self.minor_per_point < 1:
            raise ValueError(f"minor_per_point must be an integer >= 1, not {self.minor_per_point!r}")
        if not isinstance(self.excluded_categories, frozenset) or not all(
            isinstance(c, str) for c in self.excluded_categories
        ):
            raise ValueError("excluded_categories must be a frozenset of category names")
        if not isinstance(self.tier_percent, dict):
            raise ValueError("tier_percent must be a mapping of tier name to percent")
        for tier, percent in self.tier_percent.items():
            if not isinstance(tier, str) or not tier:
                raise ValueError(f"tier names must be non-empty strings, not {tier!r}")
            if not _is_int(percent) or not 0 <= percent <= MAX_PERCENT:
                raise ValueError(
                    f"tier {tier!r}: percent must be an integer in 0..{MAX_PERCENT}, not {percent!r}"
                )
        self._check_categories()

    def _check_categories(self) -> None:
        if not isinstance(self.category_percent, dict):
            raise ValueError("category_percent must be a mapping of category to percent")
        for category, percent in self.category_percent.items():
            if not isinstance(category, str) or not category:
                raise ValueError(f"category names must be non-empty strings, not {category!r}")
            if not _is_int(percent) or not 0 <= percent <= MAX_PERCENT:
                raise ValueError(
                    f"category {category!r}: percent must be an integer in 0..{MAX_PERCENT}, not {percent!r}"
                )

    def weight(self, category: str, at: datetime | None) -> int:
        """A line's weight in 1/10,000: category percent times every applicable promotion's percent."""
        if category in self.excluded_categories:
            return 0
        weight = self.category_percent.get(category, NO_TIER_PERCENT) * 100
        for promotion in self.promotions:
            if promotion.applies(category, at):
                weight = weight * promotion.percent // 100
        return weight

    def percent_for(self, tier: str | None) -> int:
        """The earn rate of ``tier`` in percent; a customer with no tier or an unknown one earns 100 %."""
        if tier is None:
            return NO_TIER_PERCENT
        return self.tier_percent.get(tier, NO_TIER_PERCENT)


DEFAULT_RULES: Final = EarnRules()


def earn_rules_topic(root: str) -> str:
    """Where the central receiver publishes the chain's earn rules (retained), for every node's till."""
    return f"{root}/config/earn-rules"


def decode_rules(payload: bytes) -> EarnRules:
    """The published rules, checked as strictly as configuration; ValueError says what is wrong."""
    if len(payload) > MAX_RULES_BYTES:
        raise ValueError(f"earn rules: {len(payload)} bytes, more than the {MAX_RULES_BYTES} allowed")
    try:
        return msgspec.json.decode(payload, type=EarnRules)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"earn rules: {exc}") from exc


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def eligible_minor(
    lines: Iterable[EarnLine],
    discount: int = 0,
    *,
    rules: EarnRules = DEFAULT_RULES,
    at: datetime | None = None,
) -> int:
    """The part of the basket that earns points, in minor units, after its share of the discount.

    ``discount`` is the basket-level discount in minor units, >= 0, and at most the gross's size: a
    return states it as the same positive number as the sale (see the module docstring). The result is
    ``sign(e) * (|e| * (|g| - discount) // |g|)`` with ``e`` the eligible and ``g`` the gross amount; with
    no discount it is ``e`` itself, also when the gross is 0 (an exchange of an eligible item for an
    excluded one of the same price gives back the eligible item's points: otherwise swapping goods for a
    gift card would keep them). Raises ValueError for a negative discount, or one larger than the gross.

    With category multipliers or a promotion (at the sale time ``at``), ``e`` is the weighted sum
    ``sum(amount * weight) / 10,000`` and the division by 10,000 is folded into the one truncation, so
    weights of 100 % give exactly the plain figures: ``(a // b) // c == a // (b * c)``.
    """
    if not _is_int(discount) or discount < 0:
        raise ValueError(f"discount must be an integer >= 0 in minor units, not {discount!r}")
    gross = 0
    weighted = 0  # in 1/10,000 of a minor unit
    for line in lines:
        amount = line.quantity * line.unit_price
        gross += amount
        weighted += amount * rules.weight(line.category, at)
    if not (_is_int(gross) and _is_int(weighted)):
        raise ValueError("quantities and unit prices must be integers (minor units)")
    size = abs(gross)
    if discount > size:
        raise ValueError(f"discount {discount} exceeds the basket's value {size}")
    if weighted == 0:
        return 0
    if discount == 0:
        return _sign(weighted) * (abs(weighted) // _UNIT_WEIGHT)
    return _sign(weighted) * (abs(weighted) * (size - discount) // (size * _UNIT_WEIGHT))


def points_for(
    lines: Iterable[EarnLine],
    discount: int,
    tier: str | None,
    rules: EarnRules = DEFAULT_RULES,
    *,
    at: datetime | None = None,
) -> int:
    """Points earned by a basket (negative for a return): the figure the till shows and the ledger books.

    ``sign(e) * (|e| * percent // (100 * minor_per_point))`` with ``e = eligible_minor(...)``: one
    truncation, toward zero, so a sale and its full return cancel exactly.
    """
    eligible = eligible_minor(lines, discount, rules=rules, at=at)
    percent = rules.percent_for(tier)
    return _sign(eligible) * (abs(eligible) * percent // (100 * rules.minor_per_point))
