"""The SQL store: appends journal batches atomically and answers reads.

Write path (one database transaction per batch, all or nothing):

1. lock the chain head (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT … FOR UPDATE``),
   which serialises every writer on the hash chain;
2. resolve idempotency keys against what is already committed;
3. lock the touched accounts' balances in sorted id order and load them;
4. let the pure :class:`~ledger.core.journal.Journal` validate and chain the batch;
5. insert the journal rows with ``executemany`` and update the projections.

The hot path speaks to the DB-API driver directly (``exec_driver_sql``): the rows are
plain tuples and SQLAlchemy's per-row processing would cost more than the insert.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ledger.core.accounts import AccountKind, account_kind, is_system, owner_of
from ledger.core.authorization import USER, AuthState
from ledger.core.blocks import BlockHeader, make_block
from ledger.core.genesis import genesis_settings
from ledger.core.journal import ChainHead, Journal, PostingRecord, TxKind, TxRecord, TxRequest
from ledger.core.operations import check_reversal
from ledger.core.withdrawals import (
    Withdrawal,
    WithdrawalProof,
    prove,
    withdrawal_of,
    withdrawal_root,
)
from ledger.errors import (
    AlreadyOnboarded,
    IdempotencyConflict,
    LedgerError,
    NonceReused,
    NotFound,
    NothingToSeal,
    UnknownOperator,
)
from ledger.store.schema import BlockRow, ChainHeadRow
from ledger.trading.rules import TradingRules
from ledger.trading.state import SCOPE_ORDER, SCOPE_POSITION, TradingState, row_account
from ledger.trading.valuation import mirror_accounts

_TX_COLUMNS = (
    "seq, key, kind, effective_at, recorded_at, metadata, reverses, digest, prev_hash, hash"
)
_INSERT_TX = f"INSERT INTO transactions ({_TX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_POSTING = (
    "INSERT INTO postings (seq, idx, account, asset, amount, balance_after, version) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_BALANCE = (
    "INSERT INTO balances (account, asset, balance) VALUES (?, ?, ?) "
    "ON CONFLICT (account, asset) DO UPDATE SET balance = excluded.balance"
)
_UPSERT_ACCOUNT = (
    "INSERT INTO accounts (id, kind, opened_seq, version) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET version = excluded.version"
)
_BLOCKS = select(BlockRow.__table__)
_TX_SELECT = (
    "SELECT seq, kind, key, effective_at, recorded_at, metadata, reverses, digest, prev_hash, "
    "hash FROM transactions "
)
_ALWAYS_OPEN = (AccountKind.SYSTEM, AccountKind.MIRROR)
_POSTING_SELECT = "SELECT seq, idx, account, asset, amount, balance_after, version FROM postings "
_UPDATE_HEAD = "UPDATE chain_head SET seq = ?, hash = ?, recorded_at = ? WHERE id = 1"


@dataclass(frozen=True, slots=True)
class Receipt:
    """The outcome of one submitted transaction. ``duplicate``: an idempotent retry."""

    tx: TxRecord
    duplicate: bool = False

    @property
    def seq(self) -> int:
        return self.tx.seq

    @property
    def hash(self) -> bytes:
        return self.tx.hash


@dataclass(slots=True)
class _Resolution:
    """Which requests of a batch are new, and which repeat a committed or earlier key."""

    fresh: list[int]
    committed: dict[int, int]  # request index -> committed sequence it repeats
    repeated: dict[int, int]  # request index -> earlier index in the same batch


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One line of an account statement."""

    seq: int
    kind: str
    key: str
    recorded_at: int
    effective_at: int
    amount: int
    balance_after: int
    counterparties: tuple[str, ...]


