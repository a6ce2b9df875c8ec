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
from typing import Final, Protocol

import msgspec

#: Categories that never earn: regulated goods and things that are money in another form.
DEFAULT_EXCLUDED_CATEGORIES: Final = frozenset({"tobacco", "gift_card", "lottery", "deposit", "service_fee"})
MAX_PERCENT: Final = 1000
NO_TIER_PERCENT: Final = 100


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


class EarnRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The chain's earn rules; one instance is configured centrally and the same values on every node.

    Decodable from configuration (``msgspec.convert``), which runs the same checks as the constructor.
    """

    #: minor units of spend per point: 100 = one point per 1.00 of currency
    minor_per_point: int = 100
    excluded_categories: frozenset[str] = DEFAULT_EXCLUDED_CATEGORIES
    #: earn rate per tier in percent of the base rate; tiers not listed earn ``NO_TIER_PERCENT``
    tier_percent: dict[str, int] = msgspec.field(default_factory=_default_tiers)

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

    def percent_for(self, tier: str | None) -> int:
        """The earn rate of ``tier`` in percent; a customer with no tier or an unknown one earns 100 %."""
        if tier is None:
            return NO_TIER_PERCENT
        return self.tier_percent.get(tier, NO_TIER_PERCENT)


DEFAULT_RULES: Final = EarnRules()


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def eligible_minor(lines: Iterable[EarnLine], discount: int = 0, *, rules: EarnRules = DEFAULT_RULES) -> int:
    """The part of the basket that earns points, in minor units, after its share of the discount.

    ``discount`` is the basket-level discount in minor units, >= 0, and at most the gross's size: a
    return states it as the same positive number as the sale (see the module docstring). The result is
    ``sign(e) * (|e| * (|g| - discount) // |g|)`` with ``e`` the eligible and ``g`` the gross amount; with
    no discount it is ``e`` itself, also when the gross is 0 (an exchange of an eligible item for an
    excluded one of the same price gives back the eligible item's points: otherwise swapping goods for a
    gift card would keep them). Raises ValueError for a negative discount, or one larger than the gross.
    """
    if not _is_int(discount) or discount < 0:
        raise ValueError(f"discount must be an integer >= 0 in minor units, not {discount!r}")
    gross = 0
    eligible = 0
    excluded = rules.excluded_categories
    for line in lines:
        amount = line.quantity * line.unit_price
        gross += amount
        if line.category not in excluded:
            eligible += amount
    if not (_is_int(gross) and _is_int(eligible)):
        raise ValueError("quantities and unit prices must be integers (minor units)")
    size = abs(gross)
    if discount > size:
        raise ValueError(f"discount {discount} exceeds the basket's value {size}")
    if discount == 0 or eligible == 0:
        return eligible
    return _sign(eligible) * (abs(eligible) * (size - discount) // size)


def points_for(
    lines: Iterable[EarnLine], discount: int, tier: str | None, rules: EarnRules = DEFAULT_RULES
) -> int:
    """Points earned by a basket (negative for a return): the figure the till shows and the ledger books.

    ``sign(e) * (|e| * percent // (100 * minor_per_point))`` with ``e = eligible_minor(...)``: one
    truncation, toward zero, so a sale and its full return cancel exactly.
    """
    eligible = eligible_minor(lines, discount, rules=rules)
    percent = rules.percent_for(tier)
    return _sign(eligible) * (abs(eligible) * percent // (100 * rules.minor_per_point))
