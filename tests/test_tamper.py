"""Tampering with the database directly, as an attacker with database access would, is caught
by ``Ledger.audit()``: it reports ``ok == False`` and names the first divergent sequence (or
block) with a meaningful problem text. The append-only guards themselves are tested too.

The attacker first disables the guards: on SQLite by dropping the triggers (and re-creating
them afterwards), on PostgreSQL with ``SET LOCAL session_replication_role = replica`` (skips
ordinary and constraint triggers) or ``ALTER TABLE ... DISABLE TRIGGER ALL``.

Every transaction is signed (user actions by the owner's wallet, system events and blocks by
the operator), and the audit re-verifies every signature: an edit the hash chain would not
betray (the hashes recomputed after it) still fails the signature it no longer matches, and
a forgery signed by a key that is not a registered operator is named as such.

A fresh PostgreSQL database costs most of a second, so each test runs a table of cases on one
ledger: tamper, audit, check, then restore every table from a snapshot (and check that the
restored ledger audits clean again). A failing case is reported by name; the others still run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple

import pytest
from sqlalchemy import Table, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ledger import AuditReport, Ledger
from ledger.core import envelopes, operations
from ledger.core.encoding import canonical_json, chain_hash, encode_tx
from ledger.core.journal import (
    ChainHead,
    Journal,
    Posting,
    PostingRecord,
    TxRecord,
    TxRequest,
)
from ledger.core.replay import request_of
from ledger.store.database import make_engine
from ledger.store.schema import Base
from ledger.wallet import Wallet
from tests.conftest import (
    ALICE,
    ALICE_WALLET,
    BOB,
    BOB_WALLET,
    CAROL,
    CAROL_WALLET,
    OPERATOR,
    WALLETS,
)
from tests.conftest import test_wallet as wallet_named

DAVE = "0x" + "d4" * 20
MALLORY_WALLET = wallet_named("mallory")  # a valid key, but never registered as an operator
MALLORY = MALLORY_WALLET.address
BRIDGE = "system:bridge"
WITHDRAWALS = "system:withdrawals"
UNIT = 1_000_000  # one USDC in base units
EXPIRY = 4_102_444_800  # 2100-01-01: the signed actions never expire in these tests
HASH = "stored hash does not match the transaction's contents"
BLOCK_HASH = "stored block hash does not match the header fields"
SIGNATURE = "signature check fails: "
L2_SIGNATURE = SIGNATURE + "the L2 signature does not verify for the signer's key"
OPERATOR_SIGNATURE = SIGNATURE + "the operator signature is by 0x"  # some other address
BLOCK_SEALER = "block sealed by 0x"  # ... an address that is not a registered operator
GUARDED_TABLES = ("transactions", "postings", "blocks")
AUTH_TABLES = ("operators", "wallets", "nonces", "settings")
ALL_TABLES = (*GUARDED_TABLES, "balances", "accounts", "chain_head", *AUTH_TABLES)
SQLITE_TRIGGERS = {f"{t}_no_{action}" for t in GUARDED_TABLES for action in ("update", "delete")}

Method = Literal["replica", "disable"]


def u(usdc: int) -> int:
    """Whole USDC in base units."""
    return usdc * UNIT


def unsigned(kind: str, key: str) -> str:
    """The problem of a transaction whose postings or key differ from what its envelope signed."""
    return f"{SIGNATURE}{kind} {key!r} is not what its envelope signed"


class StepClock:
    """A deterministic clock: every call is 1 ms later."""

    def __init__(self, start: int = 1_767_225_600_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1_000
        return self.now


# The ledger every test tampers with. Seq 1 is genesis (the operator key), 2..4 onboard ALICE,
# BOB and CAROL. Block 1 covers 1..9, block 2 covers 10..13, 14..15 unsealed. User actions are
# signed by their owner (key OWNER/NONCE), the rest by the operator:
#   5 deposit ALICE 100                    10 withdraw ALICE 20 (ALICE/2)
#   6 deposit BOB 50                       11 transfer CAROL -> ALICE 2 (CAROL/1)
#   7 transfer ALICE -> BOB 10 (ALICE/1)   12 reversal of 7 (BOB -> ALICE 10)
#   8 transfer BOB -> CAROL 5 (BOB/1) }    13 deposit CAROL 7
#   9 deposit CAROL 1                 } one batch      14 transfer ALICE -> CAROL 1 (ALICE/3)
#                                                      15 withdraw BOB 1 (BOB/2)
# Postings: a transfer is (source -x, target +x); a deposit (bridge -x, user +x); a
# withdrawal (user -x, pending withdrawals +x); a reversal negates the original's legs.
FINAL = {ALICE: 81, BOB: 44, CAROL: 12, BRIDGE: -158, WITHDRAWALS: 21}
NONCES = {ALICE: 3, BOB: 2, CAROL: 1}
T7, T8, W10, T11, T14, W15 = (
    f"{ALICE}/1",
    f"{BOB}/1",
    f"{ALICE}/2",
    f"{CAROL}/1",
    f"{ALICE}/3",
    f"{BOB}/2",
)


def build(url: str) -> None:
    with Ledger.init(url, operator=OPERATOR, clock=StepClock(), list_instruments=False) as book:
        for wallet in WALLETS.values():
            book.onboard(wallet)
        book.deposit(ALICE, "100", key="dep-alice")
        book.deposit(BOB, "50", key="dep-bob")
        book.transfer(ALICE, BOB, "10", wallet=ALICE_WALLET, nonce=1, expiry=EXPIRY)
        book.submit(
            [
                book.request_for(BOB_WALLET.transfer(BOB, CAROL, u(5), book.domain, 1, EXPIRY)),
                OPERATOR.sign_system(operations.deposit(CAROL, u(1), "dep-carol")),
            ]
        )
        assert (book.seal().first_seq, book.block().last_seq) == (1, 9)
        book.withdraw(ALICE, "20", wallet=ALICE_WALLET, nonce=2, expiry=EXPIRY)
        book.transfer(CAROL, ALICE, "2", wallet=CAROL_WALLET, nonce=1, expiry=EXPIRY)
        book.reverse(7, reason="wrong recipient", key="rev-12")
        book.deposit(CAROL, "7", key="dep-13")
        assert (book.seal().first_seq, book.block().last_seq) == (10, 13)
        book.transfer(ALICE, CAROL, "1", wallet=ALICE_WALLET, nonce=3, expiry=EXPIRY)
        book.withdraw(BOB, "1", wallet=BOB_WALLET, nonce=2, expiry=EXPIRY)
        assert book.store.head().seq == 15
        keys = [book.transaction(seq).key for seq in (7, 8, 10, 11, 14, 15)]
        assert keys == [T7, T8, W10, T11, T14, W15]
        balances = book.store.current_balances()
        assert {account: units // UNIT for (account, _), units in balances.items()} == FINAL
        assert book.store.auth_projection().nonces == NONCES
        report = book.audit()
        assert report.ok, report.divergence
        assert (report.transactions, report.blocks) == (15, 2)


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
        "both legs of seq 11 move 3 instead of 2: still zero-sum, the hash gives it away",
        sql(
            f"UPDATE postings SET amount = {-u(3)} WHERE seq = 11 AND idx = 0",
            f"UPDATE postings SET amount = {u(3)} WHERE seq = 11 AND idx = 1",
        ),
        seq=11,
        problems=(
            HASH,
            unsigned("transfer", T11),
            f"{CAROL} USDC: stored balance_after {u(4)}, replay {u(3)}",
            f"{ALICE} USDC: stored balance_after {u(72)}, replay {u(73)}",
        ),
        absent="sum to zero",
    ),
    Case(
        "both legs and their balance_after edited consistently: only the hash and the "
        "signature are left",
        sql(
            f"UPDATE postings SET amount = {-u(3)}, balance_after = {u(3)} "
            "WHERE seq = 11 AND idx = 0",
            f"UPDATE postings SET amount = {u(3)}, balance_after = {u(73)} "
            "WHERE seq = 11 AND idx = 1",
        ),
        seq=11,
        problems=(HASH, unsigned("transfer", T11)),
        only=True,
    ),
    Case(
        "one leg of seq 7 debits ALICE 9 but BOB is still credited 10",
        sql(f"UPDATE postings SET amount = {-u(9)} WHERE seq = 7 AND idx = 0", method="disable"),
        seq=7,
        problems=(
            f"postings do not sum to zero: {{'USDC': {u(1)}}}",
            HASH,
            unsigned("transfer", T7),
            f"{ALICE} USDC: stored balance_after {u(90)}, replay {u(91)}",
        ),
    ),
    Case(
        "edits at seq 14, 7 and 10: the first one (7) is named",
        sql(
            "UPDATE postings SET amount = amount + 1 WHERE seq = 14 AND idx = 1",
            "UPDATE postings SET amount = amount + 1 WHERE seq = 7 AND idx = 1",
            """UPDATE transactions SET metadata = '{"memo":"x"}' WHERE seq = 10""",
        ),
        seq=7,
        problems=("postings do not sum to zero: {'USDC': 1}",),
    ),
    Case(
        "the kind of seq 14 edited (the hash covers every transaction field; a deposit needs "
        "an operator signature)",
        sql("UPDATE transactions SET kind = 'deposit' WHERE seq = 14"),
        seq=14,
        problems=(
            HASH,
            SIGNATURE + "system event without a valid operator signature: 'operator'",
        ),
        only=True,
    ),
    Case(
        "a deposit's amount edited (both legs, balances consistent): the operator signature "
        "no longer matches",
        sql(
            f"UPDATE postings SET amount = {-u(8)}, balance_after = balance_after - {u(1)} "
            "WHERE seq = 13 AND idx = 0",
            f"UPDATE postings SET amount = {u(8)}, balance_after = balance_after + {u(1)} "
            "WHERE seq = 13 AND idx = 1",
        ),
        seq=13,
        problems=(HASH,),
        prefixes=(OPERATOR_SIGNATURE,),
    ),
]


def test_edited_amounts(url: str) -> None:
    check_cases(url, EDITED_AMOUNTS)


# ---------------------------------------------------------------------- (b) deleted rows
DELETED_ROWS = [
    Case(
        "transaction 10 deleted with its postings (the first of block 2)",
        sql("DELETE FROM postings WHERE seq = 10", "DELETE FROM transactions WHERE seq = 10"),
        seq=11,
        problems=(
            "expected sequence 10, found 11 (missing or reordered row)",
            "prev_hash does not match the hash of sequence 9",
        ),
    ),
    Case(
        "transaction 7 deleted with its postings, triggers disabled by ALTER TABLE",
        sql(
            "DELETE FROM postings WHERE seq = 7",
            "DELETE FROM transactions WHERE seq = 7",
            method="disable",
        ),
        seq=8,
        problems=("expected sequence 7, found 8 (missing or reordered row)",),
    ),
    Case(
        "the newest transaction (15) deleted: the projections still remember it",
        sql("DELETE FROM postings WHERE seq = 15", "DELETE FROM transactions WHERE seq = 15"),
        problems=(
            f"balance of {BOB} USDC: stored {u(44)}, replay {u(45)}",
            "chain head: stored seq 15, replay seq 14",
        ),
        prefixes=("nonces: stored ",),  # BOB's nonce 2 as well
    ),
    Case(
        "one posting deleted: CAROL's credit leg of seq 8",
        sql("DELETE FROM postings WHERE seq = 8 AND idx = 1", method="disable"),
        seq=8,
        problems=(f"postings do not sum to zero: {{'USDC': {-u(5)}}}", HASH),
    ),
    Case(
        "ALICE's onboarding (seq 2, a transaction without postings) deleted",
        sql("DELETE FROM transactions WHERE seq = 2"),
        seq=3,
        problems=(
            "expected sequence 2, found 3 (missing or reordered row)",
            "prev_hash does not match the hash of sequence 1",
        ),
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


def _seq_10_is_t11(book: Ledger) -> None:
    assert book.transaction(10).key == T11 and book.transaction(11).key == W10


REORDERED_ROWS = [
    Case(
        "transactions 10 and 11 (and their postings) swap sequence numbers",
        then(sql(*_swap("postings", 10, 11), *_swap("transactions", 10, 11)), _seq_10_is_t11),
        seq=10,
        problems=("prev_hash does not match the hash of sequence 9", HASH),
    ),
    Case(
        "transactions 13 and 14 swap across the block 2 boundary",
        sql(*_swap("postings", 13, 14), *_swap("transactions", 13, 14)),
        seq=13,
        problems=("prev_hash does not match the hash of sequence 12", HASH),
    ),
    Case(
        "the two legs of seq 14 swap places: same amounts, different order",
        sql(
            "UPDATE postings SET idx = 7 WHERE seq = 14 AND idx = 0",
            "UPDATE postings SET idx = 0 WHERE seq = 14 AND idx = 1",
            "UPDATE postings SET idx = 1 WHERE seq = 14 AND idx = 7",
        ),
        seq=14,
        problems=(HASH, unsigned("transfer", T14)),
        only=True,
    ),
]


def test_reordered_rows(url: str) -> None:
    check_cases(url, REORDERED_ROWS)


# ---------------------------------------------------------------------- (d) edited state
def _final(statement: str, problem: str) -> Case:
    """A projection edit (no trigger to disable) found by the final-state check."""
    return Case(statement, sql(statement, guards=True), problems=(problem,), only=True)


def _final_prefix(statement: str, prefix: str) -> Case:
    """Like :func:`_final` for a problem that prints a whole mapping (in no fixed order)."""
    return Case(statement, sql(statement, guards=True), prefixes=(prefix,), absent="balance")


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
    _final("UPDATE chain_head SET seq = 14", "chain head: stored seq 14, replay seq 15"),
    _final("DELETE FROM operators", f"operators: stored [], replay ['{OPERATOR.address}']"),
    # A lowered nonce would let an old signed action be accepted again.
    _final_prefix(f"UPDATE nonces SET nonce = 1 WHERE owner = '{ALICE}'", "nonces: stored "),
    _final_prefix(f"DELETE FROM wallets WHERE owner = '{CAROL}'", "onboarded keys: stored "),
    Case(
        "BOB's balance_after at seq 7 one unit too high",
        sql("UPDATE postings SET balance_after = balance_after + 1 WHERE seq = 7 AND idx = 1"),
        seq=7,
        problems=(f"{BOB} USDC: stored balance_after {u(60) + 1}, replay {u(60)}", HASH),
    ),
    Case(
        "BOB's account version at seq 12 edited",
        sql("UPDATE postings SET version = 40 WHERE seq = 12 AND idx = 1"),
        seq=12,
        problems=(f"{BOB}: stored version 40, replay 4", HASH),
    ),
]


def test_edited_state(url: str) -> None:
    check_cases(url, EDITED_STATE)


# ---------------------------------------------------------------------- inserted rows
def _forged_seq_16(url: str, bridge: int, signer: Wallet | None = OPERATOR) -> TxRecord:
    """Transaction 16, correctly chained onto 15 with correct balances-after and versions,
    crediting ALICE 5 USDC and debiting the bridge ``bridge`` (negative), signed as a
    deposit by ``signer`` (None: unsigned)."""
    with Ledger(url) as book:
        head = book.store.head()
        versions = book.store.current_versions()
        balances = book.store.current_balances()
    amounts = [(BRIDGE, bridge), (ALICE, u(5))]
    request = TxRequest("deposit", "forged-16", tuple(Posting(a, "USDC", x) for a, x in amounts))
    if signer is not None:
        request = signer.sign_system(request)
    legs = tuple(
        PostingRecord(account, "USDC", amount, balances[(account, "USDC")] + amount, version + 1)
        for account, amount, version in [(a, x, versions[a]) for a, x in amounts]
    )
    at = head.recorded_at + 1
    fields = (16, "deposit", "forged-16", at, at, request.metadata, None)
    hash_ = chain_hash(head.hash, encode_tx(*fields, legs))
    return TxRecord(*fields, legs, request.digest(), head.hash, hash_)


def _insert_forged(bridge: int, signer: Wallet | None = OPERATOR) -> Tamper:
    def tamper(url: str) -> None:
        tx = _forged_seq_16(url, bridge, signer)
        with attacker(url) as db:
            insert_tx(db, tx)

    return tamper


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
        "a forged, correctly chained, operator-signed, unbalanced transaction 16 (zero-sum "
        "trigger skipped)",
        _insert_forged(-u(4)),
        seq=16,
        problems=(f"postings do not sum to zero: {{'USDC': {u(1)}}}",),
        only=True,
    ),
    Case(
        "a forged, correctly chained, balanced deposit 16 signed by a key that is no operator",
        _insert_forged(-u(5), MALLORY_WALLET),
        seq=16,
        problems=(f"{SIGNATURE}{MALLORY} is not a registered operator key",),
        only=True,
    ),
    Case(
        "a forged, correctly chained, balanced deposit 16 without any signature",
        _insert_forged(-u(5), None),
        seq=16,
        problems=(SIGNATURE + "system event without a valid operator signature: 'auth'",),
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
        "orphan postings at seq 16, beyond the chain head",
        _orphans(16),
        seq=16,
        problems=("prev_hash does not match the hash of sequence 15",),
    ),
]


def test_inserted_rows(url: str) -> None:
    check_cases(url, INSERTED_ROWS)


# ---------------------------------------------------------------------- rewritten history
Change = Callable[[Ledger, TxRequest], TxRequest]


def _rewrite(seq: int, change: Change, verified: int | None = None) -> Tamper:
    """Replace the request of transaction ``seq`` by ``change(book, request)`` and recompute
    that transaction and every later balance_after, version and hash, and the projections,
    exactly as the ledger would have: a self-consistent forged journal whose hashes all
    verify. The authorisation (signer, nonce) of ``seq`` is the original's unless the
    changed request brings its own. ``verified``: how many transactions the audit must then
    pass before it finds a divergence."""

    def tamper(url: str) -> None:
        with Ledger(url) as book:
            records = list(book.store.iter_transactions())
            journal = Journal(ChainHead(), {}, {})
            forged: list[TxRecord] = []
            for tx in records:
                request = request_of(tx)
                auth = envelopes.auth_of(request, book.domain, book.l1_chain_id)
                request = request._replace(auth=auth)
                if tx.seq == seq:
                    request = change(book, request)
                    if request.auth is None:
                        request = request._replace(auth=auth)
                record = journal.apply(request, request.digest(), tx.recorded_at)
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
            for owner, nonce in journal.auth_state.nonces.items():
                run(db, "UPDATE nonces SET nonce = {n} WHERE owner = {o}", n=nonce, o=owner)
            run(db, "UPDATE chain_head SET hash = {h} WHERE id = 1", h=journal.head.hash)
        if verified is not None:
            assert audit(url).transactions == verified

    return tamper


def _metadata(edit: Callable[[dict[str, Any]], None]) -> Change:
    """Edit the parsed metadata of the request (its envelope or operator signature)."""

    def change(_book: Ledger, request: TxRequest) -> TxRequest:
        metadata = json.loads(request.metadata)
        edit(metadata)
        return request._replace(metadata=canonical_json(metadata))

    return change


def _carol_signs(amount: int) -> Change:
    """Seq 11's envelope swapped for one CAROL genuinely signed, same nonce, other amount;
    the postings stay as they were."""

    def change(book: Ledger, request: TxRequest) -> TxRequest:
        envelope = CAROL_WALLET.transfer(CAROL, ALICE, amount, book.domain, 1, EXPIRY)
        return request._replace(metadata=canonical_json({"auth": envelope}))

    return change


def _another_signature(book: Ledger, request: TxRequest) -> TxRequest:
    """CAROL's genuine signature of a different transfer (1 USDC to BOB) on seq 11."""
    other = CAROL_WALLET.transfer(CAROL, BOB, u(1), book.domain, 1, EXPIRY)
    metadata = json.loads(request.metadata)
    metadata["auth"]["signature"] = other["signature"]
    return request._replace(metadata=canonical_json(metadata))


