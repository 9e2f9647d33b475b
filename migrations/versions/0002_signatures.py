"""Signatures: operator keys, onboarded wallets, nonces, ledger settings, signed blocks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
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
        "operators",
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("added_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "wallets",
        sa.Column("owner", sa.String(42), primary_key=True),
        sa.Column("stark_public_key", sa.String(66), nullable=False),
        sa.Column("stark_account", sa.String(66), nullable=False),
        sa.Column("onboarded_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "nonces",
        sa.Column("owner", sa.String(42), primary_key=True),
        sa.Column("nonce", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    # Blocks are append-only; a new nullable column keeps existing rows as they are.
    op.add_column("blocks", sa.Column("signature", sa.LargeBinary(65), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the journal is append-only; restore from a backup instead")
