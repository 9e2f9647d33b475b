"""Chain cursors: how far the watcher has ingested each contract's events.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_cursors",
        sa.Column("chain_id", sa.BigInteger, primary_key=True),
        sa.Column("contract", sa.String(42), primary_key=True),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("the journal is append-only; restore from a backup instead")
