"""The ledger's Python API: the imperative shell around the pure core and the store."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.audit import AuditReport, Progress, audit
from ledger.core import operations
from ledger.core.amounts import USDC, Asset, format_amount, parse_amount
from ledger.core.blocks import BlockHeader
from ledger.core.journal import MAX_BATCH, TxRecord, TxRequest, canonical_account
from ledger.core.proofs import AccountProof, build_proof
from ledger.errors import LimitExceeded, NotFound
from ledger.store.database import check_schema, make_engine, migrate
from ledger.store.sql import Receipt, SqlStore, StatementLine

Clock = Callable[[], int]


def now_us() -> int:
    """Wall-clock time in microseconds since the Unix epoch."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's balance in one asset as of a sequence number."""

    account: str
    asset: Asset
    units: int
    seq: int

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "asset": self.asset.code,
            "balance": format_amount(self.units, self.asset),
            "seq": self.seq,
        }


class Ledger:
    """A hash-chained double-entry ledger on SQLite (default) or PostgreSQL.

    Amounts are ``int`` base units (USDC: 1 = 0.000001) or decimal strings (``"100.25"``).
    """

    def __init__(self, url: str | None = None, *, clock: Clock = now_us) -> None:
        self.engine = make_engine(url)
        check_schema(self.engine)
        self.store = SqlStore(self.engine)
        self.clock = clock

    @classmethod
    def init(cls, url: str | None = None, *, clock: Clock = now_us) -> Ledger:
        """Run the migrations (idempotent) and open the ledger."""
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        return cls(url, clock=clock)

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes
    def submit(self, requests: Sequence[TxRequest]) -> list[Receipt]:
        """Commit a batch atomically: every request is applied, or none is."""
        if not requests:
            return []
        if len(requests) > MAX_BATCH:
            raise LimitExceeded(
                f"a batch holds at most {MAX_BATCH} transactions, got {len(requests)}"
            )
        return self.store.append(requests, self.clock())

    def deposit(
        self,
        account: str,
        amount: int | str,
        *,
        key: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> Receipt:
        """Credit USDC arriving from outside the venue."""
        request = operations.deposit(account, _units(amount), _key(key), metadata)
        return self.submit([request])[0]

    def withdraw(
        self,
        account: str,
        amount: int | str,
        *,
        key: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> Receipt:
        """Debit USDC leaving the venue."""
        request = operations.withdrawal(account, _units(amount), _key(key), metadata)
        return self.submit([request])[0]

    def transfer(
        self,
        source: str,
        target: str,
        amount: int | str,
        *,
        key: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> Receipt:
        """Move USDC between two accounts."""
        request = operations.transfer(source, target, _units(amount), _key(key), metadata)
        return self.submit([request])[0]

    def reverse(self, seq: int, *, reason: str, key: str | None = None) -> Receipt:
        """Post the exact opposite of transaction ``seq`` (a correction; history stays)."""
        original = self.store.transaction(seq)
        # The store checks, under its write lock, that ``seq`` may still be reversed.
        return self.submit([operations.reversal(original, _key(key), reason)])[0]

    def seal(self) -> BlockHeader:
        """Seal the transactions since the last block into a new block."""
        return self.store.seal(self.clock())

    # ------------------------------------------------------------------ reads
    def transaction(self, seq: int) -> TxRecord:
        """The committed transaction at ``seq``."""
        return self.store.transaction(seq)

    def balance(self, account: str, asset: str = USDC.code, at_seq: int | None = None) -> Balance:
        """Balance of ``account`` now, or as of sequence ``at_seq``."""
        canonical = canonical_account(account)
        units, seq = self.store.balance(canonical, self._asset(asset).code, at_seq)
        return Balance(canonical, self._asset(asset), units, seq)

    def history(self, account: str, asset: str = USDC.code) -> list[StatementLine]:
        """Statement of ``account``: every posting with its running balance."""
        return self.store.history(canonical_account(account), self._asset(asset).code)

    def block(self, number: int | None = None) -> BlockHeader:
        """Block ``number``, default the newest."""
        return self.store.block(number)

    def proof(self, account: str, asset: str = USDC.code, block: int | None = None) -> AccountProof:
        """Merkle inclusion proof of ``account``'s balance in ``block`` (default newest)."""
        header = self.store.block(block)
        leaves = self.store.balances_at(header.last_seq)
        return build_proof(canonical_account(account), self._asset(asset), leaves, header)

    def audit(self, progress: Progress | None = None) -> AuditReport:
        """Replay from genesis and compare every balance, version, hash and root."""
        return audit(self.store, progress)

    def _asset(self, code: str) -> Asset:
        assets = self.store.assets()
        if code not in assets:
            raise NotFound(f"unknown asset {code!r}; known: {', '.join(sorted(assets))}")
        return assets[code]


def _units(amount: int | str) -> int:
    return parse_amount(amount, USDC) if isinstance(amount, str) else amount


def _key(key: str | None) -> str:
    return key if key is not None else f"auto:{uuid.uuid4().hex}"
