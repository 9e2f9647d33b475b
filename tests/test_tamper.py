"""Tampering with the database directly, as an attacker with database access would, is caught
by ``Ledger.audit()``: it reports ``ok == False`` and names the first divergent sequence (or
block) with a meaningful problem text. The append-only guards themselves are tested too.

The attacker first disables the guards: on SQLite by dropping the triggers (and re-creating
them afterwards), on PostgreSQL with ``SET LOCAL session_replication_role = replica`` (skips
ordinary and constraint triggers) or ``ALTER TABLE ... DISABLE TRIGGER ALL``.

A fresh PostgreSQL database costs most of a second, so each test runs a table of cases on one
ledger: tamper, audit, check, then restore every table from a snapshot (and check that the
restored ledger audits clean again). A failing case is reported by name; the others still run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple

import pytest
from sqlalchemy import Table, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ledger import AuditReport, Ledger
from ledger.core import operations
from ledger.core.encoding import ZERO_HASH, chain_hash, encode_tx
from ledger.core.journal import ChainHead, Journal, Posting, PostingRecord, TxRecord, TxRequest
from ledger.store.database import make_engine
from ledger.store.schema import Base
from tests.conftest import ALICE, BOB, CAROL

DAVE = "0x" + "d4" * 20
BRIDGE = "system:bridge"
UNIT = 1_000_000  # one USDC in base units
HASH = "stored hash does not match the transaction's contents"
BLOCK_HASH = "stored block hash does not match the header fields"
GUARDED_TABLES = ("transactions", "postings", "blocks")
ALL_TABLES = (*GUARDED_TABLES, "balances", "accounts", "chain_head")
SQLITE_TRIGGERS = {f"{t}_no_{action}" for t in GUARDED_TABLES for action in ("update", "delete")}

Method = Literal["replica", "disable"]


def u(usdc: int) -> int:
    """Whole USDC in base units."""
    return usdc * UNIT


class StepClock:
    """A deterministic clock: every call is 1 ms later."""

    def __init__(self, start: int = 1_767_225_600_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1_000
        return self.now


# The ledger every test tampers with. Block 1 covers 1..5, block 2 covers 6..9, 10..11 unsealed.
#   1 deposit ALICE 100            6 withdraw ALICE 20
#   2 deposit BOB 50               7 transfer CAROL -> ALICE 2
#   3 transfer ALICE -> BOB 10     8 reversal of 3 (BOB -> ALICE 10)
#   4 transfer BOB -> CAROL 5 }    9 deposit CAROL 7
#   5 deposit CAROL 1         } one batch      10 transfer ALICE -> CAROL 1
#                                              11 withdraw BOB 1
# Postings: a transfer is (source -x, target +x); a deposit (bridge -x, user +x); a
# withdrawal (user -x, bridge +x); a reversal negates the original's legs in order.
FINAL = {ALICE: 81, BOB: 44, CAROL: 12, BRIDGE: -137}


def build(url: str) -> None:
    with Ledger(url, clock=StepClock()) as book:
        book.deposit(ALICE, "100", key="dep-alice")
        book.deposit(BOB, "50", key="dep-bob")
        book.transfer(ALICE, BOB, "10", key="t-3")
        book.submit(
            [
                operations.transfer(BOB, CAROL, u(5), "t-4"),
                operations.deposit(CAROL, u(1), "dep-carol"),
            ]
        )
        assert (book.seal().first_seq, book.block().last_seq) == (1, 5)
        book.withdraw(ALICE, "20", key="w-6")
        book.transfer(CAROL, ALICE, "2", key="t-7")
        book.reverse(3, reason="wrong recipient", key="rev-8")
        book.deposit(CAROL, "7", key="dep-9")
        assert (book.seal().first_seq, book.block().last_seq) == (6, 9)
        book.transfer(ALICE, CAROL, "1", key="t-10")
        book.withdraw(BOB, "1", key="w-11")
        assert book.store.head().seq == 11
        balances = book.store.current_balances()
        assert {account: units // UNIT for (account, _), units in balances.items()} == FINAL
        report = book.audit()
        assert report.ok, report.divergence
        assert (report.transactions, report.blocks) == (11, 2)


@pytest.fixture
def url(db_url: str) -> str:
    """The ledger above, on each store."""
    build(db_url)
    return db_url


# ---------------------------------------------------------------------- database access
def is_postgres(url: str) -> bool:
    return url.startswith("postgres")


@contextmanager
def connect(url: str) -> Iterator[Connection]:
    """A plain connection in one database transaction, committed on exit."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        engine.dispose()


