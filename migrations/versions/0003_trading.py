"""Trading state: listings, market data, positions' cost basis, margin modes, order fills.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trading_state",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("account", sa.String(96), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_index("ix_trading_state_account", "trading_state", ["account", "scope"])


def downgrade() -> None:
    raise NotImplementedError("the journal is append-only; restore from a backup instead")
