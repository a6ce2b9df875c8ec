"""``kiosk-central loyalty …`` and ``cards …``: the programme's daily maintenance and card lifecycle."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

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
    service = _service(ctx, db)
    expired = service.expire()
    moved = service.review_tiers()
    click.echo(json.dumps({"expired_accounts": expired, "tiers_lowered": moved}))


@click.group("cards")
def cards_group() -> None:
    """Cards (identity tokens) and the members they belong to."""


def _token(text: str) -> str:
    from cloud_sync.central_cli import _fail

    if not _TOKEN.fullmatch(text):
        _fail("TOKEN must be a card's 64-hex identity token (see 'cards list' or 'cards recent')", 2)
    return text


def _service(ctx: click.Context, db: str | None) -> Any:
    from cloud_sync.central.members import MemberService
    from cloud_sync.central_cli import _engine, _settings

    settings = _settings(ctx, db=db)
    return MemberService(_engine(settings), settings.loyalty)


def _member_token(ctx: click.Context, code: str, keys: dict[str, Any]) -> str:
    """The member code's token, from the vault (only it links codes to the ledger's tokens)."""
    from cloud_sync.central.vault_cli import _code, _opened, _operation_errors, _settings

    settings = _settings(ctx, db=keys["db"], vault=keys["vault_url"])
    with _opened(settings, keys["private_key_file"], keys["data_key_file"]) as vault:
        try:
            return str(vault.member_token(_code(code)))
        except Exception as exc:
            _operation_errors(exc)


def _vault_options(func: Any) -> Any:
    from cloud_sync.central.vault_cli import _vault_options as options

    return options(func)


@cards_group.command("list")
@_vault_options
@click.argument("code")
@click.pass_context
def list_cmd(ctx: click.Context, /, code: str, **keys: Any) -> None:
    """The cards of the member with member code CODE (JSON lines)."""
    token = _member_token(ctx, code, keys)
    for card in _service(ctx, keys["db"]).cards_of(token):
        click.echo(json.dumps(card))


@cards_group.command("recent")
@click.option("--db", metavar="URL", help="Ledger database URL (overrides KIOSK_CENTRAL_DB__URL).")
@click.option("--store", help="Only cards last tapped in this store.")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.pass_context
def recent_cmd(ctx: click.Context, db: str | None, store: str | None, limit: int) -> None:
    """Cards tapped recently that belong to nobody: tap a replacement card at a till, then find it here."""
    for card in _service(ctx, db).recent_unbound(store, limit):
        click.echo(json.dumps(card))


@cards_group.command("bind")
@_vault_options
@click.argument("code")
@click.argument("token")
@click.pass_context
def bind_cmd(ctx: click.Context, /, code: str, token: str, **keys: Any) -> None:
    """Give the member with CODE the card TOKEN (a replacement); what the card earned moves to them."""
    from cloud_sync.central_cli import _fail

    card = _token(token)
    member = _member_token(ctx, code, keys)
    if not _service(ctx, keys["db"]).bind_card(member, card):
        _fail("that card belongs to another member", 1)
    click.echo("bound")


@cards_group.command("block")
@click.option("--db", metavar="URL", help="Ledger database URL (overrides KIOSK_CENTRAL_DB__URL).")
@click.argument("token")
@click.pass_context
def block_cmd(ctx: click.Context, db: str | None, token: str) -> None:
    """Block a lost card: its redemptions are declined, its points stay with the member."""
    from cloud_sync.central_cli import _fail

    if not _service(ctx, db).block_card(_token(token)):
        _fail("no such card", 1)
    click.echo("blocked")


@cards_group.command("unblock")
@click.option("--db", metavar="URL", help="Ledger database URL (overrides KIOSK_CENTRAL_DB__URL).")
@click.argument("token")
@click.pass_context
def unblock_cmd(ctx: click.Context, db: str | None, token: str) -> None:
    """Unblock a card that was found again."""
    from cloud_sync.central_cli import _fail

    if not _service(ctx, db).block_card(_token(token), blocked=False):
        _fail("no such card", 1)
    click.echo("unblocked")


@click.group("deadletters")
def deadletters_group() -> None:
    """Messages that could not be ingested, kept with their bytes: list them, replay them."""


@deadletters_group.command("list")
@click.option("--db", metavar="URL", help="Ledger database URL (overrides KIOSK_CENTRAL_DB__URL).")
@click.option("--reason", help="Only this reason, e.g. unknown-node.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.pass_context
def deadletters_list(ctx: click.Context, db: str | None, reason: str | None, limit: int) -> None:
    """The oldest dead letters first (JSON lines: id, received_at, topic, reason, detail, size)."""
    from cloud_sync.central.deadletters import list_letters
    from cloud_sync.central_cli import _engine, _settings

    for letter in list_letters(_engine(_settings(ctx, db=db)), reason=reason, limit=limit):
        click.echo(
            json.dumps(
                {
                    "id": letter.id,
                    "received_at": letter.received_at.isoformat(),
                    "topic": letter.topic,
                    "reason": letter.reason,
                    "detail": letter.detail,
                    "size": letter.size,
                }
            )
        )


@deadletters_group.command("replay")
@click.option("--db", metavar="URL", help="Ledger database URL (overrides KIOSK_CENTRAL_DB__URL).")
@click.option("--reason", help="Replay every letter of this reason (e.g. after 'nodes add': unknown-node).")
@click.argument("ids", nargs=-1, type=int)
@click.pass_context
def deadletters_replay(ctx: click.Context, db: str | None, reason: str | None, ids: tuple[int, ...]) -> None:
    """Ingest dead letters again (by id, or all of --reason); those that go in leave the table. Exit 1 if
    any failed again."""
    from cloud_sync.central.deadletters import replay
    from cloud_sync.central.ingest import Ingestor
    from cloud_sync.central_cli import _engine, _fail, _settings

    if not ids and reason is None:
        _fail("give letter ids, or --reason", 2)
    settings = _settings(ctx, db=db)
    engine = _engine(settings)
    ingestor = Ingestor(engine, settings.mqtt.topic_root, program=settings.loyalty)
    failed = 0
    for result in replay(engine, ingestor, list(ids) or None, reason=reason):
        failed += result.status == "dead"
        click.echo(json.dumps({"id": result.id, "status": result.status, "reason": result.reason}))
    if failed:
        sys.exit(1)
