"""The StarkNet mirror: chain cursors keyed by a CAIP-2 style chain name
(``eip155:31337``, ``starknet:0x534e…``) and a contract of up to 66 characters (StarkNet
addresses are felts); an index to find transactions by kind (the mirror reads its
authorisations and entries).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_cursors_v2",
        sa.Column("chain", sa.String(80), primary_key=True),
        sa.Column("contract", sa.String(66), primary_key=True),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
    )
    op.execute(
        "INSERT INTO chain_cursors_v2 (chain, contract, block_number, block_hash) "
        "SELECT 'eip155:' || CAST(chain_id AS VARCHAR(20)), contract, block_number, block_hash "
        "FROM chain_cursors"
    )
    op.drop_table("chain_cursors")
    op.rename_table("chain_cursors_v2", "chain_cursors")
    op.create_index("ix_transactions_kind_seq", "transactions", ["kind", "seq"])


def downgrade() -> None:
    raise NotImplementedError("the journal is append-only; restore from a backup instead")
