"""Journal, postings, blocks, projections; append-only and zero-sum enforced in the database.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
HASH = sa.LargeBinary(32)
JOURNAL_TABLES = ("transactions", "postings", "blocks")

POSTGRES_FUNCTIONS = """
CREATE FUNCTION ledger_forbid_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger journal is append-only: % on % is forbidden', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE FUNCTION ledger_check_zero_sum() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE total numeric;
BEGIN
    SELECT sum(amount) INTO total FROM postings WHERE seq = NEW.seq AND asset = NEW.asset;
    IF total <> 0 THEN
        RAISE EXCEPTION 'postings of transaction % do not sum to zero in %: %',
            NEW.seq, NEW.asset, total USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("scale", sa.SmallInteger, nullable=False),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(96), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("opened_seq", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "balances",
        sa.Column("account", sa.String(96), primary_key=True),
        sa.Column("asset", sa.String(32), primary_key=True),
        sa.Column("balance", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "transactions",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=False),
        sa.Column("key", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("effective_at", sa.BigInteger, nullable=False),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("reverses", sa.BigInteger, nullable=True, unique=True),
        sa.Column("digest", HASH, nullable=False),
        sa.Column("prev_hash", HASH, nullable=False),
        sa.Column("hash", HASH, nullable=False),
    )
    op.create_table(
        "postings",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("account", sa.String(96), nullable=False),
        sa.Column("asset", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_postings_account_seq", "postings", ["account", "seq"])
    op.create_table(
        "blocks",
        sa.Column("number", SEQ, primary_key=True, autoincrement=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("sealed_at", sa.BigInteger, nullable=False),
        sa.Column("leaf_count", sa.BigInteger, nullable=False),
        sa.Column("prev_block_hash", HASH, nullable=False),
        sa.Column("tx_head_hash", HASH, nullable=False),
        sa.Column("state_root", HASH, nullable=False),
        sa.Column("withdrawal_root", HASH, nullable=False),
        sa.Column("hash", HASH, nullable=False, unique=True),
    )
    head = op.create_table(
        "chain_head",
        sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", HASH, nullable=False),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
        sa.Column("block_number", sa.BigInteger, nullable=False),
    )
    assets = sa.table("assets", sa.column("code", sa.String), sa.column("scale", sa.Integer))
    op.bulk_insert(assets, [{"code": "USDC", "scale": 6}])
    op.bulk_insert(
        head, [{"id": 1, "seq": 0, "hash": b"\x00" * 32, "recorded_at": 0, "block_number": 0}]
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgres_guards()
    else:
        _sqlite_guards()


def _postgres_guards() -> None:
    op.execute(POSTGRES_FUNCTIONS)
    for table in JOURNAL_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_forbid_mutation()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_mutation()"
        )
    # Deferred to commit time: a transaction's postings are inserted row by row.
    op.execute(
        "CREATE CONSTRAINT TRIGGER postings_zero_sum AFTER INSERT ON postings "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_zero_sum()"
    )


def _sqlite_guards() -> None:
    for table in JOURNAL_TABLES:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'ledger journal is append-only: {action} on "
                f"{table} is forbidden'); END"
            )


def downgrade() -> None:
    raise NotImplementedError("the journal is append-only; restore from a backup instead")
