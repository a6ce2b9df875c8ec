"""Marketing reports over the central ledger (``kiosk-central report NAME``, and the dashboard).

Read-only. Every report is one function ``(engine, store, since, now, **options) -> list[Row]`` whose
rows are msgspec structs, so the command line, the JSON output and the dashboard share one definition.
The full definitions, with a worked example, are in ``docs/reports.md``; in short:

Common rules
    *Window*: the half-open interval ``[since, now)`` (``since`` None: all history before ``now``).
    *Days, weeks and months* are UTC calendar days, ISO weeks (labelled ``2026-W48``) and months
    (``2026-11``). *A customer* is a sales account: the member's token, or a card's own token before its
    holder joined; anonymous sales are not counted. *A purchase* is a sale whose total is ≥ 0; a return
    (total < 0) is no purchase (not a visit, not recency) but its negative total counts in spend.
    *Rates* are percentages rounded to one decimal, half away from zero.

``rfm``
    Per customer and currency: recency (whole days since the last purchase), frequency (purchases) and
    monetary (net sum of totals, minor units). Each is scored 1-5 within the population of its currency
    by ``1 + 5 * below // n``, where ``below`` counts the customers with a strictly worse value (more days,
    fewer purchases, less spend) and ``n`` the population: a quintile of the rank, ties share the lower
    score. Amounts in different currencies are never added or compared (there are no exchange rates
    centrally): a customer who bought in two currencies has a row, and a score, in each. Segments, first
    rule that matches: ``dormant`` (recency ≥ ``dormant_days``, 30), ``champions`` (R, F and M ≥ 4),
    ``at_risk`` (R ≤ 2: churn risk), ``loyal`` (F ≥ 3), ``growth_potential`` (everyone else: recent, not yet
    frequent).
``winback``
    Members (not cards that never joined) without a purchase, chain-wide and in any currency, for
    ``dormant_days`` or more — or, never having bought, who joined that long ago. Tokens and consent flags
    only, never personal data: the PII vault resolves a token to a contact, if consented.
``nps``
    Per store and period (month, ISO week, or the whole window): survey answers 9-10 are promoters, 7-8
    passives, 0-6 detractors; ``NPS = 100 * (promoters - detractors) / responses`` rounded to an integer,
    half away from zero. A chain row (store ``*``) per period when no store is chosen.
``repeat``
    Per store, and chain-wide (``*``): the share of the window's customers with two or more purchases.
``retention``
    Per month P, per store and chain-wide: of the customers who bought in month P-1, the share who bought
    again in P. ``since`` is rounded down to the start of its month (the first P is the month after).
``signups``
    New members per store per UTC day, with how many ticked each marketing consent.
``fraud``
    Signals, each with its own threshold parameter: ``enrolment-burst`` (``burst_signups``, 3, sign-ups on
    one node within ``burst_window``, 10 minutes), ``card-reenrolled`` (one card presented at sign-up for two
    or more different members), ``card-two-stores`` (one identity token tapped or used in sales in two
    different stores within ``travel_window``, 30 minutes) and ``redemptions`` (more than
    ``redemptions_per_day``, 3, reward redemptions by one member or card in one UTC day).

SQL: SQLAlchemy Core that runs on SQLite and PostgreSQL alike. Counting happens in SQL; the three
dialect-specific pieces (UTC day, week and month of a timestamp) are small compiled constructs below.
What needs ordered, per-key logic (retention, bursts, re-enrolled cards, store hops, the win-back list)
reads a stream ordered by its key, so memory is bounded by one key's rows, not by the table. RFM ranks
its aggregates in memory — one small tuple per customer, since a quintile needs the whole population.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final, Literal

import msgspec
from sqlalchemy import (
    ColumnElement,
    Engine,
    Row,
    Select,
    String,
    and_,
    case,
    func,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from cloud_sync.central.schema import cards, events, members, nodes, sales

#: Days without a purchase after which a customer is dormant (the business's win-back rule).
DORMANT_DAYS: Final = 30
#: ``enrolment-burst``: this many sign-ups on one node within ``BURST_WINDOW`` ...
BURST_SIGNUPS: Final = 3
BURST_WINDOW: Final = timedelta(minutes=10)
#: ``card-two-stores``: one token in two different stores at most this far apart.
TRAVEL_WINDOW: Final = timedelta(minutes=30)
#: ``redemptions``: more than this many redemptions by one member (or card) in one UTC day.
REDEMPTIONS_PER_DAY: Final = 3
#: The store of chain-wide rows (store ids start with a letter or digit, so it cannot clash).
CHAIN: Final = "*"
#: Rows fetched per round trip when streaming.
_CHUNK: Final = 1000

Segment = Literal["champions", "loyal", "growth_potential", "at_risk", "dormant"]
SEGMENTS: Final[tuple[Segment, ...]] = ("champions", "loyal", "growth_potential", "at_risk", "dormant")
Period = Literal["month", "week", "all"]
FraudKind = Literal["enrolment-burst", "card-reenrolled", "card-two-stores", "redemptions"]
FRAUD_KINDS: Final[tuple[FraudKind, ...]] = (
    "enrolment-burst",
    "card-reenrolled",
    "card-two-stores",
    "redemptions",
)


# -- rows ------------------------------------------------------------------------------------------------


class RfmRow(msgspec.Struct, frozen=True):
    """One customer's RFM figures and scores in one currency."""

    account: str
    currency: str
    recency_days: int
    frequency: int
    #: net of returns, in minor units of ``currency``
    monetary: int
    r: int
    f: int
    m: int
    segment: Segment
    last_purchase: str