class SqlStore:
    """Journal persistence on SQLite or PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    # ------------------------------------------------------------------ plumbing
    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.postgres else statement

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection (SQLite: a deferred transaction, so readers never block)."""
        with self.engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
            yield connection

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, Any]:
        """SQL for ``column IN values`` and its parameters, per dialect."""
        if self.postgres:
            return f"{column} = ANY(%s)", (list(values),)
        return f"{column} IN ({','.join('?' * len(values))})", tuple(values)

    # ------------------------------------------------------------------ writes
    def append(self, requests: Sequence[TxRequest], now_us: int) -> list[Receipt]:
        """Commit ``requests`` in order as one atomic batch and return their receipts."""
        digests = [request.digest() for request in requests]
        try:
            with self._write() as connection:
                head = self._lock_head(connection)
                keys = self._resolve_keys(connection, requests, digests)
                self._check_reversals(connection, [requests[i] for i in keys.fresh])
                fresh = [requests[i] for i in keys.fresh]
                touched: set[str] = set()
                order_ids: set[str] = set()
                for request in fresh:
                    more, orders = TradingRules.touched(request)
                    touched |= more
                    order_ids |= orders
                accounts = sorted({p.account for r in fresh for p in r.postings} | touched)
                balances, versions = self._lock_accounts(connection, accounts)
                trading = self._load_trading(connection, accounts, order_ids)
                if trading.config is not None and trading.config.mirror_collateral:
                    # Mirrored L2 USDC counts in its owners' values: load it for the checks.
                    mirrored = sorted(set(mirror_accounts(accounts)) - set(accounts))
                    extra_balances, extra_versions = self._lock_accounts(connection, mirrored)
                    balances |= extra_balances
                    versions |= extra_versions
                rules = TradingRules(trading)
                known = set(versions)
                # Fills carry orders: their owners' onboarded keys are checked too.
                signers = sorted(
                    {r.auth.signer for r in requests if r.auth is not None}
                    | {owner_of(a) for a in touched if not is_system(a)}
                )
                auth_state = self._auth_state(connection, signers)
                before = AuthState(
                    set(auth_state.operators), dict(auth_state.wallets), dict(auth_state.nonces)
                )
                journal = Journal(head, balances, versions, auth_state, rules.assets, rules)
                records: dict[int, TxRecord] = {}
                for i in keys.fresh:
                    try:
                        records[i] = journal.apply(requests[i], digests[i], now_us)
                    except LedgerError as exc:
                        if len(requests) == 1:
                            raise
                        raise type(exc)(
                            f"transaction {i + 1} of {len(requests)} "
                            f"(key {requests[i].key!r}): {exc}"
                        ) from exc
                if records:
                    self._insert(connection, list(records.values()), journal, known)
                    self._save_auth_state(connection, before, journal.auth_state, requests, records)
                    self._save_trading(connection, trading)
                committed = self._transactions(connection, sorted(set(keys.committed.values())))
                for i, seq in keys.committed.items():
                    records[i] = committed[seq]
                for i, j in keys.repeated.items():
                    records[i] = records[j]
        except IntegrityError as exc:
            raise LedgerError(f"the database rejected the batch: {exc.orig}") from exc
        repeats = keys.committed.keys() | keys.repeated.keys()
        return [Receipt(records[i], duplicate=i in repeats) for i in range(len(requests))]

    def _lock_head(self, connection: Connection) -> ChainHead:
        # SQLite holds the database write lock since BEGIN IMMEDIATE already.
        return self._read_head(connection, " FOR UPDATE" if self.postgres else "")

    def _resolve_keys(
        self, connection: Connection, requests: Sequence[TxRequest], digests: Sequence[bytes]
    ) -> _Resolution:
        keys = list({request.key for request in requests})
        clause, params = self._in("key", keys)
        stored = {
            row[0]: (row[1], bytes(row[2]))
            for row in connection.exec_driver_sql(
                f"SELECT key, seq, digest FROM transactions WHERE {clause}", params
            ).all()
        }
        resolution = _Resolution([], {}, {})
        first_in_batch: dict[str, int] = {}
        for i, (request, digest) in enumerate(zip(requests, digests, strict=True)):
            if request.key in stored and _is_user_action(request):
                raise NonceReused(
                    f"nonce {request.auth.nonce} of {request.auth.signer} was already used "  # type: ignore[union-attr]
                    f"(sequence {stored[request.key][0]}); sign the action again with a new nonce"
                )
            if request.key in first_in_batch and _is_user_action(request):
                raise NonceReused(f"the action {request.key!r} appears twice in this batch")
            if request.key in stored:
                seq, stored_digest = stored[request.key]
                if request.kind == TxKind.ONBOARDING.value and stored_digest != digest:
                    raise AlreadyOnboarded(
                        f"{request.key.removeprefix('onboard/')} is already onboarded "
                        f"(sequence {seq}) with another L2 key; its L2 key is fixed"
                    )
                _check_same_payload(request.key, stored_digest, digest, f"sequence {seq}")
                resolution.committed[i] = seq
            elif request.key in first_in_batch:
                j = first_in_batch[request.key]
                _check_same_payload(request.key, digests[j], digest, "this batch")
                resolution.repeated[i] = j
            else:
                first_in_batch[request.key] = i
                resolution.fresh.append(i)
        return resolution

    def _auth_state(self, connection: Connection, signers: Sequence[str]) -> AuthState:
        operators = {row[0] for row in connection.exec_driver_sql("SELECT address FROM operators")}
        if not signers:
            return AuthState(operators)
        clause, params = self._in("owner", signers)
        wallets = {
            row[0]: int(row[1], 16)
            for row in connection.exec_driver_sql(
                f"SELECT owner, stark_public_key FROM wallets WHERE {clause}", params
            ).all()
        }
        nonces = {
            row[0]: row[1]
            for row in connection.exec_driver_sql(
                f"SELECT owner, nonce FROM nonces WHERE {clause}", params
            ).all()
        }
        return AuthState(operators, wallets, nonces)

    def _save_auth_state(
        self,
        connection: Connection,
        before: AuthState,
        after: AuthState,
        requests: Sequence[TxRequest],
        records: Mapping[int, TxRecord],
    ) -> None:
        """Persist what the batch changed: operators, onboarded wallets, nonces, and the
        settings a genesis registration fixes."""
        for i, record in records.items():
            auth = requests[i].auth
            assert auth is not None
            if record.kind == TxKind.OPERATOR_KEYS.value and auth.subject not in before.operators:
                connection.exec_driver_sql(
                    self._sql("INSERT INTO operators (address, added_seq) VALUES (?, ?)"),
                    (auth.subject, record.seq),
                )
                for name, value in genesis_settings(record).items():
                    connection.exec_driver_sql(
                        self._sql(
                            "INSERT INTO settings (name, value) VALUES (?, ?) "
                            "ON CONFLICT (name) DO NOTHING"
                        ),
                        (name, value),
                    )
            elif record.kind == TxKind.ONBOARDING.value:
                connection.exec_driver_sql(
                    self._sql(
                        "INSERT INTO wallets (owner, stark_public_key, stark_account, "
                        "onboarded_seq) VALUES (?, ?, ?, ?)"
                    ),
                    (auth.signer, f"{auth.stark_key:#x}", auth.subject, record.seq),
                )
        changed = [(owner, n) for owner, n in after.nonces.items() if before.nonces.get(owner) != n]
        if changed:
            connection.exec_driver_sql(
                self._sql(
                    "INSERT INTO nonces (owner, nonce) VALUES (?, ?) "
                    "ON CONFLICT (owner) DO UPDATE SET nonce = excluded.nonce"
                ),
                changed,
            )

    def settings(self) -> dict[str, str]:
        """Ledger-wide settings (empty until genesis)."""
        with self.read() as connection:
            return {
                r[0]: r[1] for r in connection.exec_driver_sql("SELECT name, value FROM settings")
            }

    def auth_projection(self) -> AuthState:
        """Operators, onboarded keys and nonces as stored (audit compares them)."""
        with self.read() as connection:
            operators = {r[0] for r in connection.exec_driver_sql("SELECT address FROM operators")}
            wallets = {
                r[0]: int(r[1], 16)
                for r in connection.exec_driver_sql("SELECT owner, stark_public_key FROM wallets")
            }
            nonces = {
                r[0]: r[1] for r in connection.exec_driver_sql("SELECT owner, nonce FROM nonces")
            }
        return AuthState(operators, wallets, nonces)

    def wallet(self, owner: str) -> tuple[int, str] | None:
        """``(stark public key, stark account)`` an owner onboarded, if any."""
        with self.read() as connection:
            row = connection.exec_driver_sql(
                self._sql("SELECT stark_public_key, stark_account FROM wallets WHERE owner = ?"),
                (owner,),
            ).first()
        return None if row is None else (int(row[0], 16), row[1])

    def last_nonce(self, owner: str) -> int:
        """The owner's last used action nonce (0 before its first action)."""
        with self.read() as connection:
            row = connection.exec_driver_sql(
                self._sql("SELECT nonce FROM nonces WHERE owner = ?"), (owner,)
            ).first()
        return 0 if row is None else int(row[0])

    def _load_trading(
        self, connection: Connection, accounts: Sequence[str], order_ids: set[str]
    ) -> TradingState:
        """The ledger-wide trading rows, and those of ``accounts`` and ``order_ids``."""
        state = TradingState()
        select = "SELECT scope, key, value FROM trading_state WHERE "
        state.load_rows(connection.exec_driver_sql(select + "account = ''").all())
        if accounts:
            clause, params = self._in("account", accounts)
            state.load_rows(connection.exec_driver_sql(select + clause, params).all())
        if order_ids:
            clause, params = self._in("key", sorted(order_ids))
            sql = f"{select}scope = '{SCOPE_ORDER}' AND {clause}"
            state.load_rows(connection.exec_driver_sql(sql, params).all())
        return state

    def _save_trading(self, connection: Connection, state: TradingState) -> None:
        """Write the trading rows a batch changed (a row whose value is gone is deleted)."""
        upserts, deletes = [], []
        for scope, key, value in state.rows(sorted(state.dirty)):
            if value is None:
                deletes.append((scope, key))
            else:
                upserts.append((scope, key, row_account(scope, key), value))
        if deletes:
            connection.exec_driver_sql(
                self._sql("DELETE FROM trading_state WHERE scope = ? AND key = ?"), deletes
            )
        if upserts:
            connection.exec_driver_sql(
                self._sql(
                    "INSERT INTO trading_state (scope, key, account, value) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value"
                ),
                upserts,
            )

    def trading_state(
        self, accounts: Sequence[str] | None = None, order_ids: Sequence[str] = ()
    ) -> TradingState:
        """The stored trading state: all of it, or the ledger-wide rows and those of
        ``accounts`` and ``order_ids``."""
        with self.read() as connection:
            if accounts is not None:
                return self._load_trading(connection, accounts, set(order_ids))
            state = TradingState()
            state.load_rows(
                connection.exec_driver_sql("SELECT scope, key, value FROM trading_state").all()
            )
            return state

    def balances_of(self, accounts: Sequence[str]) -> dict[tuple[str, str], int]:
        """Every balance (all assets) of ``accounts``."""
        if not accounts:
            return {}
        with self.read() as connection:
            clause, params = self._in("account", accounts)
            rows = connection.exec_driver_sql(
                f"SELECT account, asset, balance FROM balances WHERE {clause}", params
            ).all()
        return {(r[0], r[1]): r[2] for r in rows}

    def position_accounts(self) -> list[str]:
        """Accounts holding a perp or option position."""
        with self.read() as connection:
            rows = connection.exec_driver_sql(
                f"SELECT DISTINCT account FROM trading_state WHERE scope = '{SCOPE_POSITION}'"
            ).all()
        return sorted(r[0] for r in rows if not r[0].startswith("system:"))

    def holders(self, assets: Sequence[str]) -> list[str]:
        """Accounts with a non-zero balance of any of ``assets``."""
        if not assets:
            return []
        with self.read() as connection:
            clause, params = self._in("asset", assets)
            rows = connection.exec_driver_sql(
                f"SELECT DISTINCT account FROM balances WHERE {clause} AND balance <> 0", params
            ).all()
        return sorted(r[0] for r in rows)

    def _check_reversals(self, connection: Connection, fresh: Sequence[TxRequest]) -> None:
        """Under the write lock, so two concurrent reversals of one transaction cannot both
        pass (the unique index on ``reverses`` is only the last line of defence)."""
        targets = sorted({r.reverses for r in fresh if r.reverses is not None})
        if not targets:
            return
        originals = self._transactions(connection, targets)
        clause, params = self._in("reverses", targets)
        reversed_by = {
            row[0]: str(row[1])
            for row in connection.exec_driver_sql(
                f"SELECT reverses, seq FROM transactions WHERE {clause}", params
            ).all()
        }
        for request in fresh:
            if request.reverses is not None:
                target = request.reverses
                check_reversal(request, originals.get(target), reversed_by.get(target))
                reversed_by[target] = f"{request.key!r} earlier in this batch"

    def _lock_accounts(
        self, connection: Connection, accounts: Sequence[str]
    ) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        if not accounts:
            return {}, {}
        clause, params = self._in("id", accounts)
        lock = " ORDER BY id FOR UPDATE" if self.postgres else ""
        versions = {
            row[0]: row[1]
            for row in connection.exec_driver_sql(
                f"SELECT id, version FROM accounts WHERE {clause}{lock}", params
            ).all()
        }
        clause, params = self._in("account", accounts)
        balances = {
            (row[0], row[1]): row[2]
            for row in connection.exec_driver_sql(
                f"SELECT account, asset, balance FROM balances WHERE {clause}", params
            ).all()
        }
        return balances, versions

    def _insert(
        self, connection: Connection, records: list[TxRecord], journal: Journal, known: set[str]
    ) -> None:
        tx_rows = []
        posting_rows = []
        touched_balances: dict[tuple[str, str], int] = {}
        opened: dict[str, int] = {}
        for tx in records:
            tx_rows.append(
                (
                    tx.seq,
                    tx.key,
                    tx.kind,
                    tx.effective_at,
                    tx.recorded_at,
                    tx.metadata,
                    tx.reverses,
                    tx.digest,
                    tx.prev_hash,
                    tx.hash,
                )
            )
            for idx, p in enumerate(tx.postings):
                posting_rows.append(
                    (tx.seq, idx, p.account, p.asset, p.amount, p.balance_after, p.version)
                )
                touched_balances[(p.account, p.asset)] = p.balance_after
                if p.account not in known and p.account not in opened:
                    opened[p.account] = tx.seq
        versions = journal.versions
        account_rows = [
            (account, account_kind(account).value, opened.get(account, 0), versions[account])
            for account in sorted({account for account, _ in touched_balances})
        ]
        balance_rows = [(a, s, b) for (a, s), b in sorted(touched_balances.items())]
        head = journal.head
        connection.exec_driver_sql(self._sql(_INSERT_TX), tx_rows)
        if posting_rows:  # events without postings (onboarding, settings) write none
            connection.exec_driver_sql(self._sql(_INSERT_POSTING), posting_rows)
            connection.exec_driver_sql(self._sql(_UPSERT_ACCOUNT), account_rows)
            connection.exec_driver_sql(self._sql(_UPSERT_BALANCE), balance_rows)
        connection.exec_driver_sql(self._sql(_UPDATE_HEAD), (head.seq, head.hash, head.recorded_at))

    def seal(self, now_us: int, sealer: str, sign: Callable[[BlockHeader], bytes]) -> BlockHeader:
        """Seal every transaction since the last block into a new block; ``sign`` gives
        operator ``sealer``'s signature of the header, stored beside it."""
        with self._write() as connection:
            head = self._lock_head(connection)
            if sealer not in self._auth_state(connection, []).operators:
                raise UnknownOperator(f"{sealer} is not a registered operator key")
            previous = self._last_block(connection)
            if head.seq == (previous.last_seq if previous else 0):
                raise NothingToSeal(
                    "nothing to seal: no transactions since block "
                    f"{previous.number if previous else 0}"
                )
            balances = connection.exec_driver_sql(
                "SELECT account, asset, balance FROM balances"
            ).all()
            first = previous.last_seq + 1 if previous else 1
            claims = self._withdrawals(connection, first, head.seq)
            header = make_block(
                previous,
                head.seq,
                head.hash,
                [tuple(r) for r in balances],
                now_us,
                withdrawal_root(claims),
            )
            connection.execute(
                insert(BlockRow),
                {**_block_columns(header), "hash": header.hash, "signature": sign(header)},
            )
            connection.execute(update(ChainHeadRow).values(block_number=header.number))
        return header

    def _withdrawals(self, connection: Connection, first: int, last: int) -> list[Withdrawal]:
        """The withdrawal claims of sequences ``first..last``, in sequence order."""
        rows = connection.exec_driver_sql(
            self._sql(
                "SELECT p.seq, p.account, p.asset, p.amount FROM postings p "
                "JOIN transactions t ON t.seq = p.seq "
                "WHERE t.kind = ? AND p.seq BETWEEN ? AND ? ORDER BY p.seq, p.idx"
            ),
            (TxKind.WITHDRAWAL.value, first, last),
        ).all()
        legs: dict[int, list[tuple[str, str, int]]] = {}
        for seq, account, asset, amount in rows:
            legs.setdefault(seq, []).append((account, asset, amount))
        return [withdrawal_of(seq, postings) for seq, postings in legs.items()]

    def chain_cursor(self, chain: str, contract: str) -> tuple[int, str] | None:
        """``(block number, block hash)`` a chain adapter ingested ``contract``'s events
        up to on ``chain`` (``eip155:ID`` or ``starknet:ID``), if any."""
        with self.read() as connection:
            row = connection.exec_driver_sql(
                self._sql(
                    "SELECT block_number, block_hash FROM chain_cursors "
                    "WHERE chain = ? AND contract = ?"
                ),
                (chain, contract.lower()),
            ).first()
        return None if row is None else (int(row[0]), str(row[1]))

    def set_chain_cursor(self, chain: str, contract: str, number: int, block_hash: str) -> None:
        """Record that events up to block ``number`` (hash ``block_hash``) are ingested."""
        with self._write() as connection:
            connection.exec_driver_sql(
                self._sql(
                    "INSERT INTO chain_cursors (chain, contract, block_number, block_hash) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (chain, contract) DO UPDATE SET "
                    "block_number = excluded.block_number, block_hash = excluded.block_hash"
                ),
                (chain, contract.lower(), number, block_hash),
            )

    def withdrawal_proof(self, seq: int) -> WithdrawalProof:
        """The claim proof of the withdrawal at ``seq`` (its block must be sealed)."""
        tx = self.transaction(seq)
        if tx.kind != TxKind.WITHDRAWAL.value:
            raise NotFound(f"transaction {seq} is a {tx.kind}, not a withdrawal")
        with self.read() as connection:
            row = connection.execute(
                _BLOCKS.where(BlockRow.first_seq <= seq, BlockRow.last_seq >= seq)
            ).first()
            if row is None:
                raise NotFound(f"withdrawal {seq} is not sealed yet: run `ledger seal` first")
            header = _header(row)
            claims = self._withdrawals(connection, header.first_seq, header.last_seq)
        proof = prove(header.number, claims, seq)
        assert proof.root == header.withdrawal_root
        return proof

    # ------------------------------------------------------------------ reads
    def head(self) -> ChainHead:
        """The current chain head."""
        with self.read() as connection:
            return self._read_head(connection)

    def head_block(self) -> int:
        """Number of the newest sealed block, as the chain head records it."""
        with self.read() as connection:
            return int(
                connection.exec_driver_sql("SELECT block_number FROM chain_head").scalar_one()
            )

    def _read_head(self, connection: Connection, lock: str = "") -> ChainHead:
        row = connection.exec_driver_sql(
            f"SELECT seq, hash, recorded_at FROM chain_head WHERE id = 1{lock}"
        ).one()
        return ChainHead(row[0], bytes(row[1]), row[2])

    def transaction(self, seq: int) -> TxRecord:
        """The committed transaction at ``seq``."""
        with self.read() as connection:
            found = self._transactions(connection, [seq])
        if seq not in found:
            raise NotFound(f"no transaction with sequence {seq}")
        return found[seq]

    def _transactions(self, connection: Connection, seqs: Sequence[int]) -> dict[int, TxRecord]:
        """Committed transactions by sequence (two queries, whatever the count)."""
        if not seqs:
            return {}
        clause, params = self._in("seq", seqs)
        return {tx.seq: tx for tx in self._records(connection, clause, clause, params)}

    def transactions_of_kind(self, kinds: Sequence[str]) -> list[TxRecord]:
        """Every committed transaction of one of ``kinds``, in sequence order (two scans
        of the kind index, however many there are)."""
        clause, params = self._in("kind", kinds)
        selected = f"seq IN (SELECT seq FROM transactions WHERE {clause})"
        with self.read() as connection:
            return list(self._records(connection, clause, selected, params))

    @staticmethod
    def _records(
        connection: Connection, transactions: str, postings: str, params: Any
    ) -> Iterator[TxRecord]:
        """The transactions matching the SQL condition ``transactions``, joined with the
        postings matching ``postings`` (the same rows, said of the postings table)."""
        tx_rows = connection.exec_driver_sql(
            _TX_SELECT + f"WHERE {transactions} ORDER BY seq", params
        ).all()
        posting_rows = connection.exec_driver_sql(
            _POSTING_SELECT + f"WHERE {postings} ORDER BY seq, idx", params
        ).all()
        return _merge(iter(tx_rows), iter(posting_rows))

    def transaction_by_key(self, key: str) -> TxRecord | None:
        """The committed transaction with idempotency key ``key``, if any."""
        with self.read() as connection:
            row = connection.exec_driver_sql(
                self._sql("SELECT seq FROM transactions WHERE key = ?"), (key,)
            ).first()
            return None if row is None else self._transactions(connection, [row[0]])[row[0]]

    def iter_transactions(self, batch: int = 10_000) -> Iterator[TxRecord]:
        """Every transaction in stored order (by sequence), streamed."""
        with self.read() as connection:
            # Two ordered scans merged here: much cheaper than a join on millions of rows.
            yield from _merge(
                self._stream(connection, _TX_SELECT + "ORDER BY seq", batch, "ledger_tx"),
                self._stream(connection, _POSTING_SELECT + "ORDER BY seq, idx", batch, "ledger_p"),
            )

    def _stream(self, connection: Connection, sql: str, batch: int, name: str) -> Iterator[Any]:
        """Rows as plain driver tuples, fetched ``batch`` at a time (a server-side cursor on
        PostgreSQL): replay reads millions of rows and SQLAlchemy's row objects would
        dominate its cost."""
        driver = connection.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor(name=name) if self.postgres else driver.cursor()
        try:
            cursor.execute(sql)
            while rows := cursor.fetchmany(batch):
                yield from rows
        finally:
            cursor.close()

    def balance(self, account: str, asset: str, at_seq: int | None = None) -> tuple[int, int]:
        """``(balance, seq)``: the balance after the account's last posting at or before
        ``at_seq`` (default: now) and the sequence that balance is as of."""
        with self.read() as connection:
            head = self._read_head(connection).seq
            as_of = head if at_seq is None else min(at_seq, head)
            if at_seq is not None and at_seq < 0:
                raise NotFound(f"sequence {at_seq} does not exist")
            if at_seq is not None and at_seq > head:
                raise NotFound(f"sequence {at_seq} is beyond the chain head {head}")
            row = connection.exec_driver_sql(
                self._sql(
                    "SELECT balance_after FROM postings WHERE account = ? AND asset = ? "
                    "AND seq <= ? ORDER BY seq DESC LIMIT 1"
                ),
                (account, asset, as_of),
            ).first()
            # System and mirror accounts always exist (at zero until their first posting).
            unknown = row is None and account_kind(account) not in _ALWAYS_OPEN
            if unknown and not self._account_exists(connection, account):
                raise NotFound(f"unknown account {account}: it has never received funds")
            return (row[0] if row else 0), as_of

    def _account_exists(self, connection: Connection, account: str) -> bool:
        return (
            connection.exec_driver_sql(
                self._sql("SELECT 1 FROM accounts WHERE id = ?"), (account,)
            ).first()
            is not None
        )

    def history(self, account: str, asset: str) -> list[StatementLine]:
        """Every posting of ``account`` in ``asset``, oldest first."""
        with self.read() as connection:
            if not self._account_exists(connection, account):
                raise NotFound(f"unknown account {account}: it has never received funds")
            rows = connection.exec_driver_sql(
                self._sql(
                    "SELECT p.seq, t.kind, t.key, t.recorded_at, t.effective_at, p.amount, "
                    "p.balance_after FROM postings p JOIN transactions t ON t.seq = p.seq "
                    "WHERE p.account = ? AND p.asset = ? ORDER BY p.seq"
                ),
                (account, asset),
            ).all()
            others: dict[int, list[str]] = {}
            for seq, other in connection.exec_driver_sql(
                self._sql(
                    "SELECT o.seq, o.account FROM postings o JOIN postings p ON p.seq = o.seq "
                    "WHERE p.account = ? AND p.asset = ? AND o.account <> ? ORDER BY o.seq, o.idx"
                ),
                (account, asset, account),
            ):
                seen = others.setdefault(seq, [])
                if other not in seen:  # a fill touches a counterparty in several assets
                    seen.append(other)
        return [
            StatementLine(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(others.get(r[0], ())))
            for r in rows
        ]

    def current_balances(self) -> dict[tuple[str, str], int]:
        """The ``balances`` projection as stored."""
        with self.read() as connection:
            rows = connection.exec_driver_sql("SELECT account, asset, balance FROM balances")
            return {(r[0], r[1]): r[2] for r in rows}

    def current_versions(self) -> dict[str, int]:
        """The account versions as stored."""
        with self.read() as connection:
            rows = connection.exec_driver_sql("SELECT id, version FROM accounts")
            return {r[0]: r[1] for r in rows}

    def balances_at(self, seq: int) -> list[tuple[str, str, int]]:
        """Every ``(account, asset, balance)`` as of sequence ``seq``."""
        with self.read() as connection:
            rows = connection.exec_driver_sql(
                self._sql(
                    "SELECT p.account, p.asset, p.balance_after FROM postings p JOIN ("
                    " SELECT account, asset, MAX(seq) AS seq FROM postings WHERE seq <= ?"
                    " GROUP BY account, asset) m"
                    " ON p.account = m.account AND p.asset = m.asset AND p.seq = m.seq"
                ),
                (seq,),
            )
            return [(r[0], r[1], r[2]) for r in rows]

    def _last_block(self, connection: Connection) -> BlockHeader | None:
        row = connection.execute(_BLOCKS.order_by(BlockRow.number.desc()).limit(1)).first()
        return None if row is None else _header(row)

    def block(self, number: int | None = None) -> BlockHeader:
        """Block ``number`` (default: the newest)."""
        with self.read() as connection:
            if number is None:
                header = self._last_block(connection)
                if header is None:
                    raise NotFound("no block has been sealed yet: run `ledger seal`")
                return header
            row = connection.execute(_BLOCKS.where(BlockRow.number == number)).first()
            if row is None:
                raise NotFound(f"no block number {number}")
            return _header(row)

    def iter_blocks(self) -> Iterator[tuple[BlockHeader, bytes, bytes]]:
        """Every stored header with the hash and operator signature stored beside it."""
        with self.read() as connection:
            for row in connection.execute(_BLOCKS.order_by(BlockRow.number)):
                yield _header(row), bytes(row.hash), bytes(row.signature or b"")


