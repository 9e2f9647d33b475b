"""The Python API on both stores: money movements, errors that write nothing, idempotency,
batches, history, blocks and proofs."""

from __future__ import annotations

import pytest

from ledger import Ledger, TxKind, make_request
from ledger.core import operations
from ledger.core.journal import Posting
from ledger.errors import (
    AlreadyReversed,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidAmount,
    LedgerError,
    NotFound,
    NothingToSeal,
    SameAccount,
    UnbalancedTransaction,
    UnknownAccount,
)
from tests.conftest import ALICE, BOB, CAROL


def usdc(book: Ledger, account: str) -> str:
    return str(book.balance(account).to_json()["balance"])


def test_deposit_transfer_withdraw(book: Ledger) -> None:
    first = book.deposit(ALICE, "100")
    assert (first.seq, first.duplicate) == (1, False)
    book.transfer(ALICE, BOB, "39.75")
    receipt = book.withdraw(BOB, "0.000001")
    assert receipt.seq == 3
    assert usdc(book, ALICE) == "60.25"
    assert usdc(book, BOB) == "39.749999"
    assert book.balance("system:bridge").units == -100_000_000 + 1
    assert book.balance(ALICE).to_json() == {
        "account": ALICE,
        "asset": "USDC",
        "balance": "60.25",
        "seq": 3,
    }


def test_checksummed_address_is_the_same_account(book: Ledger) -> None:
    mixed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    book.deposit(mixed, "1")
    assert book.balance(mixed.lower()).units == 1_000_000


