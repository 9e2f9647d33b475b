"""Typed table definitions. The schema itself is created only by the Alembic migrations
in ``migrations/``; a test checks that these models and the migrated database agree.

Journal tables (``transactions``, ``postings``, ``blocks``) are append-only. ``balances``,
``accounts`` and ``chain_head`` are projections of the journal kept for speed; ``ledger
audit`` recomputes them from the postings.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only makes a column the rowid when its type is exactly INTEGER.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of the ledger schema."""


class AssetRow(Base):
    __tablename__ = "assets"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    scale: Mapped[int] = mapped_column(SmallInteger)


class AccountRow(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    opened_seq: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(BigInteger)


class BalanceRow(Base):
    __tablename__ = "balances"

    account: Mapped[str] = mapped_column(String(96), primary_key=True)
    asset: Mapped[str] = mapped_column(String(32), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger)


class TransactionRow(Base):
    __tablename__ = "transactions"
    __table_args__ = (Index("ix_transactions_kind_seq", "kind", "seq"),)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=False)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    effective_at: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[int] = mapped_column(BigInteger)
    meta: Mapped[str] = mapped_column("metadata", Text)
    reverses: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class PostingRow(Base):
    __tablename__ = "postings"
    __table_args__ = (
        Index("ix_postings_account_seq", "account", "seq"),
        {"sqlite_with_rowid": False},
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    account: Mapped[str] = mapped_column(String(96))
    asset: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(BigInteger)


class BlockRow(Base):
    __tablename__ = "blocks"

    number: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=False)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    sealed_at: Mapped[int] = mapped_column(BigInteger)
    leaf_count: Mapped[int] = mapped_column(BigInteger)
    prev_block_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    tx_head_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    state_root: Mapped[bytes] = mapped_column(LargeBinary(32))
    withdrawal_root: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    signature: Mapped[bytes | None] = mapped_column(LargeBinary(65))


class ChainHeadRow(Base):
    """Exactly one row (id = 1); writers lock it to serialise the hash chain."""

    __tablename__ = "chain_head"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    recorded_at: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)


class OperatorRow(Base):
    """Registered operator keys (projection of ``operator_keys`` transactions)."""

    __tablename__ = "operators"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    added_seq: Mapped[int] = mapped_column(BigInteger)


class WalletRow(Base):
    """Onboarded owners and their L2 keys (projection of ``onboarding`` transactions)."""

    __tablename__ = "wallets"

    owner: Mapped[str] = mapped_column(String(42), primary_key=True)
    stark_public_key: Mapped[str] = mapped_column(String(66))
    stark_account: Mapped[str] = mapped_column(String(66))
    onboarded_seq: Mapped[int] = mapped_column(BigInteger)


class NonceRow(Base):
    """Each owner's last used action nonce."""

    __tablename__ = "nonces"

    owner: Mapped[str] = mapped_column(String(42), primary_key=True)
    nonce: Mapped[int] = mapped_column(BigInteger)


class SettingRow(Base):
    """Ledger-wide settings fixed at genesis (chain ids of the signing domains)."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


JOURNAL_TABLES = ("transactions", "postings", "blocks")


class TradingStateRow(Base):
    """The trading state (``ledger.trading.state``): rows ``(scope, key) -> value``;
    ``account`` names the account a position or margin-mode row belongs to ('' otherwise)."""

    __tablename__ = "trading_state"
    __table_args__ = (Index("ix_trading_state_account", "account", "scope"),)

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    account: Mapped[str] = mapped_column(String(96))
    value: Mapped[str] = mapped_column(Text)


class ChainCursorRow(Base):
    """The last block (number and hash) whose events a chain adapter (the L1 watcher, the
    StarkNet mirror) has ingested, per chain (``eip155:ID``, ``starknet:ID``) and contract:
    it resumes there, and a changed hash there is a reorg."""

    __tablename__ = "chain_cursors"

    chain: Mapped[str] = mapped_column(String(80), primary_key=True)
    contract: Mapped[str] = mapped_column(String(66), primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
