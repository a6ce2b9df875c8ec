"""``kiosk-central``: the central receiver's command line (ingest arrives with the central issue).

For now it can check a message exactly as the receiver will: envelope structure, body schema and the
node's signature — useful to operators registering a node and to the node's own tests.
"""

from __future__ import annotations

import json
import sys
from typing import BinaryIO

import click

from cloud_sync.envelope import decode_public_key, verify
from cloud_sync.errors import EnvelopeError
from cloud_sync.messages import validate_body


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Central receiver for the chain's kiosk-edge nodes."""


@cli.command("verify")
@click.option("--pubkey", required=True, help="The node's key as printed by 'kiosk-edge keys show'.")
@click.argument("message", type=click.File("rb"), default="-")
def verify_cmd(pubkey: str, message: BinaryIO) -> None:
    """Verify one envelope (file or stdin): structure, body schema and signature. Exit 1 if invalid."""
    try:
        key = decode_public_key(pubkey)
    except EnvelopeError as exc:
        click.echo(f"kiosk-central: --pubkey: {exc}", err=True)
        sys.exit(2)
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


def main() -> None:
    """Console-script entry point."""
    cli.main(standalone_mode=True)