def _resigned_by(wallet: Wallet) -> Change:
    """The system event re-signed by ``wallet`` (its own address in the signature)."""

    def change(_book: Ledger, request: TxRequest) -> TxRequest:
        metadata = json.loads(request.metadata)
        del metadata["auth"]
        bare = request._replace(metadata=canonical_json(metadata), auth=None)
        return wallet.sign_system(bare)._replace(auth=None)

    return change


def _onboarding_l2_signature_of(wallet: Wallet) -> Change:
    def change(book: Ledger, request: TxRequest) -> TxRequest:
        metadata = json.loads(request.metadata)
        metadata["auth"]["l2_signature"] = wallet.onboarding(book.domain)["l2_signature"]
        return request._replace(metadata=canonical_json(metadata))

    return change


def _alice_withdraws_19(book: Ledger, request: TxRequest) -> TxRequest:
    """ALICE's key re-signs her withdrawal at seq 10 (same nonce) for 19 instead of 20: a
    forgery by someone holding both the database and her key."""
    del request
    return book.request_for(ALICE_WALLET.withdraw(ALICE, u(19), book.domain, 2, EXPIRY))


def _alice_has_82(book: Ledger) -> None:
    assert book.balance(ALICE).units == u(82)  # the forgery is live


def _memo(metadata: dict[str, Any]) -> None:
    metadata["memo"] = "sent by the bridge"


