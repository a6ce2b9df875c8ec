"""The PII vault: people (encrypted personal data by member code), consent history, absorbed events,
the erasure log and its node notices, and the current data key id.

Revision ID: v0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "absorbed",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.String(length=200), nullable=True),
        sa.Column("absorbed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("absorbed", schema=None) as batch_op:
        batch_op.create_index("ix_absorbed_status", ["status"], unique=False)

    op.create_table(
        "consents",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("member_token", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("given_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("notice_version", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", "channel", name="uq_consents_event_channel"),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index(
            "ix_consents_member_channel", ["member_token", "channel", "given_at"], unique=False
        )

    op.create_table(
        "erasure_notices",
        sa.Column("member_code", sa.String(length=16), nullable=False),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("member_code", "store", "node"),
    )
    op.create_table(
        "erasures",
        sa.Column("member_code", sa.String(length=16), nullable=False),
        sa.Column("member_token", sa.String(length=64), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("member_code"),
        sa.UniqueConstraint("member_token"),
    )
    op.create_table(
        "people",
        sa.Column("member_code", sa.String(length=16), nullable=False),
        sa.Column("member_token", sa.String(length=64), nullable=False),
        sa.Column("data_key_id", sa.String(length=16), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("member_code"),
        sa.UniqueConstraint("member_token"),
    )
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.create_index("ix_people_data_key", ["data_key_id"], unique=False)

    op.create_table(
        "vault_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data_key_id", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("vault_state")
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.drop_index("ix_people_data_key")

    op.drop_table("people")
    op.drop_table("erasures")
    op.drop_table("erasure_notices")
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index("ix_consents_member_channel")

    op.drop_table("consents")
    with op.batch_alter_table("absorbed", schema=None) as batch_op:
        batch_op.drop_index("ix_absorbed_status")

    op.drop_table("absorbed")
