"""Loyalty earn rules: worked examples, refused configurations, and the properties the ledger relies on."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, replace

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_sync.loyalty import DEFAULT_RULES, EarnRules, Promotion, decode_rules, eligible_minor, points_for


@dataclass(frozen=True)
class Line:
    quantity: int
    unit_price: int
    category: str = "stationery"


def returned(lines: list[Line]) -> list[Line]:
    """The full return of ``lines``: every quantity negated."""
    return [replace(line, quantity=-line.quantity) for line in lines]


# Worked examples ----------------------------------------------------------------------------------


def test_spend_of_12_34_earns_12_points_at_basic_and_18_at_gold() -> None:
    basket = [Line(1, 1234)]
    assert points_for(basket, 0, "basic") == 12
    assert points_for(basket, 0, "silver") == 15  # 15.425, truncated
    assert points_for(basket, 0, "gold") == 18  # 18.51, truncated


def test_no_tier_and_unknown_tiers_earn_the_base_rate() -> None:
    basket = [Line(2, 750)]
    assert points_for(basket, 0, None) == 15
    assert points_for(basket, 0, "platinum") == 15
    assert points_for(basket, 0, "") == 15


@pytest.mark.parametrize("category", sorted(DEFAULT_RULES.excluded_categories))
def test_excluded_categories_earn_nothing(category: str) -> None:
    assert eligible_minor([Line(3, 1000, category)], 0) == 0
    assert points_for([Line(3, 1000, category)], 0, "gold") == 0


def test_excluded_lines_count_in_the_gross_so_they_take_their_share_of_the_discount() -> None:
    # 10.00 of stationery + 10.00 of tobacco, 2.00 off the basket: stationery carries half the discount
    basket = [Line(1, 1000), Line(1, 1000, "tobacco")]
    assert eligible_minor(basket, 200) == 900
    assert points_for(basket, 200, "basic") == 9
    assert points_for(basket, 200, "gold") == 13  # 900 * 150 % = 1350 -> 13


def test_discount_spreading_truncates_toward_zero() -> None:
    # eligible 999 of gross 1000, discount 1: 999 * 999 / 1000 = 998.001 -> 998
    basket = [Line(1, 999), Line(1, 1, "deposit")]
    assert eligible_minor(basket, 1) == 998


def test_discount_of_the_whole_basket_leaves_nothing_to_earn() -> None:
    assert eligible_minor([Line(1, 500)], 500) == 0
    assert points_for([Line(1, 500)], 500, "gold") == 0


def test_return_of_one_item_takes_back_its_points() -> None:
    sale = [Line(2, 550)]  # 11.00 -> 11 points
    one_back = [Line(-1, 550)]  # -5.50 -> -5 points (truncated toward zero, not to -6)
    assert points_for(sale, 0, "basic") == 11
    assert points_for(one_back, 0, "basic") == -5
    assert eligible_minor(one_back, 0) == -550


def test_full_return_of_a_discounted_sale_states_the_same_discount_and_cancels_exactly() -> None:
    sale = [Line(2, 500), Line(1, 333, "food"), Line(1, 1000, "gift_card")]
    assert points_for(sale, 150, "gold") == 18  # eligible 1333 * (2333 - 150) / 2333 = 1247 -> 18.7
    assert points_for(returned(sale), 150, "gold") == -18
    assert eligible_minor(returned(sale), 150) == -eligible_minor(sale, 150) == -1247


def test_exchange_of_an_eligible_item_for_an_excluded_one_gives_its_points_back() -> None:
    # gross 0: a pen (5.00) returned for a gift card (5.00); keeping the pen's points would be a loophole
    exchange = [Line(-1, 500), Line(1, 500, "gift_card")]
    assert eligible_minor(exchange, 0) == -500
    assert points_for(exchange, 0, "basic") == -5


def test_mixed_basket_with_a_return_line() -> None:
    basket = [Line(3, 400), Line(-1, 400)]  # net 8.00
    assert points_for(basket, 0, "basic") == 8


def test_custom_rules_for_a_currency_without_cents() -> None:
    yen = EarnRules(minor_per_point=100, tier_percent={"gold": 200})
    assert points_for([Line(1, 1234)], 0, "gold", yen) == 24
    assert points_for([Line(1, 1234)], 0, "basic", yen) == 12  # not listed in these rules: 100 %
    one_per_unit = EarnRules(minor_per_point=1, excluded_categories=frozenset())
    assert points_for([Line(1, 7, "tobacco")], 0, None, one_per_unit) == 7


def test_rules_decode_from_configuration_with_the_same_checks() -> None:
    rules = msgspec.convert(
        {"minor_per_point": 50, "excluded_categories": ["lottery"], "tier_percent": {"vip": 300}}, EarnRules
    )
    assert rules == EarnRules(50, frozenset({"lottery"}), {"vip": 300})
    assert rules.percent_for("vip") == 300
    with pytest.raises(msgspec.ValidationError, match="percent"):
        msgspec.convert({"tier_percent": {"vip": 1001}}, EarnRules)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"minor_per_pt": 50}, EarnRules)


def test_default_rules() -> None:
    assert DEFAULT_RULES.minor_per_point == 100
    assert DEFAULT_RULES.excluded_categories == {"tobacco", "gift_card", "lottery", "deposit", "service_fee"}
    assert DEFAULT_RULES.tier_percent == {"basic": 100, "silver": 125, "gold": 150}
    assert EarnRules().tier_percent is not EarnRules().tier_percent  # no shared mutable default


# Refused input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"minor_per_point": 0}, "minor_per_point"),
        ({"minor_per_point": -100}, "minor_per_point"),
        ({"minor_per_point": True}, "minor_per_point"),
        ({"minor_per_point": 1.5}, "minor_per_point"),
        ({"tier_percent": {"gold": -1}}, "percent must be an integer in 0..1000"),
        ({"tier_percent": {"gold": 1001}}, "percent must be an integer in 0..1000"),
        ({"tier_percent": {"gold": True}}, "percent must be an integer"),
        ({"tier_percent": {"gold": 150.0}}, "percent must be an integer"),
        ({"tier_percent": {"": 100}}, "tier names"),
        ({"tier_percent": [("gold", 150)]}, "tier_percent"),
        ({"excluded_categories": {"tobacco"}}, "frozenset"),
        ({"excluded_categories": frozenset({1})}, "frozenset"),
    ],
)
def test_invalid_rules_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EarnRules(**kwargs)  # type: ignore[arg-type]


def test_percent_bounds_are_allowed() -> None:
    assert points_for([Line(1, 10_000)], 0, "x", EarnRules(tier_percent={"x": 0})) == 0
    assert points_for([Line(1, 10_000)], 0, "x", EarnRules(tier_percent={"x": 1000})) == 1000


@pytest.mark.parametrize("discount", [-1, True, 1.0, "5"])
def test_invalid_discount_is_refused(discount: object) -> None:
    with pytest.raises(ValueError, match="discount"):
        eligible_minor([Line(1, 100)], discount)  # type: ignore[arg-type]


def test_discount_larger_than_the_basket_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        points_for([Line(1, 100)], 101, None)
    with pytest.raises(ValueError, match="exceeds"):
        points_for([Line(-1, 100)], 101, None)
    with pytest.raises(ValueError, match="exceeds"):
        eligible_minor([], 1)


def test_float_amounts_are_refused() -> None:
    with pytest.raises(ValueError, match="integers"):
        eligible_minor([Line(1, 9.99)], 0)  # type: ignore[arg-type]


def test_empty_basket_earns_nothing() -> None:
    assert eligible_minor([], 0) == 0
    assert points_for([], 0, "gold") == 0


# Properties ---------------------------------------------------------------------------------------

CATEGORIES = ["stationery", "food", "home", "tobacco", "gift_card", "lottery", "deposit", "service_fee"]
TIERS = [None, "basic", "silver", "gold", "platinum"]

lines_st = st.lists(
    st.builds(
        Line,
        quantity=st.integers(-9999, 9999).filter(bool),
        unit_price=st.integers(0, 100_000_000),
        category=st.sampled_from(CATEGORIES),
    ),
    max_size=30,
)


@st.composite
def baskets(draw: st.DrawFn) -> tuple[list[Line], int]:
    """A basket and a valid discount for it (0 .. its gross's size)."""
    lines = draw(lines_st)
    size = abs(sum(line.quantity * line.unit_price for line in lines))
    return lines, draw(st.integers(0, size))


rules_st = st.builds(
    EarnRules,
    minor_per_point=st.integers(1, 10_000),
    excluded_categories=st.frozensets(st.sampled_from(CATEGORIES)),
    tier_percent=st.dictionaries(st.sampled_from(["basic", "silver", "gold"]), st.integers(0, 1000)),
    category_percent=st.dictionaries(st.sampled_from(CATEGORIES), st.integers(0, 1000)),
    promotions=st.lists(
        st.builds(
            Promotion,
            start=st.just(dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
            end=st.just(dt.datetime(2026, 12, 1, tzinfo=dt.UTC)),
            percent=st.integers(0, 1000),
            categories=st.frozensets(st.sampled_from(CATEGORIES)),
        ),
        max_size=2,
    ).map(tuple),
)


@given(baskets(), st.sampled_from(TIERS), rules_st)
def test_a_sale_and_its_full_return_net_to_exactly_zero(
    basket: tuple[list[Line], int], tier: str | None, rules: EarnRules
) -> None:
    lines, discount = basket
    sale = points_for(lines, discount, tier, rules)
    back = points_for(returned(lines), discount, tier, rules)
    assert sale + back == 0
    assert eligible_minor(lines, discount, rules=rules) == -eligible_minor(
        returned(lines), discount, rules=rules
    )


@given(baskets(), st.integers(0, 1000), st.integers(0, 1000), st.integers(1, 10_000))
def test_points_are_monotone_in_the_tier_percent(
    basket: tuple[list[Line], int], low: int, high: int, minor_per_point: int
) -> None:
    low, high = sorted((low, high))
    lines, discount = basket
    rules = EarnRules(minor_per_point=minor_per_point, tier_percent={"low": low, "high": high})
    p_low = points_for(lines, discount, "low", rules)
    p_high = points_for(lines, discount, "high", rules)
    eligible = eligible_minor(lines, discount, rules=rules)
    if eligible >= 0:
        assert 0 <= p_low <= p_high
    else:
        assert 0 >= p_low >= p_high


@given(baskets(), st.sampled_from(TIERS), rules_st)
def test_points_never_exceed_eligible_per_point_at_the_highest_rate(
    basket: tuple[list[Line], int], tier: str | None, rules: EarnRules
) -> None:
    lines, discount = basket
    points = points_for(lines, discount, tier, rules)
    eligible = eligible_minor(lines, discount, rules=rules)
    max_percent = max([100, *rules.tier_percent.values()])
    # |points| <= |eligible| / minor_per_point * max_percent / 100, without leaving integers
    assert abs(points) * rules.minor_per_point * 100 <= abs(eligible) * max_percent
    # and the discount only ever shrinks what earns (the weighted amount: category multipliers)
    weighted = sum(line.quantity * line.unit_price * rules.weight(line.category, None) for line in lines)
    undiscounted = (1 if weighted >= 0 else -1) * (abs(weighted) // 10_000)
    assert abs(eligible) <= abs(undiscounted)
    assert eligible == 0 or (eligible > 0) == (undiscounted > 0)


@given(baskets(), st.sampled_from(TIERS), st.randoms(use_true_random=False))
def test_points_are_deterministic_and_independent_of_line_order(
    basket: tuple[list[Line], int], tier: str | None, rnd: random.Random
) -> None:
    lines, discount = basket
    first = points_for(lines, discount, tier)
    shuffled = list(lines)
    rnd.shuffle(shuffled)
    assert points_for(lines, discount, tier) == first
    assert points_for(shuffled, discount, tier) == first
    assert isinstance(first, int)


# Category multipliers and promotions -----------------------------------------------------------------

NOV = dt.datetime(2026, 11, 15, 12, tzinfo=dt.UTC)
BLACK_FRIDAY = Promotion(
    start=dt.datetime(2026, 11, 27, tzinfo=dt.UTC), end=dt.datetime(2026, 11, 28, tzinfo=dt.UTC), percent=300
)


def test_category_multiplier_weights_only_its_lines() -> None:
    rules = EarnRules(category_percent={"food": 200})
    basket = [Line(1, 1000, "food"), Line(1, 1000, "home")]
    # food 10.00 at 200 % + home 10.00 at 100 % = 30.00 eligible -> 30 points
    assert eligible_minor(basket, 0, rules=rules) == 3000
    assert points_for(basket, 0, None, rules) == 30
    # with 5.00 off the 20.00 basket: 3000 * 1500 / 2000 = 2250 -> 22 points
    assert points_for(basket, 500, None, rules) == 22
    # excluded beats any multiplier
    assert points_for([Line(1, 1000, "tobacco")], 0, None, EarnRules(category_percent={"tobacco": 500})) == 0


def test_a_promotion_applies_inside_its_window_only() -> None:
    rules = EarnRules(promotions=(BLACK_FRIDAY,))
    basket = [Line(2, 1234, "home")]
    assert points_for(basket, 0, "gold", rules, at=NOV) == 37  # 24.68 at 150 %
    friday = dt.datetime(2026, 11, 27, 9, tzinfo=dt.UTC)
    assert points_for(basket, 0, "gold", rules, at=friday) == 111  # and 300 % of that: 24.68 x 4.5
    assert points_for(basket, 0, "gold", rules, at=BLACK_FRIDAY.end) == 37  # the end is exclusive
    assert points_for(basket, 0, "gold", rules) == 37  # no sale time: no promotion


def test_category_promotions_stack_with_category_multipliers() -> None:
    organic = Promotion(
        start=NOV - dt.timedelta(days=1),
        end=NOV + dt.timedelta(days=1),
        percent=150,
        categories=frozenset({"food"}),
    )
    rules = EarnRules(category_percent={"food": 200}, promotions=(organic,))
    basket = [Line(1, 1000, "food"), Line(1, 1000, "home")]
    assert points_for(basket, 0, None, rules, at=NOV) == 40  # 10.00 x 3 + 10.00 x 1


def test_without_multipliers_the_figures_are_exactly_the_plain_rules() -> None:
    rng = random.Random(7)
    plain = EarnRules()
    neutral = EarnRules(
        category_percent={"food": 100}, promotions=(msgspec.structs.replace(BLACK_FRIDAY, percent=100),)
    )
    for _ in range(500):
        basket = [
            Line(rng.choice([-2, -1, 1, 3]), rng.randint(0, 99_999), rng.choice(CATEGORIES)) for _ in range(4)
        ]
        size = abs(sum(line.quantity * line.unit_price for line in basket))
        discount = rng.randint(0, size)
        at = dt.datetime(2026, 11, 27, 10, tzinfo=dt.UTC)
        assert points_for(basket, discount, "silver", neutral, at=at) == points_for(
            basket, discount, "silver", plain
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"category_percent": {"food": 1001}}, "percent must be an integer"),
        ({"category_percent": {"": 100}}, "non-empty"),
    ],
)
def test_bad_category_multipliers_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EarnRules(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("start", "end", "percent", "message"),
    [
        (dt.datetime(2026, 1, 2, tzinfo=dt.UTC), dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 200, "end after"),
        (dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2), 200, "time zone"),
        (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC), 5000, "percent"),
    ],
)
def test_bad_promotions_are_refused(start: dt.datetime, end: dt.datetime, percent: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Promotion(start=start, end=end, percent=percent)


def test_published_rules_round_trip_and_are_checked() -> None:
    rules = EarnRules(category_percent={"food": 200}, promotions=(BLACK_FRIDAY,))
    assert decode_rules(msgspec.json.encode(rules)) == rules
    for bad in (b"{", b'{"minor_per_point": 0}', b'{"promotions": [{"start": "x"}]}', b'{"extra": 1}'):
        with pytest.raises(ValueError, match="earn rules"):
            decode_rules(bad)