SIGNATURES = [
    Case(
        "seq 11 carries CAROL's genuine signature of another transfer, hashes recomputed",
        _rewrite(11, _another_signature),
        seq=11,
        problems=(L2_SIGNATURE,),
        only=True,
    ),
    Case(
        "seq 11's envelope replaced by one CAROL signed for 3 USDC (postings still move 2)",
        _rewrite(11, _carol_signs(u(3))),
        seq=11,
        problems=(unsigned("transfer", T11),),
        only=True,
    ),
    Case(
        "a memo added to deposit 13's metadata beside the operator signature, hashes recomputed",
        _rewrite(13, _metadata(_memo)),
        seq=13,
        prefixes=(OPERATOR_SIGNATURE,),
        absent="hash",
    ),
    Case(
        "deposit 13 re-signed by a key that is no operator, hashes recomputed",
        _rewrite(13, _resigned_by(MALLORY_WALLET)),
        seq=13,
        problems=(f"{SIGNATURE}{MALLORY} is not a registered operator key",),
        only=True,
    ),
    Case(
        "ALICE's onboarding (seq 2) carries BOB's L2 signature, hashes recomputed",
        _rewrite(2, _onboarding_l2_signature_of(BOB_WALLET)),
        seq=2,
        problems=(L2_SIGNATURE,),
        only=True,
    ),
]


