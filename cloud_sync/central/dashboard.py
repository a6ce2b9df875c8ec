"""The marketing dashboard (``kiosk-central dashboard``): the reports as three read-only pages.

Server-rendered Jinja templates (autoescaped) with charts drawn here as inline SVG: no JavaScript at all
and nothing from a CDN, so the Content-Security-Policy forbids scripts outright and lets in exactly one
``<style>`` element, by a per-response nonce. Read-only by construction: GET routes only, no session, no
cookies, no forms that change anything. No personal data: the ledger holds none, and tokens appear
truncated to their first 8 hex digits — enough to tell rows apart, not to look a customer up (the full
win-back list is ``kiosk-central report winback``, for the people allowed to act on it).

Views call ``cloud_sync.central.reports`` only (no SQL here), with the window taken from the query string:
``store`` (a store id, default all) and ``days`` (the window's length, default 90).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from flask import Flask, Response, abort, g, render_template, request, url_for
from markupsafe import Markup, escape
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from cloud_sync.central import reports
from cloud_sync.envelope import IDENT_RE

log = logging.getLogger(__name__)

DEFAULT_DAYS: Final = 90
DAY_CHOICES: Final = (7, 30, 90, 180, 365)
_TOKEN_RE: Final = re.compile(r"[0-9a-f]{64}\Z")
_CSP: Final = (
    "default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def short_token(value: str) -> str:
    """A 64-hex identity token cut to its first 8 digits; anything else (``store/node``) unchanged."""
    return value[:8] + "…" if _TOKEN_RE.match(value) else value


def money(minor: int, currency: str) -> str:
    """Minor units as an amount with the currency's own number of decimals (JPY 0, EUR 2, KWD 3)."""
    from babel.numbers import get_currency_precision

    places = get_currency_precision(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**places)
    amount = f"{whole}.{frac:0{places}d}" if places else str(whole)
    return f"{sign}{amount} {currency}"


