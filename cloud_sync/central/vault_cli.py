"""``kiosk-central vault …`` and ``kiosk-central privacy …``: the PII vault's commands (docs/privacy.md).

Registered on the main ``kiosk-central`` group by ``cloud_sync.central_cli``. The same exit codes as every
``kiosk-central`` command: 0 success, 1 the operation failed (database unreachable, unknown member, a node
not told of an erasure), 2 bad usage or configuration (including a missing or wrong key).

Key locations: ``--private-key-file`` / ``--data-key-file``, else ``[vault] private_key_file`` /
``data_key_file`` once the settings have them, else ``KIOSK_VAULT_PRIVATE_KEY_FILE`` /
``KIOSK_VAULT_DATA_KEY_FILE`` (or the data key itself in ``KIOSK_VAULT_DATA_KEY``), else ``vault.key`` and
``vault-data.key`` in the data directory.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from cloud_sync.codes import normalize_member_code

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"kiosk-central: {message}", err=True)
    sys.exit(code)


def _settings(
    ctx: click.Context, *, db: str | None = None, broker: str | None = None, vault: str | None = None
) -> Any:
    from cloud_sync.central_cli import _settings as load

    settings = load(ctx, db=db, broker=broker, vault=vault)
    logging.basicConfig(level=settings.log.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return settings


def _code(text: str) -> str:
    code = normalize_member_code(text)
    if code is None:
        _fail(f"{text!r} is not a member code (M + 10 digits, with a correct check digit)", 2)
    return code


_db_option = click.option(
    "--db", metavar="URL", help="Ledger database URL (overrides KIOSK_CENTRAL_DB__URL)."
)
_vault_option = click.option(
    "--vault", "vault_url", metavar="URL", help="Vault database URL (overrides KIOSK_CENTRAL_VAULT__URL)."
)
_private_option = click.option(
    "--private-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The vault's X25519 private key (default: KIOSK_VAULT_PRIVATE_KEY_FILE, DATA_DIR/vault.key).",
)
_data_option = click.option(
    "--data-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The AES-256 data key ring (default: KIOSK_VAULT_DATA_KEY_FILE or KIOSK_VAULT_DATA_KEY, "
    "DATA_DIR/vault-data.key).",
)


def _vault_options(func: F) -> F:
    for option in (_data_option, _private_option, _vault_option, _db_option):
        func = option(func)
    return func


@contextmanager
def _opened(settings: Any, private_key_file: Path | None, data_key_file: Path | None) -> Iterator[Any]:
    """The ledger engine and the vault, closed afterwards; configuration and database errors exit."""
    from cloud_sync.central.db import DatabaseUnavailable, make_engine, migrate
    from cloud_sync.central.vault import VaultError, open_vault
    from cloud_sync.central.vault_keys import VaultKeyError

    ledger = make_engine(settings.db_url)
    vault = None
    try:
        try:
            migrate(ledger)
            vault = open_vault(
                settings, ledger, private_key_file=private_key_file, data_key_file=data_key_file
            )
        except VaultKeyError as exc:
            _fail(f"vault keys: {exc}", 2)
        except DatabaseUnavailable as exc:
            _fail(f"database: {exc}", 1)
        except VaultError as exc:
            _fail(str(exc), 2)
        yield vault
    finally:
        if vault is not None:
            vault.close()
        ledger.dispose()


def _operation_errors(exc: Exception) -> NoReturn:
    """Map an error during a vault operation to the exit code."""
    from sqlalchemy.exc import SQLAlchemyError

    from cloud_sync.central.vault import MemberErased, UnknownMember
    from cloud_sync.central.vault_keys import VaultKeyError

    if isinstance(exc, UnknownMember | MemberErased):
        _fail(str(exc), 1)
    if isinstance(exc, VaultKeyError):
        _fail(f"vault keys: {exc}", 2)
    if isinstance(exc, SQLAlchemyError):
        _fail(f"database: {exc.__class__.__name__}: {str(exc).splitlines()[0]}", 1)
    raise exc


# -- kiosk-central vault ------------------------------------------------------------------------------------


@click.group("vault")
def vault_group() -> None:
    """The PII vault: its keys and keeping it in step with the ledger."""


@vault_group.command("keygen")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for vault.key (0600), vault.pub and, if absent, vault-data.key (0600).",
)
def keygen_cmd(out: Path) -> None:
    """Create the vault's key pair; prints the line for the nodes' [identity] section.

    Refuses to overwrite an existing vault.key (data sealed to it would become unreadable).
    """
    from cloud_sync.central.vault_keys import VaultKeyError, keygen

    try:
        keys = keygen(out)
    except VaultKeyError as exc:
        _fail(str(exc), 1)
    except OSError as exc:
        _fail(f"{out}: {exc.strerror or exc}", 1)
    click.echo(f"wrote {keys.private_key_file} (keep it secret) and {keys.public_key_file}", err=True)
    if keys.data_key_file is not None:
        click.echo(
            f"wrote {keys.data_key_file} (the data key: keep it apart from database backups)", err=True
        )
    click.echo(
        f"vault key id {keys.vault_key}; put this line in [identity] of every node's edge.toml:", err=True
    )
    click.echo(keys.node_line)


@vault_group.command("new-data-key")
def new_data_key_cmd() -> None:
    """Print a fresh data key line (for KIOSK_VAULT_DATA_KEY, then 'vault rotate --adopt')."""
    from cloud_sync.central.vault_keys import DataKeyring, new_data_key

    click.echo(DataKeyring([new_data_key()]).text(), nl=False)


@vault_group.command("rotate")
@_vault_options
@click.option(
    "--adopt", is_flag=True, help="Make the key ring's first key current instead of generating one."
)
@click.option(
    "--keep-old-keys", is_flag=True, help="Leave the old keys in the key file (more hosts to update)."
)
@click.pass_context
def rotate_cmd(  # noqa: PLR0917 - one parameter per click option
    ctx: click.Context,
    db: str | None,
    vault_url: str | None,
    private_key_file: Path | None,
    data_key_file: Path | None,
    adopt: bool,
    keep_old_keys: bool,
) -> None:
    """Re-encrypt every record under a new data key, then drop the old key from the key file."""
    from cloud_sync.central.vault import resolve_key_files

    settings = _settings(ctx, db=db, vault=vault_url)
    _private, key_file, _inline = resolve_key_files(
        settings, private_key_file=private_key_file, data_key_file=data_key_file
    )
    with _opened(settings, private_key_file, data_key_file) as vault:
        try:
            result = vault.rotate(key_file, adopt=adopt, keep_old=keep_old_keys)
        except Exception as exc:
            _operation_errors(exc)
    click.echo(
        json.dumps(
            {
                "data_key_id": result.data_key_id,
                "re_encrypted": result.re_encrypted,
                "retired": result.retired,
            }
        )
    )
    if key_file is None:
        click.echo("remove the old key from KIOSK_VAULT_DATA_KEY now; it is no longer needed", err=True)


@vault_group.command("sync")
@_vault_options
@click.option("--retry-failed", is_flag=True, help="Try again the sign-ups that could not be opened before.")
@click.pass_context
def sync_cmd(  # noqa: PLR0917 - one parameter per click option
    ctx: click.Context,
    db: str | None,
    vault_url: str | None,
    private_key_file: Path | None,
    data_key_file: Path | None,
    retry_failed: bool,
) -> None:
    """Absorb the sign-ups the vault missed and re-apply erasures after a restore (idempotent)."""
    settings = _settings(ctx, db=db, vault=vault_url)
    with _opened(settings, private_key_file, data_key_file) as vault:
        try:
            report = vault.catch_up(retry_failed=retry_failed)
        except Exception as exc:
            _operation_errors(exc)
    click.echo(json.dumps(report.as_dict()))


# -- kiosk-central privacy ----------------------------------------------------------------------------------


@click.group("privacy")
def privacy_group() -> None:
    """Data subjects' rights: export (access), erase (erasure), and consent-honouring contact lists."""