def test_tampered_signatures(url: str) -> None:
    check_cases(url, SIGNATURES)


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


def _block_signed_by(number: int, wallet: Wallet) -> Tamper:
    """Replace the operator signature of block ``number`` by ``wallet``'s of the same header."""

    def tamper(url: str) -> None:
        with Ledger(url) as book:
            signature = wallet.sign_block(book.block(number))
        with attacker(url) as db:
            statement = "UPDATE blocks SET signature = {s} WHERE number = {n}"
            assert run(db, statement, s=signature, n=number) == 1

    return tamper


def _block_signature_appended(number: int, extra: bytes) -> Callable[[str], None]:
    def tamper(url: str) -> None:
        with Ledger(url) as book:
            stored = {h.number: sig for h, _, sig in book.store.iter_blocks()}[number]
        with attacker(url) as db:
            statement = "UPDATE blocks SET signature = {s} WHERE number = {n}"
            assert run(db, statement, s=stored + extra, n=number) == 1

    return tamper


TAMPERED_BLOCKS = [
    Case(
        "block 1's state root replaced, stale block hash left",
        _forge_block(1, rehash=False, state_root=b"\xff" * 32),
        block=1,
        problems=(BLOCK_HASH,),
        prefixes=(f"state_root: stored 0x{'ff' * 8}…, replay 0x", BLOCK_SEALER),
    ),
    Case(
        "block 1's state root replaced and its hash recomputed",
        _forge_block(1, rehash=True, state_root=b"\xff" * 32),
        block=1,
        prefixes=(f"state_root: stored 0x{'ff' * 8}…, replay 0x", BLOCK_SEALER),
        absent="block hash",
    ),
    Case(
        "block 2's tx_head_hash replaced and its hash recomputed",
        _forge_block(2, rehash=True, tx_head_hash=b"\x01" * 32),
        block=2,
        prefixes=("tx_head_hash: stored 0x0101010101010101…, replay 0x", BLOCK_SEALER),
    ),
    Case(
        "block 1 deleted: block 2 is now the first",
        sql("DELETE FROM blocks WHERE number = 1"),
        block=2,
        problems=("number: stored 2, replay 1", "first_seq: stored 10, replay 1"),
    ),
    Case(
        "block 1's operator signature replaced by another key's signature of the same header",
        _block_signed_by(1, MALLORY_WALLET),
        block=1,
        problems=(f"block sealed by {MALLORY}, not a registered operator",),
        only=True,
    ),
    Case(
        "block 2's operator signature replaced by ALICE's (onboarded, but no operator)",
        _block_signed_by(2, ALICE_WALLET),
        block=2,
        problems=(f"block sealed by {ALICE}, not a registered operator",),
        only=True,
    ),
    Case(
        "block 1's signature removed",
        sql("UPDATE blocks SET signature = NULL WHERE number = 1"),
        block=1,
        problems=("block signature: an EIP-712 signature has 65 bytes, got 0",),
        only=True,
    ),
    Case(
        "block 1's signature with a byte appended",
        _block_signature_appended(1, b"\x00"),
        block=1,
        problems=("block signature: an EIP-712 signature has 65 bytes, got 66",),
        only=True,
    ),
    Case(
        "ALICE withdraws 19 not 20 at seq 10, re-signed with her key, every later row and "
        "projection recomputed",
        then(_rewrite(10, _alice_withdraws_19, verified=13), _alice_has_82),
        block=2,
        prefixes=("tx_head_hash: stored ", "state_root: stored "),
        absent="sealed by",
    ),
]