def _num(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def bar_chart(
    items: Sequence[tuple[str, float]], *, title: str, domain: tuple[float, float] | None = None
) -> Markup:
    """Horizontal bars, one per ``(label, value)``, as an SVG element; negative values go left of zero.

    Every piece of text is escaped here, since the result is inserted into the page as markup.
    """
    width, label_w, value_w, row_h = 640, 170, 60, 26
    plot_w = width - label_w - value_w
    height = max(len(items), 1) * row_h + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    if not items:
        parts.append(f'<text x="{label_w}" y="20" class="empty">no data</text></svg>')
        return Markup("".join(parts))  # noqa: S704 - built from escaped text and numbers only
    values = [value for _, value in items]
    low, high = domain or (min(0.0, *values), max(0.0, *values))
    span = (high - low) or 1.0
    zero = label_w + plot_w * (0 - low) / span
    for i, (label, value) in enumerate(items):
        y = 4 + i * row_h
        end = label_w + plot_w * (min(max(value, low), high) - low) / span
        left, bar_w = min(zero, end), abs(end - zero)
        css = "bar neg" if value < 0 else "bar"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.1f}" class="label" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<rect x="{left:.1f}" y="{y + 3}" width="{bar_w:.1f}" height="{row_h - 8}" class="{css}">'
            f"<title>{escape(label)}: {_num(value)}</title></rect>"
            f'<text x="{width - value_w + 6}" y="{y + row_h / 2 + 4:.1f}" class="value">{_num(value)}</text>'
        )
    parts.append(f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="0" y2="{height}" class="axis"/></svg>')
    return Markup("".join(parts))  # noqa: S704 - built from escaped text and numbers only


def column_chart(items: Sequence[tuple[str, int]], *, title: str) -> Markup:
    """Vertical columns over time (one per ``(day, count)``), first and last day labelled, as SVG."""
    width, height, top, bottom, left = 640, 190, 14, 22, 34
    plot_w, plot_h = width - left - 4, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    if not items:
        parts.append(f'<text x="{left}" y="{top + 20}" class="empty">no data</text></svg>')
        return Markup("".join(parts))  # noqa: S704 - built from escaped text and numbers only
    peak = max(value for _, value in items) or 1
    step = plot_w / len(items)
    for i, (label, value) in enumerate(items):
        h = plot_h * value / peak
        parts.append(
            f'<rect x="{left + i * step + step * 0.1:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{max(step * 0.8, 1):.1f}" height="{h:.1f}" class="bar">'
            f"<title>{escape(label)}: {value}</title></rect>"
        )
    baseline = top + plot_h
    parts.append(
        f'<line x1="{left}" x2="{width - 4}" y1="{baseline}" y2="{baseline}" class="axis"/>'
        f'<text x="{left - 4}" y="{top + 4}" class="value" text-anchor="end">{peak}</text>'
        f'<text x="{left - 4}" y="{baseline}" class="value" text-anchor="end">0</text>'
        f'<text x="{left}" y="{height - 6}" class="label">{escape(items[0][0])}</text>'
        f'<text x="{width - 4}" y="{height - 6}" class="label" text-anchor="end">'
        f"{escape(items[-1][0])}</text>"
        "</svg>"
    )
    return Markup("".join(parts))  # noqa: S704 - built from escaped text and numbers only


@dataclass(frozen=True, slots=True)
class Window:
    """What the query string asked for: a store (or all) and the last ``days`` days up to ``now``."""

    store: str | None
    days: int
    since: datetime
    now: datetime

    def query(self) -> dict[str, Any]:
        """The query-string arguments that reproduce this window on another page."""
        return {"store": self.store, "days": self.days}


def _window(now: datetime) -> Window:
    store = request.args.get("store") or None
    if store is not None and not IDENT_RE.fullmatch(store):
        abort(400, "store: not a store id")
    raw_days = request.args.get("days", str(DEFAULT_DAYS))
    if not raw_days.isdigit() or int(raw_days) not in DAY_CHOICES:
        abort(400, f"days: one of {', '.join(map(str, DAY_CHOICES))}")
    days = int(raw_days)
    return Window(store, days, now - timedelta(days=days), now)


def _daily(rows: Sequence[reports.SignupRow], window: Window) -> list[tuple[str, int]]:
    """Sign-ups per day over the whole window, stores added up, days without any shown as 0."""
    totals: dict[str, int] = {}
    for row in rows:
        totals[row.day] = totals.get(row.day, 0) + row.signups
    first = window.since.date()
    last = (window.now - timedelta(microseconds=1)).date()
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return [(day.isoformat(), totals.get(day.isoformat(), 0)) for day in days]


def create_app(engine: Engine, *, clock: Callable[[], datetime] | None = None) -> Flask:
    """The dashboard for ``engine``'s ledger; ``clock`` gives "now" (tests fix it)."""
    app = Flask(__name__, template_folder="templates", static_folder=None)
    app.jinja_env.autoescape = True  # every template, whatever its name
    app.jinja_env.filters["short"] = short_token
    app.jinja_env.filters["money"] = money
    now_of = clock or (lambda: datetime.now(UTC))

    @app.before_request
    def _nonce() -> None:
        g.csp_nonce = secrets.token_urlsafe(18)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"csp_nonce": g.get("csp_nonce", ""), "day_choices": DAY_CHOICES}

    @app.after_request
    def _headers(response: Response) -> Response:
        nonce = g.get("csp_nonce") or secrets.token_urlsafe(18)
        response.headers["Content-Security-Policy"] = _CSP.format(nonce=nonce)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[str, int]:
        return render_template(
            "dashboard/error.html", title=exc.name, message=exc.description, window=None
        ), exc.code or 500

    @app.errorhandler(SQLAlchemyError)
    def _db_error(exc: SQLAlchemyError) -> tuple[str, int]:
        log.error("dashboard: database error: %s", str(exc).splitlines()[0])
        message = "The ledger database did not answer; try again shortly."
        return render_template(
            "dashboard/error.html", title="Database unavailable", message=message, window=None
        ), 503

    def page(template: str, window: Window, **values: Any) -> str:
        return render_template(
            f"dashboard/{template}",
            window=window,
            stores=reports.stores(engine),
            nav=[
                (url_for(endpoint, **window.query()), label, request.endpoint == endpoint)
                for endpoint, label in (
                    ("overview", "Overview"),
                    ("segments", "Segments"),
                    ("fraud", "Fraud"),
                )
            ],
            **values,
        )

    @app.get("/")
    def overview() -> str:
        window = _window(now_of())
        args = (engine, window.store, window.since, window.now)
        nps_rows = reports.nps(*args, period="all")
        rfm_rows = reports.rfm(*args)
        chain_nps = next((row for row in nps_rows if row.store in {reports.CHAIN, window.store}), None)
        return page(
            "overview.html",
            window,
            title="Overview",
            signups_chart=column_chart(
                _daily(reports.signups(*args), window), title="New members per day (UTC)"
            ),
            nps_chart=bar_chart(
                [(row.store, row.nps) for row in nps_rows if row.store != reports.CHAIN],
                title="NPS per store",
                domain=(-100, 100),
            ),
            nps=chain_nps,
            segments_chart=bar_chart(
                list(reports.segment_counts(rfm_rows).items()), title="Customers per RFM segment"
            ),
            repeat=reports.repeat(*args),
            retention=[row for row in reports.retention(*args) if row.store in {reports.CHAIN, window.store}],
            winback=len(reports.winback(engine, window.store, None, window.now)),
        )

    @app.get("/segments")
    def segments() -> str:
        window = _window(now_of())
        rows = reports.rfm(engine, window.store, window.since, window.now)
        counts = reports.segment_counts(rows)
        top: dict[str, list[reports.RfmRow]] = {name: [] for name in reports.SEGMENTS}
        for row in rows:  # rows come best-scored first
            if len(top[row.segment]) < 10:
                top[row.segment].append(row)
        return page(
            "segments.html",
            window,
            title="RFM segments",
            chart=bar_chart(list(counts.items()), title="Customers per RFM segment"),
            counts=counts,
            top=top,
            dormant_days=reports.DORMANT_DAYS,
        )

    @app.get("/fraud")
    def fraud() -> str:
        window = _window(now_of())
        signals = reports.fraud(engine, window.store, window.since, window.now)
        kinds: dict[str, int] = dict.fromkeys(reports.FRAUD_KINDS, 0)
        for signal in signals:
            kinds[signal.kind] += 1
        return page(
            "fraud.html",
            window,
            title="Fraud signals",
            chart=bar_chart(list(kinds.items()), title="Fraud signals by kind"),
            signals=signals,
            limits=reports.FraudThresholds(),
        )

    return app