@contextmanager
def attacker(url: str, method: Method = "replica") -> Iterator[Connection]:
    """Like :func:`connect`, with the guards off; they are back on when it commits."""
    with connect(url) as db:
        triggers: list[str] = []
        if not is_postgres(url):
            rows = db.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
            found = dict(rows.tuples().all())
            assert set(found) == SQLITE_TRIGGERS
            for name, sql in sorted(found.items()):
                db.exec_driver_sql(f"DROP TRIGGER {name}")
                triggers.append(sql)
        elif method == "replica":
            db.exec_driver_sql("SET LOCAL session_replication_role = replica")
        else:
            for table in GUARDED_TABLES:
                db.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
        yield db
        for sql in triggers:
            db.exec_driver_sql(sql)
        if is_postgres(url) and method == "disable":
            for table in GUARDED_TABLES:
                db.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER ALL")


def run(db: Connection, sql: str, **params: Any) -> int:
    """Execute one statement with named parameters; the number of rows it affected."""
    if params:
        marker = "%({})s" if is_postgres(str(db.engine.url)) else ":{}"
        sql = sql.format(**{name: marker.format(name) for name in params})
    return db.exec_driver_sql(sql, params if params else ()).rowcount


def audit(url: str) -> AuditReport:
    with Ledger(url) as book:
        return book.audit()


Snapshot = dict[str, list[tuple[Any, ...]]]


def _table(name: str) -> Table:
    table = Base.metadata.tables[name]
    assert isinstance(table, Table)
    return table


def snapshot(url: str) -> Snapshot:
    """Every row of every ledger table, in primary-key order."""
    with connect(url) as db:
        return {
            name: [
                tuple(row)
                for row in db.execute(
                    select(_table(name)).order_by(*_table(name).primary_key.columns)
                )
            ]
            for name in ALL_TABLES
        }


def restore(url: str, saved: Snapshot) -> None:
    with attacker(url) as db:
        for name, rows in saved.items():
            table = _table(name)
            db.execute(table.delete())
            columns = [column.name for column in table.columns]
            db.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])


def insert_tx(db: Connection, tx: TxRecord) -> None:
    """INSERT one transaction row and its posting rows."""
    run(
        db,
        "INSERT INTO transactions (seq, key, kind, effective_at, recorded_at, metadata, reverses,"
        " digest, prev_hash, hash) VALUES ({seq}, {key}, {kind}, {effective_at}, {recorded_at},"
        " {metadata}, {reverses}, {digest}, {prev_hash}, {hash})",
        **{k: v for k, v in tx._asdict().items() if k != "postings"},
    )
    for idx, p in enumerate(tx.postings):
        run(
            db,
            "INSERT INTO postings (seq, idx, account, asset, amount, balance_after, version) "
            "VALUES ({seq}, {idx}, {account}, {asset}, {amount}, {balance_after}, {version})",
            seq=tx.seq,
            idx=idx,
            **p._asdict(),
        )


# ---------------------------------------------------------------------- cases
Tamper = Callable[[str], None]


class Case(NamedTuple):
    """One tampering and what the audit must say about it."""

    name: str
    tamper: Tamper
    seq: int | None = None  # the divergence names this sequence,
    block: int | None = None  # or this block (neither: the final-state check)
    problems: tuple[str, ...] = ()  # reported verbatim (in any order)
    only: bool = False  # ... and nothing else
    prefixes: tuple[str, ...] = ()  # some problem starts with each of these
    absent: str | None = None  # no problem mentions this