def test_tampered_blocks(url: str) -> None:
    check_cases(url, TAMPERED_BLOCKS)


# ---------------------------------------------------------------------- the guards
GUARDED = [
    ("UPDATE transactions SET kind = 'deposit' WHERE seq = 7", "UPDATE on transactions"),
    ("UPDATE transactions SET metadata = '{}' WHERE seq = 11", "UPDATE on transactions"),
    ("DELETE FROM transactions WHERE seq = 15", "DELETE on transactions"),
    ("UPDATE postings SET amount = amount + 1 WHERE seq = 7", "UPDATE on postings"),
    ("DELETE FROM postings WHERE seq = 15 AND idx = 1", "DELETE on postings"),
    ("UPDATE blocks SET state_root = hash WHERE number = 1", "UPDATE on blocks"),
    ("UPDATE blocks SET signature = NULL WHERE number = 1", "UPDATE on blocks"),
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
    tx = _forged_seq_16(postgres_url, -u(4))
    engine = make_engine(postgres_url)
    with engine.connect() as db:
        db.begin()
        insert_tx(db, tx)  # the constraint trigger is deferred: every INSERT succeeds...
        count = db.exec_driver_sql("SELECT count(*) FROM postings WHERE seq = 16").scalar()
        assert count == 2
        with pytest.raises(DBAPIError, match="postings of transaction 16 do not sum to zero"):
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
