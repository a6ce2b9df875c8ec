"""Marketing reports on SQLite and PostgreSQL against small data sets computed by hand (docs/reports.md).

Data goes in the way production data does: signed envelopes through ``Ingestor``, with controlled times —
the envelope ``ts`` (sign-ups, surveys, taps, redemptions) and the sale's ``sold_at``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import Engine

from cloud_sync.central import reports
from cloud_sync.central.dashboard import bar_chart, column_chart, create_app, money, short_token
from cloud_sync.central.ingest import Incoming, Ingestor
from cloud_sync.central.report_cli import csv_cell, parse_since, parse_until, render
from cloud_sync.central.reports import (
    FraudSignal,
    FraudThresholds,
    NpsRow,
    RepeatRow,
    RetentionRow,
    SignupRow,
    WinbackRow,
)
from cloud_sync.central_cli import cli
from cloud_sync.envelope import utc_timestamp
from tests.support.central import KIOSK_CENTRAL, FakeNode, base_env, sale_body, signup_body, token

NOW = datetime(2026, 12, 1, tzinfo=UTC)
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
NEW_YEAR = datetime(2027, 1, 1, tzinfo=UTC)


def ago(days: float = 0, *, hours: float = 0, minutes: float = 0) -> datetime:
    return NOW - timedelta(days=days, hours=hours, minutes=minutes)


class Shop:
    """Registered nodes per store that send signed events with chosen times through one Ingestor."""

    #: registered up front: the ingestor's key cache reloads on a miss at most once a second
    NODES = (("store-1", "node-1"), ("store-1", "node-2"), ("store-2", "node-1"))

    def __init__(self, engine: Engine) -> None:
        self.nodes = {key: (FakeNode(*key, engine=engine), itertools.count(1)) for key in self.NODES}
        self.ingestor = Ingestor(engine, "retail/v1")
        self.receipts = itertools.count(1)
        self.requests = itertools.count(1)

    def send(
        self, store: str, event_type: str, body: dict[str, Any], at: datetime, node: str = "node-1"
    ) -> None:
        fake, seq = self.nodes[(store, node)]
        message = fake.signer.seal(event_type, next(seq), body, ts=utc_timestamp(at))
        outcome = self.ingestor.ingest([Incoming(fake.topic(event_type), message.payload)])
        assert [o.status for o in outcome] == ["stored"], outcome

    def sale(
        self,
        store: str,
        customer: str | None,
        total: int,
        sold: datetime,
        *,
        currency: str = "EUR",
        name: str = "Item",
    ) -> None:
        """A one-line sale of ``total`` minor units (negative: a return)."""
        line = {
            "name": name,
            "quantity": 1 if total >= 0 else -1,
            "unit_price": abs(total),
            "category": "general",
            "sku": "SKU-1",
        }
        body = sale_body(f"R-{next(self.receipts):06d}", customer=customer, lines=[line])
        body["sold_at"] = utc_timestamp(sold)
        body["currency"] = currency
        self.send(store, "sale", body, sold)

    def signup(
        self,
        store: str,
        member: str,
        at: datetime,
        *,
        card: str | None = None,
        node: str = "node-1",
        email: bool = True,
        sms: bool = False,
    ) -> None:
        body = signup_body(member, card)
        body["consent"]["marketing_email"] = email
        body["consent"]["marketing_sms"] = sms
        self.send(store, "signup", body, at, node)

    def survey(self, store: str, score: int, at: datetime) -> None:
        self.send(store, "survey", {"score": score, "language": "en", "vault_key": "0123456789abcdef"}, at)

    def tap(self, store: str, tok: str, at: datetime) -> None:
        self.send(store, "identity", {"source": "nfc", "token": tok, "device": "reader-1"}, at)

    def redeem(self, store: str, tok: str, at: datetime, *, approval: str = "central") -> None:
        body = {
            "request_id": f"{next(self.requests):032x}",
            "reward": "coffee",
            "pos": "till-1",
            "customer": {"source": "nfc", "token": tok},
            "approval": approval,
        }
        self.send(store, "redemption", body, at)


@pytest.fixture
def shop(engine: Engine) -> Shop:
    return Shop(engine)


# -- the RFM data set (docs/reports.md, worked example) ----------------------------------------------------


def rfm_data(shop: Shop) -> None:
    """Six customers in EUR, one of them also in USD, and an anonymous sale; times are whole days + 2 h."""

    def day(n: int) -> datetime:
        return ago(n, hours=2)

    for n in (1, 2, 3, 4, 5):
        shop.sale("store-1", token(1), 1000, day(n))
    shop.sale("store-2", token(1), 2500, day(45), currency="USD")
    shop.sale("store-1", token(2), 500, day(2))
    shop.sale("store-1", token(2), 500, day(6))
    shop.sale("store-2", token(2), 500, day(8))
    shop.sale("store-2", token(2), 500, day(9))
    shop.sale("store-2", token(3), 9000, day(5))
    for n in (15, 16, 17):
        shop.sale("store-1", token(4), 600, day(n))
    shop.sale("store-1", token(4), -300, day(1))  # a return: spend, not a purchase
    shop.sale("store-1", token(5), 400, day(40))
    shop.sale("store-2", token(5), 400, day(50))
    shop.sale("store-2", token(6), 300, day(20))
    shop.sale("store-1", None, 7000, day(1))  # anonymous: nobody's
    shop.sale("store-1", token(7), 100, NOW)  # at the end of the window: outside it


def test_quintiles_rank_with_ties_sharing_the_lower_score() -> None:
    assert reports.quintiles([10, 20, 30, 40, 50]) == [1, 2, 3, 4, 5]
    assert reports.quintiles(list(range(10))) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert reports.quintiles([1, 1, 1, 1, 5]) == [1, 1, 1, 1, 5]
    assert reports.quintiles([7]) == [1]
    assert reports.quintiles([]) == []


@pytest.mark.parametrize(
    ("recency", "r", "f", "m", "segment"),
    [
        (30, 5, 5, 5, "dormant"),
        (29, 5, 5, 5, "champions"),
        (1, 4, 4, 3, "loyal"),
        (1, 2, 5, 5, "at_risk"),
        (1, 3, 3, 1, "loyal"),
        (1, 5, 2, 5, "growth_potential"),
    ],
)
def test_segment_rules_apply_in_order(recency: int, r: int, f: int, m: int, segment: str) -> None:
    assert reports.segment_of(recency, r, f, m) == segment


def test_rfm_scores_and_segments_match_the_hand_computed_example(engine: Engine, shop: Shop) -> None:
    rfm_data(shop)
    rows = reports.rfm(engine, None, None, NOW)
    got = [
        (
            row.account,
            row.currency,
            row.recency_days,
            row.frequency,
            row.monetary,
            row.r,
            row.f,
            row.m,
            row.segment,
        )
        for row in rows
    ]
    assert got == [
        (token(1), "EUR", 1, 5, 5000, 5, 5, 4, "champions"),
        (token(2), "EUR", 2, 4, 2000, 4, 4, 3, "loyal"),
        (token(3), "EUR", 5, 1, 9000, 3, 1, 5, "growth_potential"),
        (token(4), "EUR", 15, 3, 1500, 2, 3, 2, "at_risk"),
        (token(5), "EUR", 40, 2, 800, 1, 2, 1, "dormant"),
        (token(6), "EUR", 20, 1, 300, 1, 1, 1, "at_risk"),
        # USD is its own population: one customer, never compared with euros
        (token(1), "USD", 45, 1, 2500, 1, 1, 1, "dormant"),
    ]
    assert rows[0].last_purchase == "2026-11-29T22:00:00Z"
    assert reports.segment_counts(rows) == {
        "champions": 1,
        "loyal": 1,
        "growth_potential": 1,
        "at_risk": 2,
        "dormant": 2,
    }


def test_rfm_window_and_store_filter(engine: Engine, shop: Shop) -> None:
    rfm_data(shop)
    recent = reports.rfm(engine, None, ago(30), NOW)
    assert sorted((row.account, row.currency) for row in recent) == [
        (token(n), "EUR") for n in (1, 2, 3, 4, 6)
    ]
    at_store_2 = {(row.account, row.currency): row for row in reports.rfm(engine, "store-2", None, NOW)}
    assert sorted(at_store_2) == [
        (token(1), "USD"),
        (token(2), "EUR"),
        (token(3), "EUR"),
        (token(5), "EUR"),
        (token(6), "EUR"),
    ]
    assert (at_store_2[(token(2), "EUR")].frequency, at_store_2[(token(2), "EUR")].recency_days) == (2, 8)
    assert reports.rfm(engine, "store-9", None, NOW) == []


def test_repeat_purchase_rate_per_store_and_chain(engine: Engine, shop: Shop) -> None:
    rfm_data(shop)
    assert reports.repeat(engine, None, None, NOW) == [
        RepeatRow("*", 6, 4, 66.7),  # token 5 bought once in each store: a repeat customer of the chain
        RepeatRow("store-1", 4, 3, 75.0),
        RepeatRow("store-2", 5, 1, 20.0),
    ]
    assert reports.repeat(engine, None, ago(30), NOW) == [
        RepeatRow("*", 5, 3, 60.0),
        RepeatRow("store-1", 3, 3, 100.0),
        RepeatRow("store-2", 3, 1, 33.3),
    ]
    assert reports.repeat(engine, "store-2", None, NOW) == [RepeatRow("store-2", 5, 1, 20.0)]
    assert reports.repeat(engine, None, NOW, NOW) == []


# -- win-back ----------------------------------------------------------------------------------------------


def test_winback_lists_dormant_members_only(engine: Engine, shop: Shop) -> None:
    m1, m2, m3, m4, m5, m6 = (token(100 + n) for n in range(1, 7))
    shop.signup("store-1", m1, ago(60), card=token(201))
    shop.sale("store-2", token(201), 1000, ago(35))  # by card: the member's purchase
    shop.signup("store-1", m2, ago(60))
    shop.sale("store-1", m2, 1000, ago(50))
    shop.sale("store-1", m2, 1000, ago(5))
    shop.signup("store-2", m3, ago(40), email=False, sms=True)  # never bought
    shop.signup("store-1", m4, ago(10))  # new, never bought: not yet dormant
    shop.signup("store-1", m5, ago(50))
    shop.sale("store-1", m5, 1000, ago(30))  # exactly 30 days: dormant
    shop.signup("store-1", m6, ago(50))
    shop.sale("store-1", m6, 1000, ago(30) + timedelta(minutes=1))  # not quite
    shop.sale("store-1", token(300), 1000, ago(90))  # a card that never joined: nobody to write to

    rows = reports.winback(engine, None, None, NOW)
    assert rows == [
        WinbackRow(m3, None, 40, 0, "store-2", False, True),
        WinbackRow(m1, "2026-10-27T00:00:00Z", 35, 1, "store-2", True, False),
        WinbackRow(m5, "2026-11-01T00:00:00Z", 30, 1, "store-1", True, False),
    ]
    assert [row.account for row in reports.winback(engine, "store-2", None, NOW)] == [m3, m1]
    assert [row.account for row in reports.winback(engine, None, ago(36), NOW)] == [m1, m5]
    assert [row.account for row in reports.winback(engine, None, None, NOW, dormant_days=45)] == []


# -- NPS ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("promoters", "detractors", "responses", "expected"),
    [
        (1, 0, 8, 13),
        (0, 1, 8, -13),
        (3, 3, 8, 0),
        (1, 0, 3, 33),
        (2, 0, 3, 67),
        (0, 2, 3, -67),
        (5, 7, 16, -13),
    ],
)
def test_nps_rounds_half_away_from_zero(
    promoters: int, detractors: int, responses: int, expected: int
) -> None:
    assert reports.nps_value(promoters, detractors, responses) == expected


def nps_data(shop: Shop) -> None:
    """Two stores, October and November, eight answers each."""
    answers = {
        ("store-1", 10): [9, 7, 7, 7, 7, 7, 7, 7],  # 1 promoter, 0 detractors: 12.5 -> 13
        ("store-2", 10): [6, 7, 7, 7, 7, 7, 7, 7],  # -12.5 -> -13
        ("store-1", 11): [10, 9, 9, 8, 6, 0, 10, 7],  # 4 - 2 of 8: 25
        ("store-2", 11): [9, 8, 7, 6, 5, 4, 3, 2],  # 1 - 5 of 8: -50
    }
    for (store, month), scores in answers.items():
        for i, score in enumerate(scores):
            shop.survey(store, score, datetime(2026, month, 3 + i, 12, tzinfo=UTC))
    shop.survey("store-1", 0, NOW)  # the end of the window is excluded


def test_nps_per_store_and_month(engine: Engine, shop: Shop) -> None:
    nps_data(shop)
    assert reports.nps(engine, None, None, NOW) == [
        NpsRow("2026-10", "*", 16, 1, 14, 1, 0),
        NpsRow("2026-10", "store-1", 8, 1, 7, 0, 13),
        NpsRow("2026-10", "store-2", 8, 0, 7, 1, -13),
        NpsRow("2026-11", "*", 16, 5, 4, 7, -13),
        NpsRow("2026-11", "store-1", 8, 4, 2, 2, 25),
        NpsRow("2026-11", "store-2", 8, 1, 2, 5, -50),
    ]
    assert reports.nps(engine, "store-2", datetime(2026, 11, 1, tzinfo=UTC), NOW) == [
        NpsRow("2026-11", "store-2", 8, 1, 2, 5, -50)
    ]


def test_nps_over_the_whole_window_and_per_iso_week(engine: Engine, shop: Shop) -> None:
    nps_data(shop)
    assert reports.nps(engine, None, None, NOW, period="all") == [
        NpsRow("all", "*", 32, 6, 18, 8, -6),  # -6.25
        NpsRow("all", "store-1", 16, 5, 9, 2, 19),  # 18.75
        NpsRow("all", "store-2", 16, 1, 9, 6, -31),  # -31.25
    ]
    weekly = {
        (row.period, row.store): row.responses
        for row in reports.nps(engine, "store-1", None, NOW, period="week")
    }
    # October 3-10 and November 3-10, 2026: 3-4 Oct are Sat/Sun of week 40; 5-10 Oct week 41;
    # 3-8 Nov (Tue-Sun) week 45; 9-10 Nov week 46
    assert weekly == {
        ("2026-W40", "store-1"): 2,
        ("2026-W41", "store-1"): 6,
        ("2026-W45", "store-1"): 6,
        ("2026-W46", "store-1"): 2,
    }


def test_iso_weeks_start_on_monday_in_utc(engine: Engine, shop: Shop) -> None:
    shop.survey("store-1", 10, datetime(2026, 11, 8, 23, 59, 59, tzinfo=UTC))  # Sunday: week 45
    shop.survey("store-1", 0, datetime(2026, 11, 9, 0, 0, tzinfo=UTC))  # Monday: week 46
    shop.survey("store-1", 9, datetime(2027, 1, 3, 12, tzinfo=UTC))  # Sunday: ISO 2026-W53
    rows = reports.nps(engine, "store-1", None, datetime(2027, 2, 1, tzinfo=UTC), period="week")
    assert [(row.period, row.nps) for row in rows] == [
        ("2026-W45", 100),
        ("2026-W46", -100),
        ("2026-W53", 100),
    ]


# -- retention ---------------------------------------------------------------------------------------------


def test_retention_month_on_month(engine: Engine, shop: Shop) -> None:
    def on(month: int, day: int) -> datetime:
        return datetime(2026, month, day, 12, tzinfo=UTC)

    b1, b2, b3, b4, b5 = (token(10 + n) for n in range(1, 6))
    for when in (on(10, 5), on(10, 20), on(11, 5), on(12, 5)):
        shop.sale("store-1", b1, 1000, when)
    shop.sale("store-1", b2, 1000, on(10, 6))
    shop.sale("store-1", b2, 1000, on(11, 6))
    shop.sale("store-1", b3, 1000, on(10, 7))
    shop.sale("store-1", b4, 1000, on(11, 7))
    shop.sale("store-1", b5, 1000, on(11, 8))
    shop.sale("store-2", b5, 1000, on(12, 8))
    shop.sale("store-1", b3, -1000, on(11, 9))  # a return is not a visit
    now = datetime(2026, 12, 15, tzinfo=UTC)
    assert reports.retention(engine, None, None, now) == [
        RetentionRow("2026-11", "*", 3, 2, 66.7, True),
        RetentionRow("2026-11", "store-1", 3, 2, 66.7, True),
        RetentionRow("2026-12", "*", 4, 2, 50.0, False),  # b5 came back, to the other store
        RetentionRow("2026-12", "store-1", 4, 1, 25.0, False),
    ]
    # since is rounded down to its month: November's customers are the first cohort
    assert reports.retention(engine, None, datetime(2026, 11, 10, tzinfo=UTC), now) == [
        RetentionRow("2026-12", "*", 4, 2, 50.0, False),
        RetentionRow("2026-12", "store-1", 4, 1, 25.0, False),
    ]
    # a window ending at a month's start: that month is complete, the next one has no row at all
    assert [(r.period, r.store, r.complete) for r in reports.retention(engine, None, None, NEW_YEAR)] == [
        ("2026-11", "*", True),
        ("2026-11", "store-1", True),
        ("2026-12", "*", True),
        ("2026-12", "store-1", True),
    ]
    assert [r.period for r in reports.retention(engine, None, None, datetime(2026, 12, 1, tzinfo=UTC))] == [
        "2026-11",
        "2026-11",
    ]
    assert [r.period for r in reports.retention(engine, "store-1", None, now)] == ["2026-11", "2026-12"]
    assert reports.retention(engine, "store-2", None, now) == []


# -- sign-ups ----------------------------------------------------------------------------------------------


def test_signups_per_store_per_utc_day(engine: Engine, shop: Shop) -> None:
    shop.signup("store-1", token(1), datetime(2026, 11, 20, 10, tzinfo=UTC))
    shop.signup("store-1", token(2), datetime(2026, 11, 20, 23, 59, 59, tzinfo=UTC), email=False, sms=True)
    shop.signup("store-2", token(3), datetime(2026, 11, 20, 12, tzinfo=UTC))
    shop.signup("store-1", token(4), datetime(2026, 11, 21, tzinfo=UTC))
    assert reports.signups(engine, None, None, NOW) == [
        SignupRow("2026-11-20", "store-1", 2, 1, 1),
        SignupRow("2026-11-20", "store-2", 1, 1, 0),
        SignupRow("2026-11-21", "store-1", 1, 1, 0),
    ]
    assert reports.signups(engine, "store-2", None, NOW) == [SignupRow("2026-11-20", "store-2", 1, 1, 0)]
    assert reports.signups(engine, None, datetime(2026, 11, 21, tzinfo=UTC), NOW) == [
        SignupRow("2026-11-21", "store-1", 1, 1, 0)
    ]


# -- fraud -------------------------------------------------------------------------------------------------


def fraud_data(shop: Shop) -> None:
    m = timedelta(minutes=1)
    # enrolment bursts: 3 in 4 minutes on store-1/node-1 (the fourth, 9 min later, is not part of it) ...
    for n, offset in enumerate((0, 2, 4, 13)):
        shop.signup("store-1", token(1000 + n), T0 + offset * m)
    # ... but not 3 spread over 16 minutes, nor only 2 within a minute
    for n, offset in enumerate((0, 8, 16)):
        shop.signup("store-1", token(1010 + n), T0 + offset * m, node="node-2")
    shop.signup("store-2", token(1020), T0)
    shop.signup("store-2", token(1021), T0 + m)
    # one card presented for two different members; another card once
    shop.signup("store-2", token(31), T0 + timedelta(hours=1), card=token(41))
    shop.signup("store-2", token(32), T0 + timedelta(hours=2), card=token(41))
    shop.signup("store-2", token(33), T0 + timedelta(hours=3), card=token(42))
    # store hops: 20 min apart (yes), 60 min apart (no), a sale then a tap 5 min apart (yes), same store (no)
    shop.tap("store-1", token(51), T0)
    shop.tap("store-2", token(51), T0 + 20 * m)
    shop.tap("store-1", token(52), T0)
    shop.tap("store-2", token(52), T0 + 60 * m)
    shop.sale("store-1", token(53), 1000, T0)
    shop.tap("store-2", token(53), T0 + 5 * m)
    shop.tap("store-1", token(54), T0)
    shop.tap("store-1", token(54), T0 + 5 * m)
    # redemptions per day: 4 (yes), 3 (no), 2 + 2 on two days (no), and a member's card and code (2 + 2: yes)
    day = datetime(2026, 11, 21, 9, tzinfo=UTC)
    for i in range(4):
        shop.redeem("store-1", token(61), day + i * m, approval="offline" if i else "central")
    for i in range(3):
        shop.redeem("store-1", token(62), day + i * m)
    for i in range(2):
        shop.redeem("store-1", token(63), day + i * m)
        shop.redeem("store-1", token(63), day + timedelta(days=1) + i * m)
    shop.signup("store-1", token(71), T0 - timedelta(days=5), card=token(72))
    for i in range(2):
        shop.redeem("store-1", token(72), day + i * m)
        shop.redeem("store-2", token(71), day + timedelta(hours=5) + i * m)


def test_fraud_signals_fire_where_they_should_and_nowhere_else(engine: Engine, shop: Shop) -> None:
    fraud_data(shop)
    signals = reports.fraud(engine, None, None, NOW)
    assert signals == [
        FraudSignal(
            "card-reenrolled",
            token(41),
            "store-2",
            "2026-11-20T11:00:00Z",
            "2026-11-20T12:00:00Z",
            2,
            "one card presented at sign-up for 2 different members",
        ),
        FraudSignal(
            "card-two-stores",
            token(51),
            "store-1,store-2",
            "2026-11-20T10:00:00Z",
            "2026-11-20T10:20:00Z",
            1,
            "1 store change(s) within 30 min, quickest 20 min",
        ),
        FraudSignal(
            "card-two-stores",
            token(53),
            "store-1,store-2",
            "2026-11-20T10:00:00Z",
            "2026-11-20T10:05:00Z",
            1,
            "1 store change(s) within 30 min, quickest 5 min",
        ),
        FraudSignal(
            "enrolment-burst",
            "store-1/node-1",
            "store-1",
            "2026-11-20T10:00:00Z",
            "2026-11-20T10:04:00Z",
            3,
            "3 sign-ups in 4 min on one node",
        ),
        FraudSignal(
            "redemptions",
            token(61),
            "store-1",
            "2026-11-21T09:00:00Z",
            "2026-11-21T09:03:00Z",
            4,
            "4 redemptions on 2026-11-21 (more than 3), 3 under the offline allowance",
        ),
        FraudSignal(
            "redemptions",
            token(71),  # the member: two by card, two by member code
            "store-1,store-2",
            "2026-11-21T09:00:00Z",
            "2026-11-21T14:01:00Z",
            4,
            "4 redemptions on 2026-11-21 (more than 3), 0 under the offline allowance",
        ),
    ]


def test_fraud_thresholds_are_parameters(engine: Engine, shop: Shop) -> None:
    fraud_data(shop)
    loose = FraudThresholds(burst_signups=2, travel_window=timedelta(minutes=90), redemptions_per_day=2)
    by_kind: dict[str, list[str]] = {}
    for signal in reports.fraud(engine, None, None, NOW, thresholds=loose):
        by_kind.setdefault(signal.kind, []).append(signal.subject)
    # two within 10 minutes is enough now: also node-2's sign-ups 8 minutes apart
    assert by_kind["enrolment-burst"] == ["store-1/node-1", "store-1/node-2", "store-2/node-1"]
    assert sorted(by_kind["card-two-stores"]) == [token(51), token(52), token(53)]
    assert sorted(by_kind["redemptions"]) == [token(61), token(62), token(71)]  # 63: 2 a day, not more
    strict = FraudThresholds(burst_window=timedelta(minutes=3), travel_window=timedelta(minutes=4))
    kinds = {s.kind for s in reports.fraud(engine, None, None, NOW, thresholds=strict)}
    assert kinds == {"card-reenrolled", "redemptions"}


def test_fraud_by_store_and_window(engine: Engine, shop: Shop) -> None:
    fraud_data(shop)
    at_store_2 = [(s.kind, s.subject) for s in reports.fraud(engine, "store-2", None, NOW)]
    assert at_store_2 == [
        ("card-reenrolled", token(41)),
        ("card-two-stores", token(51)),
        ("card-two-stores", token(53)),
    ]
    assert reports.fraud(engine, None, datetime(2026, 11, 22, tzinfo=UTC), NOW) == []


# -- the command line --------------------------------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    for name in list(os.environ):
        if name.startswith("KIOSK_CENTRAL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KIOSK_CENTRAL_DATA__DIR", str(tmp_path / "data"))
    return CliRunner()


def run_report(runner: CliRunner, db_url: str, *args: str) -> Any:
    return runner.invoke(cli, ["report", *args, "--db", db_url, "--until", "2026-12-01"])


def test_report_json_table_and_csv(runner: CliRunner, db_url: str, engine: Engine, shop: Shop) -> None:
    nps_data(shop)
    result = run_report(runner, db_url, "nps", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0] == {
        "period": "2026-10",
        "store": "*",
        "responses": 16,
        "promoters": 1,
        "passives": 14,
        "detractors": 1,
        "nps": 0,
    }
    assert [row["nps"] for row in rows] == [0, 13, -13, -13, 25, -50]

    table = run_report(runner, db_url, "nps", "--store", "store-1", "--period", "all").stdout.splitlines()
    assert table[0].split() == ["period", "store", "responses", "promoters", "passives", "detractors", "nps"]
    assert table[1].split() == ["all", "store-1", "16", "5", "9", "2", "19"]

    text = run_report(runner, db_url, "nps", "--format", "csv", "--since", "2026-11-01").stdout_bytes.decode()
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == ["period", "store", "responses", "promoters", "passives", "detractors", "nps"]
    assert parsed[1:] == [
        ["2026-11", "*", "16", "5", "4", "7", "-13"],  # numbers are not "guarded": -13 stays a number
        ["2026-11", "store-1", "8", "4", "2", "2", "25"],
        ["2026-11", "store-2", "8", "1", "2", "5", "-50"],
    ]
    assert text.count("\r\n") == 4  # RFC 4180 line ends


def test_every_report_in_every_format_agrees_with_the_json(
    runner: CliRunner, db_url: str, engine: Engine, shop: Shop
) -> None:
    rfm_data(shop)
    fraud_data(shop)
    nps_data(shop)
    shop.signup("store-2", token(900), ago(40))  # dormant, never bought: empty fields
    for name in reports.REPORTS:
        outputs = {}
        for fmt in ("table", "csv", "json"):
            result = run_report(runner, db_url, name, "--format", fmt)
            assert result.exit_code == 0, (name, fmt, result.output)
            outputs[fmt] = result.stdout
        rows = json.loads(outputs["json"])
        assert rows, name
        fields = list(rows[0])
        assert fields == list(reports.REPORTS[name].row_type.__struct_fields__)
        table = outputs["table"].splitlines()
        assert table[0].split() == fields and len(table) == len(rows) + 1, name
        records = list(csv.DictReader(io.StringIO(outputs["csv"])))
        assert len(records) == len(rows), name
        for record, row in zip(records, rows, strict=True):
            for field, value in row.items():
                if value is None:
                    assert record[field] == ""
                elif isinstance(value, bool):
                    assert record[field] == str(value).lower()
                elif isinstance(value, float):
                    assert float(record[field]) == value
                elif isinstance(value, str) and value.startswith(("-", "+", "=", "@")):
                    assert record[field] == "'" + value
                else:
                    assert record[field] == str(value), (name, field)
    empty = run_report(runner, db_url, "fraud", "--since", "2026-11-30", "--format", "json")
    assert json.loads(empty.stdout) == []
    assert run_report(runner, db_url, "fraud", "--since", "2026-11-30").stdout.splitlines()[1] == "(no rows)"


def test_csv_guards_against_formula_injection() -> None:
    for hostile in ('=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"):
        assert csv_cell(hostile) == "'" + hostile
    assert (csv_cell("store-1"), csv_cell(-13), csv_cell(66.7), csv_cell(None), csv_cell(True)) == (
        "store-1",
        "-13",
        "66.7",
        "",
        "true",
    )
    row = FraudSignal("redemptions", "=cmd|' /C calc'!A0", "@store", "-", "+", 1, "=1+1")
    parsed = list(csv.reader(io.StringIO(render([row], FraudSignal, "csv"))))
    assert parsed[1] == ["redemptions", "'=cmd|' /C calc'!A0", "'@store", "'-", "'+", "1", "'=1+1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "bogus"], "unknown report 'bogus'"),
        (["report", "nps", "--format", "xml"], "--format 'xml'"),
        (["report", "nps", "--store", "a/b"], "--store 'a/b'"),
        (["report", "nps", "--since", "last week"], "--since 'last week'"),
        (["report", "nps", "--since", "2026-02-30"], "not a calendar date"),
        (["report", "nps", "--until", "2026-13-01"], "--until '2026-13-01'"),
        (["report", "nps", "--since", "2030-01-01", "--until", "2026-12-01"], "after the end"),
        (["report", "rfm", "--period", "week"], "--period applies to the nps report only"),
        (["report", "nps", "--period", "year"], "--period 'year'"),
        (["report", "nps", "--bogus"], "No such option"),
        (["report"], "Missing argument"),
        (["dashboard", "--port", "0"], "--port"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr


def test_parse_since_and_until() -> None:
    now = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
    assert parse_until(None, now) == now
    assert parse_until("2026-12-01", now) == NOW
    assert parse_since("30d", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since(None, NOW) is None


def test_the_console_script_runs_a_report(db_url: str, engine: Engine, shop: Shop) -> None:
    rfm_data(shop)
    env = base_env()
    done = subprocess.run(
        [KIOSK_CENTRAL, "report", "repeat", "--db", db_url, "--until", "2026-12-01", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0] == {
        "store": "*",
        "customers": 6,
        "repeat_customers": 4,
        "rate_pct": 66.7,
    }


def test_dashboard_command_serves_the_app_with_waitress(
    runner: CliRunner, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import waitress

    served: dict[str, Any] = {}

    def serve(app: Any, **options: Any) -> None:  # answers one request instead of serving forever
        served.update(options, status=app.test_client().get("/").status_code)

    monkeypatch.setattr(waitress, "serve", serve)
    result = runner.invoke(cli, ["dashboard", "--db", db_url, "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"], served["status"]) == ("127.0.0.1", 8123, 200)
    assert "warning" not in result.stderr
    result = runner.invoke(cli, ["dashboard", "--db", db_url, "--host", "0.0.0.0"])
    assert "no authentication" in result.stderr


# -- the dashboard -----------------------------------------------------------------------------------------


def hashed(n: int) -> str:
    """A realistic token (no long run of zeros), so a truncated one really hides the rest."""
    return hashlib.sha256(str(n).encode()).hexdigest()


@pytest.fixture
def client(engine: Engine) -> FlaskClient:
    app = create_app(engine, clock=lambda: NOW)
    app.testing = True
    return app.test_client()


def test_dashboard_pages_show_the_figures_without_tokens_or_scripts(
    client: FlaskClient, engine: Engine, shop: Shop
) -> None:
    hostile = "<script>alert(1)</script>"
    for n in range(1, 4):
        shop.signup("store-1", hashed(n), ago(n), card=hashed(100 + n))
        shop.sale("store-1", hashed(100 + n), 1234 * n, ago(n), name=hostile)
    shop.sale("store-2", hashed(9), 500, ago(40), name=hostile)
    for score in (10, 9, 3):
        shop.survey("store-1", score, ago(2))
    shop.tap("store-1", hashed(200), ago(3))
    shop.tap("store-2", hashed(200), ago(3) + timedelta(minutes=10))
    pages = {path: client.get(path) for path in ("/", "/segments", "/fraud", "/?store=store-1&days=30")}
    for path, response in pages.items():
        assert response.status_code == 200, path
        html = response.get_data(as_text=True)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe" not in csp
        nonce = csp.split("'nonce-")[1].split("'")[0]
        assert f'<style nonce="{nonce}">' in html
        assert "<script" not in html and hostile not in html
        assert response.headers["X-Frame-Options"] == "DENY"
        for n in (*range(1, 4), *range(101, 104), 9, 200):
            assert hashed(n) not in html, (path, n)
        assert "<svg" in html
    overview = pages["/"].get_data(as_text=True)
    assert "33" in overview and "3 answers" in overview  # NPS (2 - 1) / 3
    assert "0 dormant member(s)" in overview  # the one dormant account is a card, not a member
    segments = pages["/segments"].get_data(as_text=True)
    assert hashed(1)[:8] + "…" in segments and "37.02 EUR" in segments  # the card's purchases: the member's
    fraud = pages["/fraud"].get_data(as_text=True)
    assert hashed(200)[:8] + "…" in fraud and "card-two-stores" in fraud
    # each response has its own nonce
    assert client.get("/").headers["Content-Security-Policy"] != pages["/"].headers["Content-Security-Policy"]


def test_dashboard_refuses_bad_filters_and_writes(client: FlaskClient) -> None:
    for query in ("store=%3Cscript%3E", "store=a%2Fb", "days=abc", "days=5", "days=-7"):
        response = client.get(f"/?{query}")
        assert response.status_code == 400, query
        assert "<script>" not in response.get_data(as_text=True)
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert client.post("/").status_code == 405
    assert client.get("/nowhere").status_code == 404
    empty = client.get("/?days=7")
    assert empty.status_code == 200 and "no data" in empty.get_data(as_text=True)


def test_charts_escape_their_labels() -> None:
    svg = str(bar_chart([("<b>x</b>", -12.0), ("a&b", 40.0)], title="<i>t</i>", domain=(-100, 100)))
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and "a&amp;b" in svg and "<i>" not in svg
    assert 'class="bar neg"' in svg
    col = str(column_chart([("<d1>", 3), ("d2", 0)], title="sign-ups"))
    assert "<d1>" not in col and "&lt;d1&gt;" in col


def test_tokens_are_truncated_and_money_uses_the_currency_s_decimals() -> None:
    assert short_token(hashed(1)) == hashed(1)[:8] + "…"
    assert short_token("store-1/node-1") == "store-1/node-1"
    assert (money(123456, "EUR"), money(-50, "EUR"), money(1500, "JPY"), money(1234, "KWD")) == (
        "1234.56 EUR",
        "-0.50 EUR",
        "1500 JPY",
        "1.234 KWD",
    )