def sql(*statements: str, method: Method = "replica", guards: bool = False) -> Tamper:
    """Tampering by SQL statements (with the guards off unless ``guards``); each must touch
    at least one row."""

    def tamper(url: str) -> None:
        with connect(url) if guards else attacker(url, method) as db:
            for statement in statements:
                assert run(db, statement) > 0, f"no row touched by: {statement}"

    return tamper


def then(first: Tamper, check: Callable[[Ledger], None]) -> Tamper:
    """``first``, then a check that the tampering took visible effect."""

    def tamper(url: str) -> None:
        first(url)
        with Ledger(url) as book:
            check(book)

    return tamper


def expect(case: Case, report: AuditReport) -> None:
    assert not report.ok
    divergence = report.divergence
    assert divergence is not None
    assert (divergence.seq, divergence.block) == (case.seq, case.block), divergence
    where = "final state"
    if case.seq is not None:
        where = f"seq {case.seq}"
        assert report.head_seq == case.seq  # replay stopped at the first divergence
    if case.block is not None:
        where = f"block {case.block}"
    problems = divergence.problems
    assert divergence.describe() == f"divergence at {where}: " + "; ".join(problems)
    assert report.to_json()["divergence"]["problems"] == list(problems)
    for problem in case.problems:
        assert problem in problems
    if case.only:
        assert sorted(problems) == sorted(case.problems)
    for prefix in case.prefixes:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    if case.absent is not None:
        assert not any(case.absent in p for p in problems), problems


def check_cases(url: str, cases: Sequence[Case]) -> None:
    pristine = snapshot(url)
    failures: list[str] = []
    for case in cases:
        case.tamper(url)
        report = audit(url)
        try:
            expect(case, report)
        except AssertionError as exc:
            failures.append(f"[{case.name}] {report.divergence}\n{exc}")
        restore(url, pristine)
        assert snapshot(url) == pristine
        clean = audit(url)
        assert clean.ok, f"restoring after [{case.name}] left {clean.divergence}"
    assert not failures, "\n\n".join(failures)


# ---------------------------------------------------------------------- (a) edited amounts
EDITED_AMOUNTS = [
    Case(
        "both legs of seq 7 move 3 instead of 2: still zero-sum, the hash gives it away",
        sql(
            f"UPDATE postings SET amount = {-u(3)} WHERE seq = 7 AND idx = 0",
            f"UPDATE postings SET amount = {u(3)} WHERE seq = 7 AND idx = 1",
        ),
        seq=7,
        problems=(
            HASH,
            f"{CAROL} USDC: stored balance_after {u(4)}, replay {u(3)}",
            f"{ALICE} USDC: stored balance_after {u(72)}, replay {u(73)}",
        ),
        absent="sum to zero",
    ),
    Case(
        "both legs and their balance_after edited consistently: only the hash is left",
        sql(
            f"UPDATE postings SET amount = {-u(3)}, balance_after = {u(3)} "
            "WHERE seq = 7 AND idx = 0",
            f"UPDATE postings SET amount = {u(3)}, balance_after = {u(73)} "
            "WHERE seq = 7 AND idx = 1",
        ),
        seq=7,
        problems=(HASH,),
        only=True,
    ),
    Case(
        "one leg of seq 3 debits ALICE 9 but BOB is still credited 10",
        sql(f"UPDATE postings SET amount = {-u(9)} WHERE seq = 3 AND idx = 0", method="disable"),
        seq=3,
        problems=(
            f"postings do not sum to zero: {{'USDC': {u(1)}}}",
            HASH,
            f"{ALICE} USDC: stored balance_after {u(90)}, replay {u(91)}",
        ),
    ),
    Case(
        "edits at seq 10, 3 and 6: the first one (3) is named",
        sql(
            "UPDATE postings SET amount = amount + 1 WHERE seq = 10 AND idx = 1",
            "UPDATE postings SET amount = amount + 1 WHERE seq = 3 AND idx = 1",
            """UPDATE transactions SET metadata = '{"memo":"x"}' WHERE seq = 6""",
        ),
        seq=3,
        problems=("postings do not sum to zero: {'USDC': 1}",),
    ),
    Case(
        "the kind of seq 10 edited (the hash covers every transaction field)",
        sql("UPDATE transactions SET kind = 'deposit' WHERE seq = 10"),
        seq=10,
        problems=(HASH,),
        only=True,
    ),
]