class WinbackRow(msgspec.Struct, frozen=True):
    """A dormant member to win back: a token and consent flags, nothing personal."""

    account: str
    #: None: joined, never bought
    last_purchase: str | None
    #: whole days since the last purchase, or since joining for a member who never bought
    days_since: int
    purchases: int
    #: where they last bought, or where they joined if they never did
    store: str
    marketing_email: bool
    marketing_sms: bool


class NpsRow(msgspec.Struct, frozen=True):
    """Survey answers of one store (or ``*``, the chain) in one period."""

    period: str
    store: str
    responses: int
    promoters: int
    passives: int
    detractors: int
    nps: int


class RepeatRow(msgspec.Struct, frozen=True):
    """Repeat-purchase rate of one store (or ``*``) over the window."""

    store: str
    customers: int
    repeat_customers: int
    rate_pct: float


class RetentionRow(msgspec.Struct, frozen=True):
    """Month-on-month retention: of ``previous_customers`` (bought in the month before), ``retained``."""

    period: str
    store: str
    previous_customers: int
    retained: int
    rate_pct: float
    #: False for the month ``now`` falls in, which has not ended yet
    complete: bool


class SignupRow(msgspec.Struct, frozen=True):
    """New members of one store on one UTC day."""

    day: str
    store: str
    signups: int
    marketing_email: int
    marketing_sms: int


class FraudSignal(msgspec.Struct, frozen=True):
    """One suspicious pattern: what, about whom (a token, or ``store/node``), where, when and how much."""

    kind: FraudKind
    subject: str
    #: comma-separated store ids involved
    stores: str
    first_at: str
    last_at: str
    count: int
    detail: str


# -- dialect pieces: UTC day, ISO week (its Monday) and month of a timestamp as text ---------------------


class _UtcBucket(FunctionElement[str]):
    """Base of the bucket constructs; the timestamp is the only argument, formats are SQL literals."""

    type = String()
    inherit_cache = True


class utc_day(_UtcBucket):  # noqa: N801 - SQL function style
    """``YYYY-MM-DD`` of a timestamp, in UTC."""

    name = "utc_day"
    inherit_cache = True


class utc_week(_UtcBucket):  # noqa: N801 - SQL function style
    """``YYYY-MM-DD`` of the Monday of a timestamp's ISO week, in UTC."""

    name = "utc_week"
    inherit_cache = True


class utc_month(_UtcBucket):  # noqa: N801 - SQL function style
    """``YYYY-MM`` of a timestamp, in UTC."""

    name = "utc_month"
    inherit_cache = True


