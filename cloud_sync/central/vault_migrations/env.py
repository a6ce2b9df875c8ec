"""Alembic environment of the PII vault database: runs on the connection ``vault.migrate_vault`` hands over.

The vault keeps its own version table (``vault_alembic_version``), so a vault placed in a separate schema of
the ledger's PostgreSQL server can never be confused with the ledger's migration history.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from cloud_sync.central.vault import metadata

VERSION_TABLE = "vault_alembic_version"

config = context.config
connection = config.attributes.get("connection")
if connection is not None:
    context.configure(
        connection=connection, target_metadata=metadata, render_as_batch=True, version_table=VERSION_TABLE
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.connect() as conn:
        context.configure(
            connection=conn, target_metadata=metadata, render_as_batch=True, version_table=VERSION_TABLE
        )
        with context.begin_transaction():
            context.run_migrations()