def test_edited_amounts(url: str) -> None:
    check_cases(url, EDITED_AMOUNTS)


# ---------------------------------------------------------------------- (b) deleted rows
DELETED_ROWS = [
    Case(
        "transaction 6 deleted with its postings (the first of block 2)",
        sql("DELETE FROM postings WHERE seq = 6", "DELETE FROM transactions WHERE seq = 6"),
        seq=7,
        problems=(
            "expected sequence 6, found 7 (missing or reordered row)",
            "prev_hash does not match the hash of sequence 5",
        ),
    ),
    Case(
        "transaction 3 deleted with its postings, triggers disabled by ALTER TABLE",
        sql(
            "DELETE FROM postings WHERE seq = 3",
            "DELETE FROM transactions WHERE seq = 3",
            method="disable",
        ),
        seq=4,
        problems=("expected sequence 3, found 4 (missing or reordered row)",),
    ),
    Case(
        "the newest transaction (11) deleted: the projections still remember it",
        sql("DELETE FROM postings WHERE seq = 11", "DELETE FROM transactions WHERE seq = 11"),
        problems=(
            f"balance of {BOB} USDC: stored {u(44)}, replay {u(45)}",
            "chain head: stored seq 11, replay seq 10",
        ),
    ),
    Case(
        "one posting deleted: CAROL's credit leg of seq 4",
        sql("DELETE FROM postings WHERE seq = 4 AND idx = 1", method="disable"),
        seq=4,
        problems=(f"postings do not sum to zero: {{'USDC': {-u(5)}}}", HASH),
    ),
]


def test_deleted_rows(url: str) -> None:
    check_cases(url, DELETED_ROWS)


# ---------------------------------------------------------------------- (c) reordered rows
def _swap(table: str, a: int, b: int) -> tuple[str, str, str]:
    parked = -1_000 - a  # primary keys are unique: park one side first
    return (
        f"UPDATE {table} SET seq = {parked} WHERE seq = {a}",
        f"UPDATE {table} SET seq = {a} WHERE seq = {b}",
        f"UPDATE {table} SET seq = {b} WHERE seq = {parked}",
    )


def _seq_6_is_t7(book: Ledger) -> None:
    assert book.transaction(6).key == "t-7" and book.transaction(7).key == "w-6"


REORDERED_ROWS = [
    Case(
        "transactions 6 and 7 (and their postings) swap sequence numbers",
        then(sql(*_swap("postings", 6, 7), *_swap("transactions", 6, 7)), _seq_6_is_t7),
        seq=6,
        problems=("prev_hash does not match the hash of sequence 5", HASH),
    ),
    Case(
        "transactions 9 and 10 swap across the block 2 boundary",
        sql(*_swap("postings", 9, 10), *_swap("transactions", 9, 10)),
        seq=9,
        problems=("prev_hash does not match the hash of sequence 8", HASH),
    ),
    Case(
        "the two legs of seq 10 swap places: same amounts, different order",
        sql(
            "UPDATE postings SET idx = 7 WHERE seq = 10 AND idx = 0",
            "UPDATE postings SET idx = 0 WHERE seq = 10 AND idx = 1",
            "UPDATE postings SET idx = 1 WHERE seq = 10 AND idx = 7",
        ),
        seq=10,
        problems=(HASH,),
        only=True,
    ),
]


def test_reordered_rows(url: str) -> None:
    check_cases(url, REORDERED_ROWS)


# ---------------------------------------------------------------------- (d) edited state
def _final(statement: str, problem: str) -> Case:
    """A projection edit (no trigger to disable) found by the final-state check."""
    return Case(statement, sql(statement, guards=True), problems=(problem,), only=True)


