"""``kiosk-central report NAME`` and ``kiosk-central dashboard``: the marketing reports (docs/reports.md).

Kept out of ``central_cli.py`` so the reports, their formats and the dashboard grow without touching the
receiver's own commands; ``central_cli`` only registers the two commands. Both read the same settings as
every ``kiosk-central`` command (``--config`` of the group, ``KIOSK_CENTRAL_*``, ``--db``).

Exit codes: 0 success, 1 the database is unreachable, 2 bad usage — always one line, never a usage dump,
so a cron job's mail says what was wrong.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import logging
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click
import msgspec

from cloud_sync.envelope import IDENT_RE

if TYPE_CHECKING:
    from sqlalchemy import Engine

FORMATS = ("table", "csv", "json")
PERIODS = ("month", "week", "all")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_DAYS_RE = re.compile(r"([0-9]{1,5})d\Z")
#: A spreadsheet treats a cell starting with one of these as a formula (CSV injection, OWASP).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"kiosk-central: {message}", err=True)
    sys.exit(code)


class _OneLineErrors(click.Command):
    """A command whose usage errors are one line with exit code 2, like every other bad input here."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse as click does; turn a usage error into one line on stderr and exit code 2."""
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _fail(exc.format_message(), 2)


def _engine(ctx: click.Context, db: str | None) -> tuple[Any, Engine]:
    """Settings (group ``--config``, environment, ``--db``) and a migrated engine, as ``central_cli`` does."""
    from cloud_sync.central.config import load_central_settings
    from cloud_sync.central.db import DatabaseUnavailable, make_engine, migrate
    from cloud_sync.settings import ConfigError

    root = ctx.find_root().obj
    config = root.get("config") if isinstance(root, dict) else None
    environ = {**os.environ, **({"KIOSK_CENTRAL_DB__URL": db} if db else {})}
    try:
        settings = load_central_settings(config, environ)
    except ConfigError as exc:
        _fail(str(exc), 2)
    engine = make_engine(settings.db_url)
    try:
        migrate(engine)
    except DatabaseUnavailable as exc:
        _fail(f"database: {exc}", 1)
    return settings, engine


def parse_until(text: str | None, now: datetime) -> datetime:
    """``--until``: a date (its 00:00 UTC, exclusive), default ``now``; ValueError says what is wrong."""
    if text is None:
        return now
    if not _DATE_RE.match(text):
        raise ValueError(f"--until {text!r}: expected a date YYYY-MM-DD")
    try:
        day = datetime.fromisoformat(text).date()
    except ValueError:
        raise ValueError(f"--until {text!r}: not a calendar date") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def parse_since(text: str | None, until: datetime) -> datetime | None:
    """``--since``: a date (its 00:00 UTC) or ``Nd`` (N days before ``until``); not after ``until``."""
    if text is None:
        return None
    days = _DAYS_RE.match(text)
    if days:
        since = until - timedelta(days=int(days.group(1)))
    elif _DATE_RE.match(text):
        try:
            day = datetime.fromisoformat(text).date()
        except ValueError:
            raise ValueError(f"--since {text!r}: not a calendar date") from None
        since = datetime(day.year, day.month, day.day, tzinfo=UTC)
    else:
        raise ValueError(f"--since {text!r}: expected a date YYYY-MM-DD or a number of days such as 30d")
    if since > until:
        raise ValueError(f"--since {text!r} is after the end of the window")
    return since


