"""``kiosk-central loyalty …`` and ``cards …``: the programme's daily maintenance and card lifecycle."""

from __future__ import annotations

import json
import re

import click

_TOKEN = re.compile(r"^[0-9a-f]{64}\Z")


@click.group("loyalty")
def loyalty_group() -> None:
    """The loyalty programme ([loyalty] in central.toml; docs/loyalty.md)."""


@loyalty_group.command("maintain")
@click.option("--db", metavar="URL", help="Ledger database URL (overrides KIOSK_CENTRAL_DB__URL).")
@click.pass_context
def maintain_cmd(ctx: click.Context, db: str | None) -> None:
    """Daily: expire idle balances and review tiers a year old (safe to run more than once)."""
    from cloud_sync.central.members import MemberService
    from cloud_sync.central_cli import _engine, _settings

    settings = _settings(ctx, db=db)
    service = MemberService(_engine(settings), settings.loyalty)
    expired = service.expire()
    moved = service.review_tiers()
    click.echo(json.dumps({"expired_accounts": expired, "tiers_lowered": moved}))


@click.group("cards")
def cards_group() -> None:
    """Cards (identity tokens) and the members they belong to."""


@cards_group.command("block")
@click.option("--db", metavar="URL", help="Ledger database URL (overrides KIOSK_CENTRAL_DB__URL).")
@click.argument("token")
@click.pass_context
def block_cmd(ctx: click.Context, db: str | None, token: str) -> None:
    """Block a lost card by its token (see 'privacy export'): redemptions declined, points kept."""
    from cloud_sync.central.members import MemberService
    from cloud_sync.central_cli import _engine, _fail, _settings

    if not _TOKEN.fullmatch(token):
        _fail("TOKEN must be the card's 64-hex identity token", 2)
    settings = _settings(ctx, db=db)
    if not MemberService(_engine(settings), settings.loyalty).block_card(token):
        _fail("no such card", 1)
    click.echo("blocked")