EDITED_STATE = [
    _final(
        f"UPDATE balances SET balance = balance + 1 WHERE account = '{BOB}'",
        f"balance of {BOB} USDC: stored {u(44) + 1}, replay {u(44)}",
    ),
    _final(
        f"DELETE FROM balances WHERE account = '{CAROL}'",
        f"balance of {CAROL} USDC: stored None, replay {u(12)}",
    ),
    _final(
        f"INSERT INTO balances (account, asset, balance) VALUES ('{DAVE}', 'USDC', 5)",
        f"balance of {DAVE} USDC: stored 5, replay None",
    ),
    _final(
        f"UPDATE accounts SET version = 99 WHERE id = '{ALICE}'",
        f"version of {ALICE}: stored 99, replay 6",
    ),
    _final("UPDATE chain_head SET seq = 10", "chain head: stored seq 10, replay seq 11"),
    Case(
        "BOB's balance_after at seq 3 one unit too high",
        sql("UPDATE postings SET balance_after = balance_after + 1 WHERE seq = 3 AND idx = 1"),
        seq=3,
        problems=(f"{BOB} USDC: stored balance_after {u(60) + 1}, replay {u(60)}", HASH),
    ),
    Case(
        "BOB's account version at seq 8 edited",
        sql("UPDATE postings SET version = 40 WHERE seq = 8 AND idx = 1"),
        seq=8,
        problems=(f"{BOB}: stored version 40, replay 4", HASH),
    ),
]


def test_edited_state(url: str) -> None:
    check_cases(url, EDITED_STATE)


# ---------------------------------------------------------------------- inserted rows
def _unbalanced_seq_12(url: str) -> TxRecord:
    """Transaction 12, correctly chained onto 11 with correct balances-after and versions,
    crediting ALICE 5 USDC but debiting the bridge only 4."""
    with Ledger(url) as book:
        head = book.store.head()
        versions = book.store.current_versions()
        balances = book.store.current_balances()
    legs = tuple(
        PostingRecord(account, "USDC", amount, balances[(account, "USDC")] + amount, version + 1)
        for account, amount, version in [
            (BRIDGE, -u(4), versions[BRIDGE]),
            (ALICE, u(5), versions[ALICE]),
        ]
    )
    at = head.recorded_at + 1
    fields = (12, "deposit", "forged-12", at, at, "{}", None)
    hash_ = chain_hash(head.hash, encode_tx(*fields, legs))
    return TxRecord(*fields, legs, ZERO_HASH, head.hash, hash_)


def _insert_unbalanced(url: str) -> None:
    tx = _unbalanced_seq_12(url)
    with attacker(url) as db:
        insert_tx(db, tx)


def _orphans(seq: int) -> Tamper:
    """A plain INSERT (no guard disabled; balanced, so the PostgreSQL trigger accepts it) of
    postings giving DAVE 1000 USDC under a sequence that has no transaction row."""
    return sql(
        *(
            f"INSERT INTO postings (seq, idx, account, asset, amount, balance_after, version) "
            f"VALUES ({seq}, {idx}, '{account}', 'USDC', {amount}, {amount}, 1)"
            for idx, (account, amount) in enumerate([(DAVE, u(1000)), (BRIDGE, -u(1000))])
        ),
        guards=True,
    )


def _dave_is_rich(book: Ledger) -> None:
    assert book.balance(DAVE).units == u(1000)  # the forged money shows in balance()


INSERTED_ROWS = [
    Case(
        "a forged, correctly chained, unbalanced transaction 12 (zero-sum trigger skipped)",
        _insert_unbalanced,
        seq=12,
        problems=(f"postings do not sum to zero: {{'USDC': {u(1)}}}",),
        only=True,
    ),
    # Committed revision 79b9c6f read postings through `transactions LEFT JOIN postings` and
    # never saw orphan postings: its audit said ok while balance(DAVE) showed 1000 USDC.
    Case(
        "orphan postings at seq 0, before genesis",
        then(_orphans(0), _dave_is_rich),
        seq=0,
        problems=("expected sequence 1, found 0 (missing or reordered row)",),
    ),
    Case(
        "orphan postings at seq 12, beyond the chain head",
        _orphans(12),
        seq=12,
        problems=("prev_hash does not match the hash of sequence 11",),
    ),
]