def _is_user_action(request: TxRequest) -> bool:
    return request.auth is not None and request.auth.scheme == USER


def _check_same_payload(key: str, stored: bytes, digest: bytes, where: str) -> None:
    if stored != digest:
        raise IdempotencyConflict(
            f"idempotency key {key!r} was already used for a different transaction "
            f"({where}); use a new key for a new transaction"
        )


def _block_columns(header: BlockHeader) -> Mapping[str, Any]:
    return {
        "number": header.number,
        "first_seq": header.first_seq,
        "last_seq": header.last_seq,
        "sealed_at": header.sealed_at,
        "leaf_count": header.leaf_count,
        "prev_block_hash": header.prev_block_hash,
        "tx_head_hash": header.tx_head_hash,
        "state_root": header.state_root,
        "withdrawal_root": header.withdrawal_root,
    }


def _header(row: Any) -> BlockHeader:
    return BlockHeader(
        number=row.number,
        first_seq=row.first_seq,
        last_seq=row.last_seq,
        sealed_at=row.sealed_at,
        leaf_count=row.leaf_count,
        prev_block_hash=bytes(row.prev_block_hash),
        tx_head_hash=bytes(row.tx_head_hash),
        state_root=bytes(row.state_root),
        withdrawal_root=bytes(row.withdrawal_root),
    )