def _fields(row_type: type[msgspec.Struct]) -> tuple[str, ...]:
    return row_type.__struct_fields__


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def csv_cell(value: Any) -> str:
    """A CSV cell: text that a spreadsheet would run as a formula gets a leading apostrophe.

    Only text is guarded; numbers are ours (a negative NPS stays a number a spreadsheet can sum).
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return _text(value)


def write_csv(rows: Sequence[msgspec.Struct], row_type: type[msgspec.Struct], out: IO[str]) -> None:
    """A header line of field names, then one line per row (RFC 4180 quoting by the csv module)."""
    names = _fields(row_type)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([csv_cell(getattr(row, name)) for name in names])


def as_table(rows: Sequence[msgspec.Struct], row_type: type[msgspec.Struct]) -> str:
    """Aligned columns for a terminal (numbers right-aligned), ``(no rows)`` when empty."""
    names = _fields(row_type)
    if not rows:
        return "  ".join(names) + "\n(no rows)"
    cells = [[_text(getattr(row, name)) or "-" for name in names] for row in rows]
    numeric = [
        all(
            isinstance(getattr(row, name), int | float) and not isinstance(getattr(row, name), bool)
            for row in rows
        )
        for name in names
    ]
    widths = [max(len(name), *(len(line[i]) for line in cells)) for i, name in enumerate(names)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(names), *(line(values) for values in cells)])


def render(rows: Sequence[msgspec.Struct], row_type: type[msgspec.Struct], fmt: str) -> str:
    """The report in ``fmt`` (table, csv or json); only CSV ends with its line end (CRLF, RFC 4180)."""
    if fmt == "json":
        return msgspec.json.encode(list(rows)).decode()
    if fmt == "csv":
        buffer = io.StringIO()
        write_csv(rows, row_type, buffer)
        return buffer.getvalue()
    return as_table(rows, row_type)


@click.command("report", cls=_OneLineErrors)
@click.argument("name")
@click.option("--store", metavar="STORE", help="Only this store (see docs/reports.md for each report).")
@click.option("--since", metavar="YYYY-MM-DD|Nd", help="Start of the window (00:00 UTC), or N days back.")
@click.option("--until", metavar="YYYY-MM-DD", help="End of the window, exclusive (00:00 UTC; default now).")
@click.option(
    "--period", metavar="month|week|all", help="nps only: one row per month (default), week or all."
)
@click.option("--format", "fmt", default="table", metavar="table|csv|json", help="Output format.")
@click.option("--db", metavar="URL", help="Ledger database URL (overrides KIOSK_CENTRAL_DB__URL).")
@click.pass_context
def report_cmd(  # noqa: PLR0917 - one parameter per click option
    ctx: click.Context,
    name: str,
    store: str | None,
    since: str | None,
    until: str | None,
    period: str | None,
    fmt: str,
    db: str | None,
) -> None:
    """Print report NAME: rfm, winback, nps, repeat, retention, signups or fraud (docs/reports.md)."""
    from cloud_sync.central.reports import REPORTS

    report = REPORTS.get(name)
    if report is None:
        _fail(f"unknown report {name!r}; one of: {', '.join(REPORTS)}", 2)
    if fmt not in FORMATS:
        _fail(f"--format {fmt!r}: one of {', '.join(FORMATS)}", 2)
    if store is not None and not IDENT_RE.fullmatch(store):
        _fail(f"--store {store!r}: not a store id (letters, digits, '.', '_', '-')", 2)
    options: dict[str, Any] = {}
    if period is not None:
        if name != "nps":
            _fail("--period applies to the nps report only", 2)
        if period not in PERIODS:
            _fail(f"--period {period!r}: one of {', '.join(PERIODS)}", 2)
        options["period"] = period
    try:
        now = parse_until(until, datetime.now(UTC))
        start = parse_since(since, now)
    except ValueError as exc:
        _fail(str(exc), 2)
    _settings, engine = _engine(ctx, db)
    try:
        rows = report.run(engine, store, start, now, **options)
    finally:
        engine.dispose()
    click.echo(render(rows, report.row_type, fmt), nl=fmt != "csv")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command("dashboard", cls=_OneLineErrors)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8090, show_default=True)
@click.option("--db", metavar="URL", help="Ledger database URL (overrides KIOSK_CENTRAL_DB__URL).")
@click.pass_context
def dashboard_cmd(ctx: click.Context, host: str, port: int, db: str | None) -> None:
    """Serve the read-only marketing dashboard (waitress) until Ctrl-C."""
    import waitress

    from cloud_sync.central.dashboard import create_app

    settings, engine = _engine(ctx, db)
    logging.basicConfig(level=settings.log.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not _is_loopback(host):
        # no login of its own: tokens are truncated and nothing is personal, but the figures are the
        # chain's business; an authenticating reverse proxy belongs in front of it
        click.echo(
            f"kiosk-central: warning: the dashboard has no authentication and listens on {host}; "
            "put an authenticating proxy in front of it",
            err=True,
        )
    click.echo(f"dashboard on http://{host}:{port}/", err=True)
    try:
        waitress.serve(create_app(engine), host=host, port=port, threads=4, ident="kiosk-central")
    except OSError as exc:  # the port is taken, the address is not ours
        _fail(f"dashboard: {exc}", 1)
    finally:
        engine.dispose()