def test_inserted_rows(url: str) -> None:
    check_cases(url, INSERTED_ROWS)


# ---------------------------------------------------------------------- blocks
def _forge_block(number: int, rehash: bool, **changes: Any) -> Tamper:
    """Edit header fields of a stored block, storing either the old hash or a recomputed one."""

    def tamper(url: str) -> None:
        with Ledger(url) as book:
            original = book.block(number)
        forged = dataclasses.replace(original, **changes)
        stored_hash = forged.hash if rehash else original.hash
        assert forged.hash != original.hash
        with attacker(url) as db:
            assigns = ", ".join(f"{name} = {{{name}}}" for name in changes)
            updated = run(
                db,
                f"UPDATE blocks SET {assigns}, hash = {{hash}} WHERE number = {number}",
                **changes,
                hash=stored_hash,
            )
            assert updated == 1

    return tamper


def _rewrite_history(seq: int, amount: int) -> Tamper:
    """Make the first leg of ``seq`` ``amount`` (the second its opposite) and recompute every
    later balance_after, version and hash, and the projections, exactly as the ledger would
    have: a self-consistent forged journal. Only the sealed blocks still disagree."""

    def tamper(url: str) -> None:
        with Ledger(url) as book:
            records = list(book.store.iter_transactions())
        journal = Journal(ChainHead(), {}, {})
        forged: list[TxRecord] = []
        for tx in records:
            legs = tuple(Posting(p.account, p.asset, p.amount) for p in tx.postings)
            if tx.seq == seq:
                legs = (legs[0]._replace(amount=amount), legs[1]._replace(amount=-amount))
            request = TxRequest(tx.kind, tx.key, legs, tx.metadata, tx.effective_at, tx.reverses)
            record = journal.apply(request, tx.digest, tx.recorded_at)
            assert record.recorded_at == tx.recorded_at
            assert (record.hash == tx.hash) is (tx.seq < seq)
            forged.append(record)
        with attacker(url) as db:
            assert run(db, f"DELETE FROM postings WHERE seq >= {seq}")
            assert run(db, f"DELETE FROM transactions WHERE seq >= {seq}")
            for tx in forged[seq - 1 :]:
                insert_tx(db, tx)
            for (account, asset), balance in journal.balances.items():
                run(
                    db,
                    "UPDATE balances SET balance = {b} WHERE account = {a} AND asset = {s}",
                    b=balance,
                    a=account,
                    s=asset,
                )
            for account, version in journal.versions.items():
                run(db, "UPDATE accounts SET version = {v} WHERE id = {a}", v=version, a=account)
            run(db, "UPDATE chain_head SET hash = {h} WHERE id = 1", h=journal.head.hash)
        report = audit(url)
        assert report.transactions == 9  # every transaction up to block 2 verifies alone

    return tamper


def _alice_has_82(book: Ledger) -> None:
    assert book.balance(ALICE).units == u(82)  # the forgery is live


TAMPERED_BLOCKS = [
    Case(
        "block 1's state root replaced, stale block hash left",
        _forge_block(1, rehash=False, state_root=b"\xff" * 32),
        block=1,
        problems=(BLOCK_HASH,),
        prefixes=(f"state_root: stored 0x{'ff' * 8}…, replay 0x",),
    ),
    Case(
        "block 1's state root replaced and its hash recomputed",
        _forge_block(1, rehash=True, state_root=b"\xff" * 32),
        block=1,
        prefixes=(f"state_root: stored 0x{'ff' * 8}…, replay 0x",),
        absent="block hash",
    ),
    Case(
        "block 2's tx_head_hash replaced and its hash recomputed",
        _forge_block(2, rehash=True, tx_head_hash=b"\x01" * 32),
        block=2,
        prefixes=("tx_head_hash: stored 0x0101010101010101…, replay 0x",),
    ),
    Case(
        "block 1 deleted: block 2 is now the first",
        sql("DELETE FROM blocks WHERE number = 1"),
        block=2,
        problems=("number: stored 2, replay 1", "first_seq: stored 6, replay 1"),
    ),
    Case(
        "ALICE withdraws 19 not 20 at seq 6, every later row and projection recomputed",
        then(_rewrite_history(6, -u(19)), _alice_has_82),
        block=2,
        prefixes=("tx_head_hash: stored ", "state_root: stored "),
    ),
]


