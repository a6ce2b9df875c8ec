"""``kiosk-central``: the central receiver's command line.

Every command reads ``central.toml`` (``--config``, else /etc/kiosk-central/central.toml if present) and
the ``KIOSK_CENTRAL_*`` environment; ``--db`` / ``--broker`` override both. Exit codes: 0 success, 1 the
operation failed (database unreachable, message invalid), 2 bad usage or configuration.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import click
import msgspec

from cloud_sync.envelope import decode_public_key, verify
from cloud_sync.errors import EnvelopeError
from cloud_sync.messages import validate_body
from cloud_sync.settings import ConfigError


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"kiosk-central: {message}", err=True)
    sys.exit(code)


def _settings(
    ctx: click.Context, *, db: str | None = None, broker: str | None = None, vault: str | None = None
) -> Any:
    from cloud_sync.central.config import load_central_settings

    overrides = {}
    if db:
        overrides["KIOSK_CENTRAL_DB__URL"] = db
    if broker:
        overrides["KIOSK_CENTRAL_MQTT__URL"] = broker
    if vault:
        overrides["KIOSK_CENTRAL_VAULT__URL"] = vault
    root = ctx.find_root().obj
    try:
        return load_central_settings(
            root.get("config") if isinstance(root, dict) else None, {**os.environ, **overrides}
        )
    except ConfigError as exc:
        _fail(str(exc), 2)


def _engine(settings: Any) -> Any:
    from cloud_sync.central.db import DatabaseUnavailable, make_engine, migrate

    engine = make_engine(settings.db_url)
    try:
        migrate(engine)
    except DatabaseUnavailable as exc:
        _fail(f"database: {exc}", 1)
    return engine


_DB_OPTION = click.option(
    "--db", metavar="URL", help="Ledger database URL (overrides KIOSK_CENTRAL_DB__URL)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="central.toml (default /etc/kiosk-central/central.toml if it exists).",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Central receiver for the chain's kiosk-edge nodes."""
    ctx.obj = {"config": config}
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its per-plugin INFO lines at every start


@cli.command("run")
@_DB_OPTION
@click.option("--broker", metavar="URL", help="mqtt:// or mqtts:// URL (overrides KIOSK_CENTRAL_MQTT__URL).")
@click.pass_context
def run_cmd(ctx: click.Context, db: str | None, broker: str | None) -> None:
    """Ingest the nodes' events until SIGTERM (one worker; run several to scale out)."""
    from cloud_sync.central.db import DatabaseUnavailable
    from cloud_sync.central.service import run
    from cloud_sync.central.vault import VaultError
    from cloud_sync.central.vault_keys import VaultKeyError

    settings = _settings(ctx, db=db, broker=broker)
    logging.basicConfig(level=settings.log.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sys.exit(run(settings))
    except DatabaseUnavailable as exc:
        _fail(f"database: {exc}", 1)
    except (VaultError, VaultKeyError) as exc:
        _fail(f"vault: {exc}", 2)
    except OSError as exc:  # e.g. the metrics port is taken
        _fail(str(exc), 1)


@cli.group("nodes")
def nodes_group() -> None:
    """The node registry: only registered nodes' signed messages are accepted."""


@nodes_group.command("add")
@_DB_OPTION
@click.option("--replace", is_flag=True, help="Replace the key of an already registered node.")
@click.argument("store")
@click.argument("node")
@click.argument("pubkey")
@click.pass_context
def nodes_add(  # noqa: PLR0917 - one parameter per click option
    ctx: click.Context, db: str | None, replace: bool, store: str, node: str, pubkey: str
) -> None:
    """Register NODE of STORE with PUBKEY (as printed by 'kiosk-edge keys show')."""
    from cloud_sync.central.registry import RegistryError, add_node

    engine = _engine(_settings(ctx, db=db))
    try:
        changed = add_node(engine, store, node, pubkey, replace=replace)
    except RegistryError as exc:
        _fail(str(exc), 2)
    click.echo(f"{store}/{node}: {'registered' if changed else 'already registered with this key'}")


@nodes_group.command("remove")
@_DB_OPTION
@click.argument("store")
@click.argument("node")
@click.pass_context
def nodes_remove(ctx: click.Context, db: str | None, store: str, node: str) -> None:
    """Unregister NODE of STORE; its further messages are dead-lettered (unknown node)."""
    from cloud_sync.central.registry import RegistryError, remove_node

    engine = _engine(_settings(ctx, db=db))
    try:
        removed = remove_node(engine, store, node)
    except RegistryError as exc:
        _fail(str(exc), 2)
    if not removed:
        _fail(f"{store}/{node} is not registered", 1)
    click.echo(f"{store}/{node}: removed")


@nodes_group.command("list")
@_DB_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.pass_context
def nodes_list(ctx: click.Context, db: str | None, as_json: bool) -> None:
    """List the registered nodes."""
    from cloud_sync.central.registry import list_nodes

    entries = list_nodes(_engine(_settings(ctx, db=db)))
    if as_json:
        rows = [
            {"store": e.store, "node": e.node, "public_key": e.public_key, "added_at": e.added_at.isoformat()}
            for e in entries
        ]
        click.echo(json.dumps(rows))
        return
    if not entries:
        click.echo("no nodes registered (add one with: kiosk-central nodes add STORE NODE PUBKEY)")
    for e in entries:
        click.echo(f"{e.store}\t{e.node}\t{e.public_key}\t{e.added_at:%Y-%m-%d %H:%M}")


@cli.command("stats")
@_DB_OPTION
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def stats_cmd(ctx: click.Context, db: str | None, fmt: str) -> None:
    """Events ingested per type, duplicates absorbed, dead letters by reason, per-node seq and gaps."""
    from cloud_sync.central.stats import as_table, collect

    stats = collect(_engine(_settings(ctx, db=db)))
    click.echo(msgspec.json.encode(stats).decode() if fmt == "json" else as_table(stats))


@cli.command("verify")
@click.option("--pubkey", required=True, help="The node's key as printed by 'kiosk-edge keys show'.")
@click.argument("message", type=click.File("rb"), default="-")
def verify_cmd(pubkey: str, message: BinaryIO) -> None:
    """Verify one envelope (file or stdin): structure, body schema and signature. Exit 1 if invalid."""
    try:
        key = decode_public_key(pubkey)
    except EnvelopeError as exc:
        _fail(f"--pubkey: {exc}", 2)
    payload = message.read()
    try:
        doc = verify(payload, key)
        validate_body(doc["schema"].removeprefix("retail.v1."), doc["body"])
    except EnvelopeError as exc:
        click.echo(f"invalid: {exc}", err=True)
        sys.exit(1)
    click.echo(
        json.dumps(
            {
                "valid": True,
                "schema": doc["schema"],
                "id": doc["id"],
                "store": doc["store"],
                "node": doc["node"],
                "seq": doc["seq"],
            }
        )
    )


# Command groups in their own modules, registered last (they import the helpers above).
from cloud_sync.central.loyalty_cli import cards_group, deadletters_group, loyalty_group  # noqa: E402
from cloud_sync.central.report_cli import dashboard_cmd, report_cmd  # noqa: E402
from cloud_sync.central.vault_cli import privacy_group, vault_group  # noqa: E402

for _command in (
    report_cmd,
    dashboard_cmd,
    vault_group,
    privacy_group,
    loyalty_group,
    cards_group,
    deadletters_group,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli.main(standalone_mode=True)
