"""The chain's loyalty programme as configured centrally: earn rules, tiers, rewards, stamp cards, expiry.

``[loyalty]`` in ``central.toml``. The earn part is the shared ``cloud_sync.loyalty.EarnRules`` (nodes
compute the provisional points with the same code); the rest is decided only here. Defaults describe a
plausible programme so a demo works without configuration; docs/loyalty.md explains every rule with
worked examples.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import msgspec

from cloud_sync.loyalty import DEFAULT_EXCLUDED_CATEGORIES, EarnRules, Promotion
from cloud_sync.settings import Section

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}\Z")]


class TierRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A tier and the spend over the last 12 months (integer minor units) that reaches it."""

    name: Name
    min_spend: Annotated[int, msgspec.Meta(ge=0)]
    #: earn rate in percent of the base rate
    percent: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 100


class Reward(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Something a member can take at the till: paid with points, or earned on a stamp card (0 points).

    A ``variable`` reward is a partial redemption: the till names how many points to spend (at least
    ``points``, in steps of ``step``), e.g. 1.00 off per 100 points.
    """

    id: Name
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=60, pattern=r"^[^\x00-\x1f\x7f<>]*\Z")]
    points: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 0
    variable: bool = False
    step: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1

    def cost(self, requested: int | None) -> int | str:
        """The points this redemption costs, or the reason it cannot be taken as asked."""
        if self.variable:
            if requested is None:
                return "points-required"
            if requested < self.points or requested % self.step:
                return "invalid-points"
            return requested
        if requested is not None and requested != self.points:
            return "invalid-points"
        return self.points


class StampCard(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Buy ``stamps`` units of these categories, get ``reward`` (returns take stamps back)."""

    id: Name
    categories: frozenset[Name]
    stamps: Annotated[int, msgspec.Meta(ge=2, le=100)]
    reward: Name


def _tiers() -> list[TierRule]:
    return [
        TierRule("basic", 0, 100),
        TierRule("silver", 50_000, 125),
        TierRule("gold", 150_000, 150),
    ]


def _rewards() -> list[Reward]:
    return [
        Reward("coffee", "Free coffee", 150),
        Reward("voucher-5", "5.00 voucher", 500),
        Reward("free-coffee", "Coffee card: free coffee", 0),
        Reward("points-off", "Points off your purchase (1.00 per 100)", 100, variable=True, step=100),
    ]


def _stamp_cards() -> list[StampCard]:
    return [StampCard("coffee-card", frozenset({"coffee"}), 9, "free-coffee")]


class LoyaltySection(Section):
    """``[loyalty]``: the programme (see the module docstring)."""

    #: minor units of spend per point: 100 = one point per 1.00
    minor_per_point: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 100
    excluded_categories: frozenset[Name] = DEFAULT_EXCLUDED_CATEGORIES
    #: earn rate per category in percent, e.g. {organic = 200}; others earn 100 %
    category_percent: dict[Name, Annotated[int, msgspec.Meta(ge=0, le=1000)]] = msgspec.field(
        default_factory=dict
    )
    #: [[loyalty.promotions]] start / end (TOML datetimes with a zone), percent, optional categories
    promotions: list[Promotion] = msgspec.field(default_factory=list)
    #: lowest first; the first must have min_spend 0 (every member has a tier)
    tiers: list[TierRule] = msgspec.field(default_factory=_tiers)
    rewards: list[Reward] = msgspec.field(default_factory=_rewards)
    stamp_cards: list[StampCard] = msgspec.field(default_factory=_stamp_cards)
    #: a balance with no earning or redeeming for this many days expires (0 = never)
    expire_after_days: Annotated[int, msgspec.Meta(ge=0, le=3650)] = 730
    #: a till's request older than this (seconds, by its envelope ts) is answered "expired", no effect
    request_max_age: Annotated[float, msgspec.Meta(ge=1, le=120)] = 10.0

    def __post_init__(self) -> None:
        if not self.tiers or self.tiers[0].min_spend != 0:
            raise ValueError("tiers: the first tier must have min_spend = 0")
        spends = [t.min_spend for t in self.tiers]
        if spends != sorted(set(spends)):
            raise ValueError("tiers: min_spend must increase strictly from tier to tier")
        if len({t.name for t in self.tiers}) != len(self.tiers):
            raise ValueError("tiers: names must be unique")
        ids = [r.id for r in self.rewards]
        if len(set(ids)) != len(ids):
            raise ValueError("rewards: ids must be unique")
        for card in self.stamp_cards:
            reward = next((r for r in self.rewards if r.id == card.reward), None)
            if reward is None:
                raise ValueError(
                    f"stamp_cards: card {card.id!r} gives reward {card.reward!r}, which is not in rewards"
                )
            if reward.points != 0:
                raise ValueError(
                    f"stamp_cards: the reward {card.reward!r} of a stamp card must cost 0 points"
                )

    @property
    def earn_rules(self) -> EarnRules:
        """The shared earn rules (tiers' percentages included)."""
        return EarnRules(
            minor_per_point=self.minor_per_point,
            excluded_categories=frozenset(self.excluded_categories),
            tier_percent={t.name: t.percent for t in self.tiers},
            category_percent=dict(self.category_percent),
            promotions=tuple(self.promotions),
        )

    def reward(self, reward_id: str) -> Reward | None:
        """The catalogue entry, if any."""
        return next((r for r in self.rewards if r.id == reward_id), None)

    def stamp_card_for_reward(self, reward_id: str) -> StampCard | None:
        """The stamp card that earns ``reward_id``, if it is a stamp reward."""
        return next((c for c in self.stamp_cards if c.reward == reward_id), None)

    def tier_for(self, spend: int) -> str:
        """The highest tier whose threshold ``spend`` (12-month, minor units) reaches."""
        name = self.tiers[0].name
        for tier in self.tiers:
            if spend >= tier.min_spend:
                name = tier.name
        return name

    def rank(self, tier: str | None) -> int:
        """Position of ``tier`` (0 = the base tier; unknown or none = 0)."""
        for index, rule in enumerate(self.tiers):
            if rule.name == tier:
                return index
        return 0

    @staticmethod
    def spend_window_start(now: datetime) -> datetime:
        """The start of the rolling 12-month window that tiers are computed over."""
        return now - timedelta(days=365)
