"""Idempotency receipts: the response to each POS request, committed with its event.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receipts",
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_receipts_created_at", "receipts", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_receipts_created_at", "receipts")
    op.drop_table("receipts")