def _arg(element: _UtcBucket, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(next(iter(element.clauses)), **kw)


# SQLite stores DateTime(timezone=True) as UTC text (ingest writes UTC), which its date functions read.
@compiles(utc_day, "sqlite")
def _day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strftime('%Y-%m-%d', {_arg(element, compiler, **kw)})"


@compiles(utc_week, "sqlite")
def _week_sqlite(element: utc_week, compiler: SQLCompiler, **kw: Any) -> str:
    # 'weekday 0' moves forward to Sunday (or stays), minus six days is that ISO week's Monday
    return f"date({_arg(element, compiler, **kw)}, 'weekday 0', '-6 days')"


@compiles(utc_month, "sqlite")
def _month_sqlite(element: utc_month, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strftime('%Y-%m', {_arg(element, compiler, **kw)})"


# PostgreSQL: timestamptz AT TIME ZONE 'UTC' is the UTC wall-clock time, whatever the session's TimeZone.
@compiles(utc_day, "postgresql")
def _day_pg(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_char(({_arg(element, compiler, **kw)}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@compiles(utc_week, "postgresql")
def _week_pg(element: utc_week, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_char(date_trunc('week', ({_arg(element, compiler, **kw)}) AT TIME ZONE 'UTC'), 'YYYY-MM-DD')"


@compiles(utc_month, "postgresql")
def _month_pg(element: utc_month, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_char(({_arg(element, compiler, **kw)}) AT TIME ZONE 'UTC', 'YYYY-MM')"


# -- small helpers ---------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    """Aware UTC; SQLite hands back naive datetimes, which are UTC by construction (see above)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return _utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")


def _window(column: Any, since: datetime | None, now: datetime) -> list[ColumnElement[bool]]:
    """``since <= column < now``; bound values in UTC so SQLite's text comparison is right."""
    clauses: list[ColumnElement[bool]] = [column < _utc(now)]
    if since is not None:
        clauses.append(column >= _utc(since))
    return clauses


def _days(later: datetime, earlier: datetime) -> int:
    """Whole days (24 h each) from ``earlier`` to ``later``."""
    return (_utc(later) - _utc(earlier)) // timedelta(days=1)


def rate_pct(part: int, whole: int) -> float:
    """``100 * part / whole`` rounded to one decimal, half away from zero (exactly, via Decimal)."""
    if whole <= 0:
        raise ValueError("rate of an empty population")
    value = (Decimal(100 * part) / Decimal(whole)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return float(value)


def nps_value(promoters: int, detractors: int, responses: int) -> int:
    """``100 * (promoters - detractors) / responses`` rounded to an integer, half away from zero."""
    if responses <= 0:
        raise ValueError("NPS of no responses")
    numerator = 100 * (promoters - detractors)
    magnitude = (2 * abs(numerator) + responses) // (2 * responses)  # floor(|x| + 1/2), integers only
    return magnitude if numerator >= 0 else -magnitude


def quintiles(values: Sequence[int]) -> list[int]:
    """Score each value 1-5: ``1 + 5 * below // n``, ``below`` = how many values are strictly lower.

    Higher values score higher (negate a metric where lower is better). Ties share a score, the lower
    one, so a crowd of one-time buyers all score F=1 rather than being spread arbitrarily over scores.
    """
    ordered = sorted(values)
    n = len(ordered)
    return [1 + 5 * bisect_left(ordered, v) // n for v in values]


def segment_of(recency_days: int, r: int, f: int, m: int, *, dormant_days: int = DORMANT_DAYS) -> Segment:
    """The RFM segment by the documented rules, in order: the first that matches."""
    if recency_days >= dormant_days:
        return "dormant"
    if r >= 4 and f >= 4 and m >= 4:
        return "champions"
    if r <= 2:
        return "at_risk"
    if f >= 3:
        return "loyal"
    return "growth_potential"


def _stream(engine: Engine, stmt: Select[Any]) -> Iterator[Row[Any]]:
    """Rows of ``stmt`` fetched in chunks (a server-side cursor on PostgreSQL)."""
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=_CHUNK).execute(stmt)
        yield from result


def _purchase() -> ColumnElement[bool]:
    return sales.c.total >= 0


# -- rfm and winback -------------------------------------------------------------------------------------


def rfm(
    engine: Engine,
    store: str | None,
    since: datetime | None,
    now: datetime,
    *,
    dormant_days: int = DORMANT_DAYS,
) -> list[RfmRow]:
    """RFM figures, quintile scores and segment per customer and currency (module docstring)."""
    purchase = _purchase()
    frequency = func.sum(case((purchase, 1), else_=0))
    stmt = (
        select(
            sales.c.account,
            sales.c.currency,
            func.max(case((purchase, sales.c.sold_at))).label("last"),
            frequency.label("frequency"),
            func.sum(sales.c.total).label("monetary"),
        )
        .where(sales.c.account.is_not(None), *_window(sales.c.sold_at, since, now))
        .group_by(sales.c.account, sales.c.currency)
        .having(frequency >= 1)
    )
    if store is not None:
        stmt = stmt.where(sales.c.store == store)
    with engine.connect() as conn:
        found = conn.execute(stmt).all()
    by_currency: dict[str, list[tuple[str, datetime, int, int]]] = defaultdict(list)
    for account, currency, last, freq, monetary in found:
        by_currency[currency].append((account, _utc(last), int(freq), int(monetary)))
    rows: list[RfmRow] = []
    for currency, population in sorted(by_currency.items()):
        recency = [_days(now, last) for _, last, _, _ in population]
        r_scores = quintiles([-days for days in recency])
        f_scores = quintiles([freq for _, _, freq, _ in population])
        m_scores = quintiles([monetary for _, _, _, monetary in population])
        for (account, last, freq, monetary), days, r, f, m in zip(
            population, recency, r_scores, f_scores, m_scores, strict=True
        ):
            rows.append(
                RfmRow(
                    account=account,
                    currency=currency,
                    recency_days=days,
                    frequency=freq,
                    monetary=monetary,
                    r=r,
                    f=f,
                    m=m,
                    segment=segment_of(days, r, f, m, dormant_days=dormant_days),
                    last_purchase=_iso(last),
                )
            )
    rows.sort(key=lambda row: (row.currency, -(row.r + row.f + row.m), -row.monetary, row.account))
    return rows


def winback(
    engine: Engine,
    store: str | None,
    since: datetime | None,
    now: datetime,
    *,
    dormant_days: int = DORMANT_DAYS,
) -> list[WinbackRow]:
    """Dormant members, longest-lapsed first.

    Dormancy is chain-wide (a member buying in another store is not lapsed); ``store`` picks the members
    whose last purchase (or, never having bought, sign-up) was there; ``since`` keeps those whose last
    purchase or sign-up is on or after it (a "recently lapsed" list).
    """
    ranked = (
        select(
            sales.c.account,
            sales.c.store,
            sales.c.sold_at,
            func.count().over(partition_by=sales.c.account).label("purchases"),
            func.row_number()
            .over(partition_by=sales.c.account, order_by=(sales.c.sold_at.desc(), sales.c.event_id.desc()))
            .label("rn"),
        )
        .where(sales.c.account.is_not(None), _purchase(), sales.c.sold_at < _utc(now))
        .subquery()
    )
    last_at = func.coalesce(ranked.c.sold_at, members.c.joined_at)
    where_store = func.coalesce(ranked.c.store, members.c.store)
    stmt = (
        select(
            members.c.member_token,
            ranked.c.sold_at,
            members.c.joined_at,
            ranked.c.purchases,
            where_store.label("store"),
            members.c.marketing_email,
            members.c.marketing_sms,
        )
        .select_from(
            members.outerjoin(ranked, and_(ranked.c.account == members.c.member_token, ranked.c.rn == 1))
        )
        .where(members.c.joined_at < _utc(now), last_at <= _utc(now) - timedelta(days=dormant_days))
        .order_by(last_at, members.c.member_token)
    )
    if since is not None:
        stmt = stmt.where(last_at >= _utc(since))
    if store is not None:
        stmt = stmt.where(where_store == store)
    return [
        WinbackRow(
            account=row.member_token,
            last_purchase=_iso(row.sold_at) if row.sold_at is not None else None,
            days_since=_days(now, row.sold_at if row.sold_at is not None else row.joined_at),
            purchases=int(row.purchases or 0),
            store=row.store,
            marketing_email=bool(row.marketing_email),
            marketing_sms=bool(row.marketing_sms),
        )
        for row in _stream(engine, stmt)
    ]


# -- nps -------------------------------------------------------------------------------------------------


def _iso_week_label(monday: str) -> str:
    year, week, _ = date.fromisoformat(monday).isocalendar()
    return f"{year}-W{week:02d}"


def nps(
    engine: Engine,
    store: str | None,
    since: datetime | None,
    now: datetime,
    *,
    period: Period = "month",
) -> list[NpsRow]:
    """NPS per store and period from the survey events (the ``score`` of their body)."""
    score = events.c.body["score"].as_integer()
    bucket: ColumnElement[str]
    if period == "month":
        bucket = utc_month(events.c.ts)
    elif period == "week":
        bucket = utc_week(events.c.ts)
    elif period == "all":
        bucket = literal_column("'all'", String)
    else:
        raise ValueError(f"period must be month, week or all, not {period!r}")
    stmt = (
        select(
            bucket.label("period"),
            events.c.store,
            func.count().label("responses"),
            func.sum(case((score >= 9, 1), else_=0)).label("promoters"),
            func.sum(case((score <= 6, 1), else_=0)).label("detractors"),
        )
        .where(events.c.type == "survey", *_window(events.c.ts, since, now))
        .group_by(*([] if period == "all" else [bucket]), events.c.store)
    )
    if store is not None:
        stmt = stmt.where(events.c.store == store)
    with engine.connect() as conn:
        found = conn.execute(stmt).all()
    totals: dict[tuple[str, str], tuple[int, int, int]] = {}
    chain: dict[str, tuple[int, int, int]] = {}
    for label, where, responses, promoters, detractors in found:
        shown = _iso_week_label(label) if period == "week" else label
        counts = (int(responses), int(promoters), int(detractors))
        totals[(shown, where)] = counts
        before = chain.get(shown, (0, 0, 0))
        chain[shown] = (before[0] + counts[0], before[1] + counts[1], before[2] + counts[2])
    if store is None:  # the chain's figures are sums of counts, never an average of store NPS values
        totals.update({(shown, CHAIN): counts for shown, counts in chain.items()})
    return [
        NpsRow(
            period=label,
            store=where,
            responses=n,
            promoters=p,
            passives=n - p - d,
            detractors=d,
            nps=nps_value(p, d, n),
        )
        for (label, where), (n, p, d) in sorted(totals.items())
    ]


# -- repeat and retention --------------------------------------------------------------------------------


def repeat(engine: Engine, store: str | None, since: datetime | None, now: datetime) -> list[RepeatRow]:
    """Repeat-purchase rate per store and chain-wide: customers with ≥ 2 purchases / customers."""
    base = [sales.c.account.is_not(None), _purchase(), *_window(sales.c.sold_at, since, now)]
    if store is not None:
        base.append(sales.c.store == store)
    per_store = (
        select(sales.c.store, sales.c.account, func.count().label("n"))
        .where(*base)
        .group_by(sales.c.store, sales.c.account)
        .subquery()
    )
    per_chain = (
        select(sales.c.account, func.count().label("n")).where(*base).group_by(sales.c.account).subquery()
    )
    found: list[tuple[str, int, int]] = []
    with engine.connect() as conn:
        if store is None:
            customers, repeaters = conn.execute(
                select(func.count(), func.coalesce(func.sum(case((per_chain.c.n >= 2, 1), else_=0)), 0))
            ).one()
            if customers:
                found.append((CHAIN, customers, repeaters))
        found.extend(
            (where, customers, repeaters)
            for where, customers, repeaters in conn.execute(
                select(per_store.c.store, func.count(), func.sum(case((per_store.c.n >= 2, 1), else_=0)))
                .group_by(per_store.c.store)
                .order_by(per_store.c.store)
            )
        )
    return [
        RepeatRow(
            store=where,
            customers=int(customers),
            repeat_customers=int(repeaters),
            rate_pct=rate_pct(int(repeaters), int(customers)),
        )
        for where, customers, repeaters in found
    ]


def _month_index(label: str) -> int:
    year, month = label.split("-")
    return int(year) * 12 + int(month) - 1


def _month_label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def retention(engine: Engine, store: str | None, since: datetime | None, now: datetime) -> list[RetentionRow]:
    """Monthly retention per store and chain-wide (of month P-1's customers, the share back in P)."""
    start = None
    if since is not None:
        s = _utc(since)
        start = datetime(s.year, s.month, 1, tzinfo=UTC)
    month = utc_month(sales.c.sold_at)
    stmt = (
        select(sales.c.account, sales.c.store, month.label("month"))
        .distinct()
        .where(sales.c.account.is_not(None), _purchase(), *_window(sales.c.sold_at, start, now))
        .order_by(sales.c.account)
    )
    if store is not None:
        stmt = stmt.where(sales.c.store == store)
    last_instant = _utc(now) - timedelta(microseconds=1)  # the window is [since, now)
    current = _month_index(f"{last_instant.year:04d}-{last_instant.month:02d}")
    # a month is complete when the window reaches its end: the start of the next month is <= now
    ends_in_window = _month_index(f"{_utc(now).year:04d}-{_utc(now).month:02d}")
    first = _month_index(f"{start.year:04d}-{start.month:02d}") if start is not None else None
    cohort: Counter[tuple[int, str]] = Counter()
    kept: Counter[tuple[int, str]] = Counter()
    for _account, rows in itertools.groupby(_stream(engine, stmt), key=lambda row: row.account):
        months: dict[str, set[int]] = defaultdict(set)
        for row in rows:
            index = _month_index(row.month)
            months[row.store].add(index)
            if store is None:
                months[CHAIN].add(index)
        for where, bought in months.items():
            for index in bought:
                cohort[(index + 1, where)] += 1
                if index + 1 in bought:
                    kept[(index + 1, where)] += 1
    lowest = first + 1 if first is not None else None
    return [
        RetentionRow(
            period=_month_label(index),
            store=where,
            previous_customers=n,
            retained=kept[(index, where)],
            rate_pct=rate_pct(kept[(index, where)], n),
            complete=index < ends_in_window,
        )
        for (index, where), n in sorted(cohort.items())
        if index <= current and (lowest is None or index >= lowest)
    ]


# -- signups ---------------------------------------------------------------------------------------------


def signups(engine: Engine, store: str | None, since: datetime | None, now: datetime) -> list[SignupRow]:
    """New members per store per UTC day (members.joined_at is the sign-up's envelope time)."""
    day = utc_day(members.c.joined_at)
    stmt = (
        select(
            day.label("day"),
            members.c.store,
            func.count(),
            func.sum(case((members.c.marketing_email.is_(True), 1), else_=0)),
            func.sum(case((members.c.marketing_sms.is_(True), 1), else_=0)),
        )
        .where(*_window(members.c.joined_at, since, now))
        .group_by(day, members.c.store)
        .order_by(day, members.c.store)
    )
    if store is not None:
        stmt = stmt.where(members.c.store == store)
    with engine.connect() as conn:
        return [
            SignupRow(day=d, store=s, signups=int(n), marketing_email=int(e), marketing_sms=int(m))
            for d, s, n, e, m in conn.execute(stmt)
        ]


# -- fraud -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FraudThresholds:
    """The fraud signals' parameters (defaults in the module constants; see docs/reports.md)."""

    burst_signups: int = BURST_SIGNUPS
    burst_window: timedelta = BURST_WINDOW
    travel_window: timedelta = TRAVEL_WINDOW
    redemptions_per_day: int = REDEMPTIONS_PER_DAY


def bursts(times: Sequence[datetime], count: int, window: timedelta) -> list[tuple[int, int]]:
    """Index ranges ``[first, last]`` of ``times`` (sorted) where ``count`` fall within ``window``.

    Every run of ``count`` consecutive times spanning at most ``window`` is flagged; flagged runs that
    share a time merge into one burst.
    """
    found: list[tuple[int, int]] = []
    for i in range(len(times) - count + 1):
        j = i + count - 1
        if times[j] - times[i] <= window:
            if found and found[-1][1] >= i:
                found[-1] = (found[-1][0], j)
            else:
                found.append((i, j))
    return found


def _enrolment_bursts(
    engine: Engine, store: str | None, since: datetime | None, now: datetime, limits: FraudThresholds
) -> Iterator[FraudSignal]:
    stmt = (
        select(members.c.store, members.c.node, members.c.joined_at)
        .where(*_window(members.c.joined_at, since, now))
        .order_by(members.c.store, members.c.node, members.c.joined_at)
    )
    if store is not None:
        stmt = stmt.where(members.c.store == store)
    for (where, node), rows in itertools.groupby(_stream(engine, stmt), key=lambda r: (r.store, r.node)):
        times = [_utc(row.joined_at) for row in rows]
        for i, j in bursts(times, limits.burst_signups, limits.burst_window):
            minutes = (times[j] - times[i]) / timedelta(minutes=1)
            yield FraudSignal(
                kind="enrolment-burst",
                subject=f"{where}/{node}",
                stores=where,
                first_at=_iso(times[i]),
                last_at=_iso(times[j]),
                count=j - i + 1,
                detail=f"{j - i + 1} sign-ups in {minutes:.0f} min on one node",
            )


def _reenrolled_cards(
    engine: Engine, store: str | None, since: datetime | None, now: datetime
) -> Iterator[FraudSignal]:
    card = events.c.body["card_token"].as_string()
    member = events.c.body["member_token"].as_string()
    inner = (
        select(card.label("card"), member.label("member"), events.c.store, events.c.ts)
        .where(events.c.type == "signup", *_window(events.c.ts, since, now))
        .subquery()
    )
    stmt = select(inner).where(inner.c.card.is_not(None)).order_by(inner.c.card, inner.c.ts)
    for token, rows in itertools.groupby(_stream(engine, stmt), key=lambda r: r.card):
        seen = list(rows)
        who = {row.member for row in seen}
        stores = sorted({row.store for row in seen})
        if len(who) < 2 or (store is not None and store not in stores):
            continue
        yield FraudSignal(
            kind="card-reenrolled",
            subject=token,
            stores=",".join(stores),
            first_at=_iso(seen[0].ts),
            last_at=_iso(seen[-1].ts),
            count=len(who),
            detail=f"one card presented at sign-up for {len(who)} different members",
        )


def _store_hops(
    engine: Engine, store: str | None, since: datetime | None, now: datetime, limits: FraudThresholds
) -> Iterator[FraudSignal]:
    taps = select(
        events.c.body["token"].as_string().label("token"),
        events.c.ts.label("at"),
        events.c.store.label("store"),
    ).where(events.c.type == "identity", *_window(events.c.ts, since, now))
    bought = select(
        sales.c.customer_token.label("token"), sales.c.sold_at.label("at"), sales.c.store.label("store")
    ).where(sales.c.customer_token.is_not(None), *_window(sales.c.sold_at, since, now))
    both = union_all(taps, bought).subquery()
    stmt = select(both.c.token, both.c.at, both.c.store).order_by(both.c.token, both.c.at)
    for token, rows in itertools.groupby(_stream(engine, stmt), key=lambda r: r.token):
        hops: list[tuple[datetime, datetime, str, str]] = []
        previous: tuple[datetime, str] | None = None
        for row in rows:
            at = _utc(row.at)
            # consecutive uses suffice: two far-apart uses with a store change between them contain a
            # consecutive pair with a store change that is no further apart
            if previous is not None and previous[1] != row.store and at - previous[0] <= limits.travel_window:
                hops.append((previous[0], at, previous[1], row.store))
            previous = (at, row.store)
        stores = sorted({s for hop in hops for s in hop[2:]})
        if not hops or (store is not None and store not in stores):
            continue
        shortest = min(b - a for a, b, _, _ in hops) / timedelta(minutes=1)
        yield FraudSignal(
            kind="card-two-stores",
            subject=token,
            stores=",".join(stores),
            first_at=_iso(hops[0][0]),
            last_at=_iso(hops[-1][1]),
            count=len(hops),
            detail=f"{len(hops)} store change(s) within {limits.travel_window // timedelta(minutes=1)} min, "
            f"quickest {shortest:.0f} min",
        )


def _redemption_counts(
    engine: Engine, store: str | None, since: datetime | None, now: datetime, limits: FraudThresholds
) -> Iterator[FraudSignal]:
    tapped = events.c.body[("customer", "token")].as_string()
    offline = case((events.c.body["approval"].as_string() == "offline", 1), else_=0)
    each = (
        select(
            func.coalesce(cards.c.member_token, tapped).label("account"),
            utc_day(events.c.ts).label("day"),
            events.c.ts,
            events.c.store,
            offline.label("offline"),
        )
        .select_from(events.outerjoin(cards, cards.c.token == tapped))
        .where(events.c.type == "redemption", *_window(events.c.ts, since, now))
    )
    if store is not None:
        each = each.where(events.c.store == store)
    one = each.subquery()
    # per account, day and store first, so the outer level can list the stores once each
    per_store = (
        select(
            one.c.account,
            one.c.day,
            one.c.store,
            func.count().label("n"),
            func.min(one.c.ts).label("first"),
            func.max(one.c.ts).label("last"),
            func.sum(one.c.offline).label("offline"),
        )
        .group_by(one.c.account, one.c.day, one.c.store)
        .subquery()
    )
    total = func.sum(per_store.c.n)
    stmt = (
        select(
            per_store.c.account,
            per_store.c.day,
            total,
            func.min(per_store.c.first),
            func.max(per_store.c.last),
            func.sum(per_store.c.offline),
            func.aggregate_strings(per_store.c.store, ","),
        )
        .group_by(per_store.c.account, per_store.c.day)
        .having(total > limits.redemptions_per_day)
        .order_by(per_store.c.account, per_store.c.day)
    )
    with engine.connect() as conn:
        found = conn.execute(stmt).all()
    for account, day, n, first, last, n_offline, stores in found:
        yield FraudSignal(
            kind="redemptions",
            subject=account,
            stores=",".join(sorted(stores.split(","))),
            first_at=_iso(first),
            last_at=_iso(last),
            count=int(n),
            detail=f"{n} redemptions on {day} (more than {limits.redemptions_per_day}), "
            f"{n_offline} under the offline allowance",
        )


def fraud(
    engine: Engine,
    store: str | None,
    since: datetime | None,
    now: datetime,
    *,
    thresholds: FraudThresholds | None = None,
) -> list[FraudSignal]:
    """Every fraud signal in the window (module docstring), by kind then time.

    With ``store``: bursts and redemptions count only that store's events; re-enrolled cards and store
    hops are listed when they involve that store.
    """
    limits = thresholds or FraudThresholds()
    found: Iterable[FraudSignal] = itertools.chain(
        _enrolment_bursts(engine, store, since, now, limits),
        _reenrolled_cards(engine, store, since, now),
        _store_hops(engine, store, since, now, limits),
        _redemption_counts(engine, store, since, now, limits),
    )
    return sorted(found, key=lambda s: (s.kind, s.first_at, s.subject))


# -- the catalogue the command line and the dashboard use ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """A report's name, one-line description, row type and function."""

    name: str
    description: str
    row_type: type[msgspec.Struct]
    run: Callable[..., Sequence[msgspec.Struct]]


REPORTS: Final[dict[str, Report]] = {
    r.name: r
    for r in (
        Report("rfm", "RFM scores and segment per customer and currency", RfmRow, rfm),
        Report("winback", "dormant members to win back (tokens only)", WinbackRow, winback),
        Report("nps", "NPS per store and period (--period month|week|all)", NpsRow, nps),
        Report("repeat", "repeat-purchase rate per store and chain-wide", RepeatRow, repeat),
        Report("retention", "month-on-month retention per store and chain-wide", RetentionRow, retention),
        Report("signups", "new members per store per UTC day", SignupRow, signups),
        Report(
            "fraud",
            "fraud signals: enrolment bursts, re-enrolled cards, store hops, redemptions",
            FraudSignal,
            fraud,
        ),
    )
}


def stores(engine: Engine) -> list[str]:
    """The stores with a registered node, sorted (for the dashboard's store picker)."""
    with engine.connect() as conn:
        return list(conn.execute(select(nodes.c.store).distinct().order_by(nodes.c.store)).scalars())


def segment_counts(rows: Iterable[RfmRow]) -> dict[Segment, int]:
    """How many RFM rows fall in each segment, every segment present (zero included), in SEGMENTS order."""
    counted = Counter(row.segment for row in rows)
    return {name: counted.get(name, 0) for name in SEGMENTS}