def _merge(transactions: Iterator[Any], postings: Iterator[Any]) -> Iterator[TxRecord]:
    """Join transaction rows with their posting rows, both ordered by sequence. Postings
    whose transaction row is missing come out as a record of their own (key
    ``<orphan postings>``, zero hashes), so replay flags them at their sequence."""
    pending = next(postings, None)
    for row in transactions:
        while pending is not None and pending[0] < row[0]:
            pending = yield from _orphans(pending, postings)
        legs = []
        while pending is not None and pending[0] == row[0]:
            legs.append(PostingRecord(pending[2], pending[3], pending[4], pending[5], pending[6]))
            pending = next(postings, None)
        yield _record(row, legs)
    while pending is not None:
        pending = yield from _orphans(pending, postings)


def _orphans(first: Any, postings: Iterator[Any]) -> Generator[TxRecord, None, Any]:
    legs = [PostingRecord(first[2], first[3], first[4], first[5], first[6])]
    pending = next(postings, None)
    while pending is not None and pending[0] == first[0]:
        legs.append(PostingRecord(pending[2], pending[3], pending[4], pending[5], pending[6]))
        pending = next(postings, None)
    zero = b"\x00" * 32
    yield TxRecord(
        first[0], "", "<orphan postings>", 0, 0, "{}", None, tuple(legs), zero, zero, zero
    )
    return pending


def _record(row: tuple[Any, ...], legs: list[PostingRecord]) -> TxRecord:
    return TxRecord(
        seq=row[0],
        kind=row[1],
        key=row[2],
        effective_at=row[3],
        recorded_at=row[4],
        metadata=row[5],
        reverses=row[6],
        postings=tuple(legs),
        digest=bytes(row[7]),
        prev_hash=bytes(row[8]),
        hash=bytes(row[9]),
    )