def test_balance_at_sequence(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    book.deposit(BOB, "5")
    book.transfer(ALICE, BOB, "4")
    assert book.balance(ALICE, at_seq=1).units == 10_000_000
    assert book.balance(ALICE, at_seq=2).units == 10_000_000
    assert book.balance(BOB, at_seq=3).units == 9_000_000
    assert book.balance(BOB, at_seq=3).seq == 3
    with pytest.raises(NotFound, match="beyond the chain head"):
        book.balance(ALICE, at_seq=4)


ERRORS: list[tuple[str, type[LedgerError], str]] = [
    ("withdraw unknown", UnknownAccount, "never received funds"),
    ("transfer unknown", UnknownAccount, "never received funds"),
    ("overdraw", InsufficientFunds, "has 10.00 USDC, needs 10.000001"),
    ("overdraw transfer", InsufficientFunds, "has 10.00 USDC, needs 11.00"),
    ("same account", SameAccount, "to itself"),
    ("too many decimals", InvalidAmount, "6 decimals"),
    ("zero", InvalidAmount, "positive"),
    ("negative int", InvalidAmount, "positive"),
    ("float", InvalidAmount, "integer number of base units"),
    ("malformed account", InvalidAccount, "40 hex digits"),
    ("system deposit", InvalidAccount, "must be a user account"),
]


@pytest.mark.parametrize(("case", "error", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_write_nothing(
    book: Ledger, case: str, error: type[LedgerError], message: str
) -> None:
    book.deposit(ALICE, "10")
    head = book.store.head()
    balances = book.store.current_balances()
    actions = {
        "withdraw unknown": lambda: book.withdraw(BOB, "1"),
        "transfer unknown": lambda: book.transfer(CAROL, ALICE, "1"),
        "overdraw": lambda: book.withdraw(ALICE, "10.000001"),
        "overdraw transfer": lambda: book.transfer(ALICE, BOB, "11"),
        "same account": lambda: book.transfer(ALICE, ALICE.upper().replace("0X", "0x"), "1"),
        "too many decimals": lambda: book.deposit(ALICE, "1.0000001"),
        "zero": lambda: book.deposit(ALICE, "0"),
        "negative int": lambda: book.deposit(ALICE, -5),
        "float": lambda: book.deposit(ALICE, 1.5),  # type: ignore[arg-type]
        "malformed account": lambda: book.deposit("0x1234", "1"),
        "system deposit": lambda: book.deposit("system:fees", "1"),
    }
    with pytest.raises(error, match=message):
        actions[case]()
    assert book.store.head() == head
    assert book.store.current_balances() == balances
    assert book.audit().ok


def test_idempotent_retry_returns_the_original(book: Ledger) -> None:
    first = book.deposit(ALICE, "10", key="dep-1")
    again = book.deposit(ALICE, "10", key="dep-1")
    assert again.duplicate and again.seq == first.seq and again.hash == first.hash
    assert book.store.head().seq == 1
    assert usdc(book, ALICE) == "10.00"


def test_idempotency_conflict_writes_nothing(book: Ledger) -> None:
    book.deposit(ALICE, "10", key="dep-1")
    with pytest.raises(IdempotencyConflict, match="dep-1"):
        book.deposit(ALICE, "11", key="dep-1")
    with pytest.raises(IdempotencyConflict):
        book.deposit(BOB, "10", key="dep-1")
    assert book.store.head().seq == 1


def test_batch_is_atomic(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    batch = [
        operations.transfer(ALICE, BOB, 4_000_000, "b1"),
        operations.transfer(BOB, CAROL, 1_000_000, "b2"),
        operations.transfer(ALICE, CAROL, 7_000_000, "b3"),  # overdraws: 6 left
    ]
    with pytest.raises(InsufficientFunds, match=r"transaction 3 of 3 \(key 'b3'\)"):
        book.submit(batch)
    assert book.store.head().seq == 1
    assert book.store.transaction_by_key("b1") is None
    receipts = book.submit(batch[:2])
    assert [r.seq for r in receipts] == [2, 3]
    assert usdc(book, CAROL) == "1.00"


def test_batch_with_repeated_key(book: Ledger) -> None:
    request = operations.deposit(ALICE, 5, "same")
    receipts = book.submit([request, request])
    assert [r.duplicate for r in receipts] == [False, True]
    assert receipts[0].seq == receipts[1].seq == 1
    with pytest.raises(IdempotencyConflict, match="this batch"):
        book.submit([operations.deposit(BOB, 5, "k"), operations.deposit(BOB, 6, "k")])


def test_generic_postings_must_balance(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    unbalanced = make_request(
        TxKind.TRANSFER.value,
        "u",
        [Posting(ALICE, "USDC", -5), Posting(BOB, "USDC", 4)],
    )
    with pytest.raises(UnbalancedTransaction, match="do not sum to zero"):
        book.submit([unbalanced])
    twice = make_request(
        TxKind.TRANSFER.value,
        "t",
        [Posting(ALICE, "USDC", -5), Posting(ALICE, "USDC", 5)],
    )
    with pytest.raises(UnbalancedTransaction, match="twice"):
        book.submit([twice])
    assert book.store.head().seq == 1


def test_reversal_references_the_original(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    book.transfer(ALICE, BOB, "3")
    receipt = book.reverse(2, reason="wrong recipient")
    assert receipt.tx.reverses == 2 and receipt.tx.kind == "reversal"
    assert usdc(book, ALICE) == "10.00" and usdc(book, BOB) == "0.00"
    with pytest.raises(AlreadyReversed, match="already reversed by 3"):
        book.reverse(2, reason="again")
    with pytest.raises(AlreadyReversed, match="itself a reversal"):
        book.reverse(3, reason="undo")
    assert book.transaction(2).postings[0].amount == -3_000_000  # history is unchanged
    assert book.audit().ok


def test_history_is_a_statement(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    book.transfer(ALICE, BOB, "4")
    book.withdraw(ALICE, "1")
    lines = book.history(ALICE)
    assert [(line.kind, line.amount, line.balance_after) for line in lines] == [
        ("deposit", 10_000_000, 10_000_000),
        ("transfer", -4_000_000, 6_000_000),
        ("withdrawal", -1_000_000, 5_000_000),
    ]
    assert lines[1].counterparties == (BOB,)
    with pytest.raises(NotFound):
        book.history(CAROL)


def test_seal_and_prove(book: Ledger) -> None:
    with pytest.raises(NothingToSeal):
        book.seal()
    book.deposit(ALICE, "10")
    book.transfer(ALICE, BOB, "4")
    first = book.seal()
    assert (first.number, first.first_seq, first.last_seq, first.leaf_count) == (1, 1, 2, 3)
    book.transfer(BOB, CAROL, "1")
    second = book.seal()
    assert second.prev_block_hash == first.hash and second.first_seq == 3
    proof = book.proof(BOB, block=1)
    assert proof.balance == 4_000_000 and proof.verify()[0]
    assert book.proof(BOB).balance == 3_000_000
    with pytest.raises(NotFound, match="no USDC balance in block 1"):
        book.proof(CAROL, block=1)
    with pytest.raises(NotFound, match="no block number 9"):
        book.proof(BOB, block=9)
    assert book.block().number == 2 and book.block(1) == first
    assert book.audit().ok


def test_audit_of_an_intact_ledger(book: Ledger) -> None:
    for i in range(20):
        book.deposit(ALICE if i % 2 else BOB, 1_000_000 + i)
        if i % 7 == 6:
            book.seal()
    report = book.audit()
    assert report.ok and report.transactions == 20 and report.blocks == 2
    assert report.head_hash == book.store.head().hash


def test_reversals_are_checked_inside_the_write(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    original = book.transaction(1)
    twice = [operations.reversal(original, "r1", "x"), operations.reversal(original, "r2", "y")]
    with pytest.raises(AlreadyReversed, match="'r1' earlier in this batch"):
        book.submit(twice)
    forged = make_request(
        TxKind.REVERSAL.value,
        "forged",
        [Posting(ALICE, "USDC", -1), Posting("system:bridge", "USDC", 1)],
        reverses=1,
    )
    with pytest.raises(UnbalancedTransaction, match="exactly the opposite"):
        book.submit([forged])
    missing = make_request(
        TxKind.REVERSAL.value, "missing", list(original.postings[:0]), reverses=99
    )
    with pytest.raises(NotFound, match="no transaction with sequence 99"):
        book.submit([missing])
    assert book.store.head().seq == 1