def test_tampered_blocks(url: str) -> None:
    check_cases(url, TAMPERED_BLOCKS)


# ---------------------------------------------------------------------- the guards
GUARDED = [
    ("UPDATE transactions SET kind = 'deposit' WHERE seq = 3", "UPDATE on transactions"),
    ("DELETE FROM transactions WHERE seq = 11", "DELETE on transactions"),
    ("UPDATE postings SET amount = amount + 1 WHERE seq = 3", "UPDATE on postings"),
    ("DELETE FROM postings WHERE seq = 11 AND idx = 1", "DELETE on postings"),
    ("UPDATE blocks SET state_root = hash WHERE number = 1", "UPDATE on blocks"),
    ("DELETE FROM blocks WHERE number = 2", "DELETE on blocks"),
]


def test_triggers_refuse_update_and_delete(url: str) -> None:
    before = snapshot(url)
    for statement, operation in GUARDED:
        refused = f"ledger journal is append-only: {operation} is forbidden"
        with pytest.raises(DBAPIError, match=refused), connect(url) as db:
            db.exec_driver_sql(statement)
    assert snapshot(url) == before
    assert audit(url).ok


@pytest.mark.postgres
def test_postgres_refuses_truncate(postgres_url: str) -> None:
    build(postgres_url)
    before = snapshot(postgres_url)
    for table in GUARDED_TABLES:
        refused = f"ledger journal is append-only: TRUNCATE on {table} is forbidden"
        with pytest.raises(DBAPIError, match=refused), connect(postgres_url) as db:
            db.exec_driver_sql(f"TRUNCATE {table} CASCADE")
    assert snapshot(postgres_url) == before


@pytest.mark.postgres
def test_postgres_refuses_unbalanced_postings_at_commit(postgres_url: str) -> None:
    build(postgres_url)
    before = snapshot(postgres_url)
    tx = _unbalanced_seq_12(postgres_url)
    engine = make_engine(postgres_url)
    with engine.connect() as db:
        db.begin()
        insert_tx(db, tx)  # the constraint trigger is deferred: every INSERT succeeds...
        count = db.exec_driver_sql("SELECT count(*) FROM postings WHERE seq = 12").scalar()
        assert count == 2
        with pytest.raises(DBAPIError, match="postings of transaction 12 do not sum to zero"):
            db.commit()  # ...and COMMIT refuses the whole transaction
    engine.dispose()
    assert snapshot(postgres_url) == before
    assert audit(postgres_url).ok


# ------------------------------------------------------------- the newest block and its roots
def test_deleted_newest_block_is_detected(url: str) -> None:
    with attacker(url) as db:
        assert run(db, "DELETE FROM blocks WHERE number = 2") == 1
    with Ledger(url) as book:
        assert book.block().number == 1
    report = audit(url)
    assert not report.ok, "block 2 vanished but the audit is clean"
    assert report.divergence is not None
    assert "chain head names block 2, the stored blocks end at 1" in report.divergence.problems


def test_forged_withdrawal_root_is_detected(url: str) -> None:
    _forge_block(2, rehash=True, withdrawal_root=b"\x77" * 32)(url)
    with Ledger(url) as book:
        assert book.block(2).withdrawal_root == b"\x77" * 32
        assert book.proof(ALICE).verify()[0]  # proofs against the forged header verify
    report = audit(url)
    assert not report.ok, "a non-zero withdrawal root passed the audit"
    assert report.divergence is not None and report.divergence.block == 2
    assert any("withdrawal_root" in p for p in report.divergence.problems)