@privacy_group.command("export")
@_vault_options
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the JSON to this file (created 0600) instead of standard output.",
)
@click.argument("code")
@click.pass_context
def export_cmd(  # noqa: PLR0917 - one parameter per click option
    ctx: click.Context,
    db: str | None,
    vault_url: str | None,
    private_key_file: Path | None,
    data_key_file: Path | None,
    output: Path | None,
    code: str,
) -> None:
    """Everything held on member CODE, as one JSON document (docs/privacy.md describes it)."""
    member_code = _code(code)
    settings = _settings(ctx, db=db, vault=vault_url)
    with _opened(settings, private_key_file, data_key_file) as vault:
        try:
            document = vault.export(member_code)
        except Exception as exc:
            _operation_errors(exc)
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        _fail(f"{output}: {exc.strerror or exc}", 1)
    click.echo(f"wrote {output}", err=True)


@privacy_group.command("erase")
@_vault_options
@click.option("--broker", metavar="URL", help="mqtt:// or mqtts:// URL (overrides KIOSK_CENTRAL_MQTT__URL).")
@click.option(
    "--timeout",
    type=click.FloatRange(0.5, 300.0),
    default=10.0,
    show_default=True,
    help="Seconds for the broker.",
)
@click.argument("code")
@click.pass_context
def erase_cmd(  # noqa: PLR0917 - one parameter per click option
    ctx: click.Context,
    db: str | None,
    vault_url: str | None,
    private_key_file: Path | None,
    data_key_file: Path | None,
    broker: str | None,
    timeout: float,
    code: str,
) -> None:
    """Erase member CODE: personal data deleted, sealed copies scrubbed, every node told to forget them.

    Sales and points stay, under the pseudonymous token. Exit 1 if a node could not be told (the erasure
    itself is complete); running it again tells the nodes again.
    """
    from cloud_sync.central.registry import list_nodes
    from cloud_sync.central.vault_notify import DELIVERED, erase_commands, send_erase

    member_code = _code(code)
    settings = _settings(ctx, db=db, broker=broker, vault=vault_url)
    with _opened(settings, private_key_file, data_key_file) as vault:
        try:
            erasure = vault.erase(member_code)
            targets = [(n.store, n.node) for n in list_nodes(vault.ledger)]
        except Exception as exc:
            _operation_errors(exc)
        outcomes = send_erase(
            settings.mqtt, targets, erase_commands(erasure.member_token, erasure.tokens), timeout=timeout
        )
        try:
            vault.record_notices(member_code, outcomes)
        except Exception as exc:
            _operation_errors(exc)
    click.echo(
        json.dumps(
            {
                "member_code": member_code,
                "erased_at": erasure.erased_at.isoformat().replace("+00:00", "Z"),
                "already_erased": erasure.already_erased,
                "ledger_events_scrubbed": erasure.events_scrubbed,
                "dead_letters_scrubbed": erasure.dead_letters_scrubbed,
                "tokens": len(erasure.tokens),
                "nodes": {f"{store}/{node}": status for (store, node), status in sorted(outcomes.items())},
            }
        )
    )
    untold = sorted(f"{s}/{n} ({status})" for (s, n), status in outcomes.items() if status != DELIVERED)
    if untold:
        _fail(
            f"{member_code} is erased in both databases, but {len(untold)} node(s) were not told to forget "
            f"it: {', '.join(untold)}; run 'kiosk-central privacy erase {member_code}' again when they can "
            f"be reached",
            1,
        )


@privacy_group.command("marketing")
@_vault_options
@click.option(
    "--channel", required=True, type=click.Choice(["email", "sms"]), help="Which consent and contact."
)
@click.pass_context
def marketing_cmd(  # noqa: PLR0917 - one parameter per click option
    ctx: click.Context,
    db: str | None,
    vault_url: str | None,
    private_key_file: Path | None,
    data_key_file: Path | None,
    channel: str,
) -> None:
    """Contacts of the members whose current consent allows CHANNEL: one JSON object per line."""
    settings = _settings(ctx, db=db, vault=vault_url)
    with _opened(settings, private_key_file, data_key_file) as vault:
        try:
            for entry in vault.marketing("email" if channel == "email" else "sms"):
                click.echo(json.dumps(entry, ensure_ascii=False))
        except Exception as exc:
            _operation_errors(exc)
