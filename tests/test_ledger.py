"""The Python API on both stores: money movements, errors that write nothing, idempotency,
batches, history, blocks and proofs; and the signature rules: who may move which funds,
onboarding, nonces, expiry, operator-only system events, and an audit that re-verifies
every stored signature."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from ledger import Ledger, Receipt, TxKind, TxRecord, make_request
from ledger.core import genesis, operations
from ledger.core.accounts import owner_of
from ledger.core.encoding import canonical_json, chain_hash
from ledger.core.journal import Posting, canonical_account
from ledger.core.replay import request_of
from ledger.errors import (
    ActionExpired,
    AlreadyReversed,
    AuthorizationError,
    BadSignature,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidAmount,
    LedgerError,
    MalformedEnvelope,
    NonceReused,
    NotFound,
    NothingToSeal,
    NotOnboarded,
    NotOwner,
    SameAccount,
    UnbalancedTransaction,
    UnknownAccount,
    UnknownOperator,
    WrongDomain,
)
from ledger.store.database import make_engine
from ledger.wallet import Wallet
from tests.conftest import (
    ALICE,
    ALICE_WALLET,
    BOB,
    BOB_WALLET,
    CAROL,
    CAROL_WALLET,
    FIRST_SEQ,
    OPERATOR,
    WALLETS,
    open_book,
)
from tests.conftest import test_wallet as make_wallet

F = FIRST_SEQ  # the sequence number of the first money movement in a `book`
DAVE_WALLET = make_wallet("dave")  # never onboarded in these tests (unless a test does it)
DAVE = DAVE_WALLET.address


def usdc(book: Ledger, account: str) -> str:
    return str(book.balance(account).to_json()["balance"])


def next_nonce(book: Ledger, wallet: Wallet) -> int:
    return book.store.last_nonce(wallet.address) + 1


def owner_wallet(account: str) -> Wallet:
    return WALLETS[owner_of(canonical_account(account))]


def transfer(book: Ledger, source: str, target: str, amount: int | str) -> Receipt:
    """A transfer signed by the source owner's wallet, with its next nonce."""
    wallet = owner_wallet(source)
    return book.transfer(source, target, amount, wallet=wallet, nonce=next_nonce(book, wallet))


def withdraw(book: Ledger, account: str, amount: int | str) -> Receipt:
    """A withdrawal signed by the account owner's wallet, with its next nonce."""
    wallet = owner_wallet(account)
    return book.withdraw(account, amount, wallet=wallet, nonce=next_nonce(book, wallet))


def expiry() -> int:
    return int(time.time()) + 3600


def test_deposit_transfer_withdraw(book: Ledger) -> None:
    first = book.deposit(ALICE, "100")
    assert (first.seq, first.duplicate) == (F, False)
    moved = transfer(book, ALICE, BOB, "39.75")
    assert moved.tx.key == f"{ALICE}/1"  # a user action's key is owner/nonce
    receipt = withdraw(book, BOB, "0.000001")
    assert receipt.seq == F + 2 and receipt.tx.key == f"{BOB}/1"
    assert usdc(book, ALICE) == "60.25"
    assert usdc(book, BOB) == "39.749999"
    assert book.balance("system:bridge").units == -100_000_000
    assert book.balance("system:withdrawals").units == 1  # until its L1 payout
    assert book.balance(ALICE).to_json() == {
        "account": ALICE,
        "asset": "USDC",
        "balance": "60.25",
        "seq": F + 2,
    }
    assert (book.store.last_nonce(ALICE), book.store.last_nonce(BOB)) == (1, 1)


def test_checksummed_address_is_the_same_account(book: Ledger) -> None:
    mixed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    book.deposit(mixed, "1")
    assert book.balance(mixed.lower()).units == 1_000_000


def test_balance_at_sequence(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    book.deposit(BOB, "5")
    transfer(book, ALICE, BOB, "4")
    assert book.balance(ALICE, at_seq=F).units == 10_000_000
    assert book.balance(ALICE, at_seq=F + 1).units == 10_000_000
    assert book.balance(BOB, at_seq=F + 2).units == 9_000_000
    assert book.balance(BOB, at_seq=F + 2).seq == F + 2
    with pytest.raises(NotFound, match="beyond the chain head"):
        book.balance(ALICE, at_seq=F + 3)


def assert_writes_nothing(
    book: Ledger, error: type[LedgerError], message: str, action: Callable[[], object]
) -> None:
    """``action`` raises exactly ``error`` and changes nothing: no transaction, no balance,
    no nonce, no onboarding; the ledger still audits clean."""
    head = book.store.head()
    balances = book.store.current_balances()
    authorization = book.store.auth_projection()
    with pytest.raises(error, match=message) as info:
        action()
    assert type(info.value) is error, repr(info.value)
    assert book.store.head() == head
    assert book.store.current_balances() == balances
    assert book.store.auth_projection() == authorization
    assert book.audit().ok


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
    actions = {
        "withdraw unknown": lambda: withdraw(book, BOB, "1"),
        "transfer unknown": lambda: transfer(book, CAROL, ALICE, "1"),
        "overdraw": lambda: withdraw(book, ALICE, "10.000001"),
        "overdraw transfer": lambda: transfer(book, ALICE, BOB, "11"),
        "same account": lambda: transfer(book, ALICE, ALICE.upper().replace("0X", "0x"), "1"),
        "too many decimals": lambda: book.deposit(ALICE, "1.0000001"),
        "zero": lambda: book.deposit(ALICE, "0"),
        "negative int": lambda: book.deposit(ALICE, -5),
        "float": lambda: book.deposit(ALICE, 1.5),  # type: ignore[arg-type]
        "malformed account": lambda: book.deposit("0x1234", "1"),
        "system deposit": lambda: book.deposit("system:fees", "1"),
    }
    assert_writes_nothing(book, error, message, actions[case])


def test_a_refused_action_does_not_use_up_its_nonce(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    with pytest.raises(InsufficientFunds):
        book.transfer(ALICE, BOB, "11", wallet=ALICE_WALLET, nonce=1)
    assert book.store.last_nonce(ALICE) == 0
    receipt = book.transfer(ALICE, BOB, "1", wallet=ALICE_WALLET, nonce=1)
    assert receipt.tx.key == f"{ALICE}/1"
    assert book.store.last_nonce(ALICE) == 1


def test_idempotent_retry_returns_the_original(book: Ledger) -> None:
    first = book.deposit(ALICE, "10", key="dep-1")
    again = book.deposit(ALICE, "10", key="dep-1")
    assert again.duplicate and again.seq == first.seq and again.hash == first.hash
    assert book.store.head().seq == F
    assert usdc(book, ALICE) == "10.00"


def test_idempotency_conflict_writes_nothing(book: Ledger) -> None:
    book.deposit(ALICE, "10", key="dep-1")
    with pytest.raises(IdempotencyConflict, match="dep-1"):
        book.deposit(ALICE, "11", key="dep-1")
    with pytest.raises(IdempotencyConflict):
        book.deposit(BOB, "10", key="dep-1")
    assert book.store.head().seq == F


def test_batch_is_atomic(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    domain, valid_until = book.domain, expiry()
    envelopes = [
        ALICE_WALLET.transfer(ALICE, BOB, 4_000_000, domain, 1, valid_until),
        BOB_WALLET.transfer(BOB, CAROL, 1_000_000, domain, 1, valid_until),
        ALICE_WALLET.transfer(ALICE, CAROL, 7_000_000, domain, 2, valid_until),  # 6 left
    ]
    batch = [book.request_for(envelope) for envelope in envelopes]
    with pytest.raises(InsufficientFunds, match=rf"transaction 3 of 3 \(key '{ALICE}/2'\)"):
        book.submit(batch)
    assert book.store.head().seq == F
    assert book.store.transaction_by_key(f"{ALICE}/1") is None
    assert (book.store.last_nonce(ALICE), book.store.last_nonce(BOB)) == (0, 0)
    receipts = book.submit(batch[:2])
    assert [r.seq for r in receipts] == [F + 1, F + 2]
    assert usdc(book, CAROL) == "1.00"
    assert (book.store.last_nonce(ALICE), book.store.last_nonce(BOB)) == (1, 1)


def test_batch_with_repeated_key(book: Ledger) -> None:
    request = OPERATOR.sign_system(operations.deposit(ALICE, 5, "same"))
    receipts = book.submit([request, request])
    assert [r.duplicate for r in receipts] == [False, True]
    assert receipts[0].seq == receipts[1].seq == F
    with pytest.raises(IdempotencyConflict, match="this batch"):
        book.submit(
            [
                OPERATOR.sign_system(operations.deposit(BOB, 5, "k")),
                OPERATOR.sign_system(operations.deposit(BOB, 6, "k")),
            ]
        )
    assert book.store.head().seq == F


def test_generic_postings_must_balance(book: Ledger) -> None:
    """Operator-signed events with free-form postings (here deposits) must balance; kinds
    whose postings the ledger computes (fills, settlements, ...) may name none."""
    book.deposit(ALICE, "10")
    computed = make_request(TxKind.SETTLEMENT.value, "s", [Posting(ALICE, "USDC", -5)])
    with pytest.raises(UnbalancedTransaction, match="the ledger computes them"):
        book.system(computed)
    unbalanced = make_request(
        TxKind.DEPOSIT.value,
        "u",
        [Posting(ALICE, "USDC", -5), Posting(BOB, "USDC", 4)],
    )
    with pytest.raises(UnbalancedTransaction, match="do not sum to zero"):
        book.system(unbalanced)
    twice = make_request(
        TxKind.DEPOSIT.value,
        "t",
        [Posting(ALICE, "USDC", -5), Posting(ALICE, "USDC", 5)],
    )
    with pytest.raises(UnbalancedTransaction, match="twice"):
        book.system(twice)
    assert book.store.head().seq == F


def test_reversal_references_the_original(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    transfer(book, ALICE, BOB, "3")
    receipt = book.reverse(F + 1, reason="wrong recipient")
    assert receipt.tx.reverses == F + 1 and receipt.tx.kind == "reversal"
    assert usdc(book, ALICE) == "10.00" and usdc(book, BOB) == "0.00"
    with pytest.raises(AlreadyReversed, match=f"already reversed by {F + 2}"):
        book.reverse(F + 1, reason="again")
    with pytest.raises(AlreadyReversed, match="itself a reversal"):
        book.reverse(F + 2, reason="undo")
    assert book.transaction(F + 1).postings[0].amount == -3_000_000  # history is unchanged
    assert book.audit().ok


def test_history_is_a_statement(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    transfer(book, ALICE, BOB, "4")
    withdraw(book, ALICE, "1")
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
    book.deposit(ALICE, "10")
    transfer(book, ALICE, BOB, "4")
    first = book.seal()
    # Block 1 also covers genesis and the onboardings (they move no money: no leaves).
    assert (first.number, first.first_seq, first.last_seq, first.leaf_count) == (1, 1, F + 1, 3)
    with pytest.raises(NothingToSeal):
        book.seal()
    transfer(book, BOB, CAROL, "1")
    second = book.seal()
    assert second.prev_block_hash == first.hash and second.first_seq == F + 2
    proof = book.proof(BOB, block=1)
    assert proof.balance == 4_000_000 and proof.verify()[0]
    assert book.proof(BOB).balance == 3_000_000
    with pytest.raises(NotFound, match="no USDC balance in block 1"):
        book.proof(CAROL, block=1)
    with pytest.raises(NotFound, match="no block number 9"):
        book.proof(BOB, block=9)
    assert book.block().number == 2 and book.block(1) == first
    assert book.audit().ok


def test_no_seal_before_genesis(db_url: str) -> None:
    """A migrated database without genesis has no registered operator to seal anything."""
    with Ledger(db_url, operator=OPERATOR) as empty, pytest.raises(UnknownOperator):
        empty.seal()


def test_audit_of_an_intact_ledger(book: Ledger) -> None:
    for i in range(20):
        book.deposit(ALICE if i % 2 else BOB, 1_000_000 + i)
        if i % 7 == 6:
            book.seal()
    transfer(book, ALICE, BOB, 1)  # user signatures are re-verified too
    report = book.audit()
    assert report.ok and report.transactions == F - 1 + 21 and report.blocks == 2
    assert report.head_hash == book.store.head().hash


def test_reversals_are_checked_inside_the_write(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    original = book.transaction(F)
    twice = [
        OPERATOR.sign_system(operations.reversal(original, "r1", "x")),
        OPERATOR.sign_system(operations.reversal(original, "r2", "y")),
    ]
    with pytest.raises(AlreadyReversed, match="'r1' earlier in this batch"):
        book.submit(twice)
    forged = make_request(
        TxKind.REVERSAL.value,
        "forged",
        [Posting(ALICE, "USDC", -1), Posting("system:bridge", "USDC", 1)],
        reverses=F,
    )
    with pytest.raises(UnbalancedTransaction, match="exactly the opposite"):
        book.system(forged)
    missing = make_request(TxKind.REVERSAL.value, "missing", [], reverses=99)
    with pytest.raises(NotFound, match="no transaction with sequence 99"):
        book.system(missing)
    assert book.store.head().seq == F


# ---------------------------------------------------------------------- signature rules
def _signed_book(book: Ledger) -> dict[str, Any]:
    """ALICE holds 9, DAVE (funded, never onboarded) 10, BOB 1 from ALICE's action with
    nonce 5, whose accepted envelope is returned (for replays)."""
    book.deposit(ALICE, "10")
    book.deposit(DAVE, "10")
    accepted = ALICE_WALLET.transfer(ALICE, BOB, "1", book.domain, 5, expiry())
    assert book.submit_signed(accepted).tx.key == f"{ALICE}/5"
    assert book.store.last_nonce(ALICE) == 5
    return accepted


def _tampered_amount(envelope: dict[str, Any]) -> dict[str, Any]:
    return {**envelope, "message": {**envelope["message"], "amount": "2000000"}}


AUTH_ERRORS: list[tuple[str, type[LedgerError], str]] = [
    ("not owner transfer", NotOwner, f"cannot move funds of {ALICE}"),
    ("not owner withdraw", NotOwner, f"cannot move funds of {ALICE}"),
    ("not owner sub-account", NotOwner, f"cannot move funds of {ALICE}:iso"),
    ("not onboarded", NotOnboarded, "not onboarded"),
    ("replay", NonceReused, "nonce 5 of .* was already used"),
    ("replay via the API", NonceReused, "already used"),
    ("replay in a batch", NonceReused, "already used"),
    ("twice in one batch", NonceReused, "appears twice in this batch"),
    ("lower nonce", NonceReused, "must exceed 5"),
    ("same nonce, other payload", NonceReused, "already used"),
    ("expired", ActionExpired, "expired"),
    ("unsigned deposit in the store", AuthorizationError, "unsigned deposit"),
    ("unsigned transfer in the store", AuthorizationError, "unsigned transfer"),
    ("unsigned deposit", MalformedEnvelope, "without a valid operator signature"),
    ("unsigned transfer", MalformedEnvelope, "without a signed envelope"),
    ("user-signed deposit", UnknownOperator, "not a registered operator"),
    ("tampered amount", BadSignature, "does not verify"),
    ("other domain", WrongDomain, "signed for domain"),
]


@pytest.mark.parametrize(("case", "error", "message"), AUTH_ERRORS, ids=[e[0] for e in AUTH_ERRORS])
def test_authorization_errors_write_nothing(
    book: Ledger, case: str, error: type[LedgerError], message: str
) -> None:
    accepted = _signed_book(book)
    domain, later = book.domain, expiry()
    fresh_deposit = OPERATOR.sign_system(operations.deposit(CAROL, 1, "fresh"))
    next_action = book.request_for(ALICE_WALLET.transfer(ALICE, BOB, 1, domain, 6, later))
    actions: dict[str, Callable[[], object]] = {
        "not owner transfer": lambda: book.transfer(ALICE, BOB, 1, wallet=BOB_WALLET, nonce=1),
        "not owner withdraw": lambda: book.withdraw(ALICE, 1, wallet=CAROL_WALLET, nonce=1),
        "not owner sub-account": lambda: book.transfer(
            f"{ALICE}:iso", BOB, 1, wallet=BOB_WALLET, nonce=1
        ),
        "not onboarded": lambda: book.withdraw(DAVE, 1, wallet=DAVE_WALLET, nonce=1),
        "replay": lambda: book.submit_signed(accepted),
        "replay via the API": lambda: book.transfer(
            ALICE, BOB, "1", wallet=ALICE_WALLET, nonce=5, expiry=int(accepted["message"]["expiry"])
        ),
        "replay in a batch": lambda: book.submit([fresh_deposit, book.request_for(accepted)]),
        "twice in one batch": lambda: book.submit([fresh_deposit, next_action, next_action]),
        "lower nonce": lambda: book.transfer(ALICE, BOB, 1, wallet=ALICE_WALLET, nonce=4),
        "same nonce, other payload": lambda: book.withdraw(ALICE, 2, wallet=ALICE_WALLET, nonce=5),
        "expired": lambda: book.transfer(
            ALICE, BOB, 1, wallet=ALICE_WALLET, nonce=6, expiry=int(time.time()) - 60
        ),
        "unsigned deposit in the store": lambda: book.store.append(
            [operations.deposit(ALICE, 1, "raw")], book.clock()
        ),
        "unsigned transfer in the store": lambda: book.store.append(
            [operations.transfer(ALICE, BOB, 1, "raw")], book.clock()
        ),
        "unsigned deposit": lambda: book.submit([operations.deposit(ALICE, 1, "raw")]),
        "unsigned transfer": lambda: book.submit([operations.transfer(ALICE, BOB, 1, "raw")]),
        "user-signed deposit": lambda: book.submit(
            [ALICE_WALLET.sign_system(operations.deposit(ALICE, 1, "mine"))]
        ),
        "tampered amount": lambda: book.submit_signed(
            _tampered_amount(ALICE_WALLET.transfer(ALICE, BOB, 1, domain, 6, later))
        ),
        "other domain": lambda: book.submit_signed(
            ALICE_WALLET.transfer(ALICE, BOB, 1, genesis.l2_domain("SN_MAIN"), 6, later)
        ),
    }
    assert_writes_nothing(book, error, message, actions[case])
    for key in ("fresh", "raw", "mine", f"{ALICE}/6", f"{BOB}/1", f"{DAVE}/1"):
        assert book.store.transaction_by_key(key) is None
    assert book.store.last_nonce(ALICE) == 5


def test_nonces_increase_but_may_skip(book: Ledger) -> None:
    book.deposit(ALICE, "10")
    book.transfer(ALICE, BOB, 1, wallet=ALICE_WALLET, nonce=3)
    book.withdraw(ALICE, 1, wallet=ALICE_WALLET, nonce=1_000)
    assert book.store.last_nonce(ALICE) == 1_000
    with pytest.raises(NonceReused):
        book.transfer(ALICE, BOB, 1, wallet=ALICE_WALLET, nonce=999)
    # Nonces are per owner: BOB's first action may use a low one.
    book.transfer(BOB, CAROL, 1, wallet=BOB_WALLET, nonce=1)
    assert (book.store.last_nonce(ALICE), book.store.last_nonce(BOB)) == (1_000, 1)
    assert usdc(book, ALICE) == "9.999998"
    assert book.audit().ok


def test_owner_moves_its_sub_accounts(book: Ledger) -> None:
    iso = f"{ALICE}:iso"
    book.deposit(ALICE, "10")
    book.transfer(ALICE, iso, "4", wallet=ALICE_WALLET, nonce=1)
    book.transfer(iso, BOB, "1", wallet=ALICE_WALLET, nonce=2)
    book.withdraw(iso, "1", wallet=ALICE_WALLET, nonce=3)
    assert (usdc(book, ALICE), usdc(book, iso), usdc(book, BOB)) == ("6.00", "2.00", "1.00")
    # Crediting someone else's account needs no permission; debiting it does.
    book.transfer(BOB, iso, "1", wallet=BOB_WALLET, nonce=1)
    with pytest.raises(NotOwner, match=f"cannot move funds of {iso}"):
        book.transfer(iso, BOB, "1", wallet=BOB_WALLET, nonce=2)
    assert usdc(book, iso) == "3.00"
    assert book.audit().ok


def test_onboarding_enables_a_wallet(book: Ledger) -> None:
    book.deposit(DAVE, "10")
    with pytest.raises(NotOnboarded):
        book.withdraw(DAVE, "1", wallet=DAVE_WALLET, nonce=1)
    receipt = book.onboard(DAVE_WALLET)
    assert (receipt.seq, receipt.tx.kind, receipt.tx.key) == (
        F + 1,
        "onboarding",
        f"onboard/{DAVE}",
    )
    assert receipt.tx.postings == ()
    assert book.store.wallet(DAVE) == (
        DAVE_WALLET.stark_public_key,
        f"{DAVE_WALLET.stark_account:#x}",
    )
    book.withdraw(DAVE, "1", wallet=DAVE_WALLET, nonce=1)
    assert usdc(book, DAVE) == "9.00"
    assert book.audit().ok


def test_expiry_is_checked_against_the_ledger_clock(db_url: str) -> None:
    """An action is valid up to and including its expiry second, judged by the time the
    ledger records it at (its clock, but never before the chain head)."""
    open_book(db_url).close()
    now_s = int(time.time()) + 60  # later than everything recorded so far
    at = [now_s * 1_000_000 - 10]
    with Ledger(db_url, operator=OPERATOR, clock=lambda: at[0]) as book:
        book.deposit(ALICE, "10")
        at[0] = now_s * 1_000_000
        receipt = book.transfer(ALICE, BOB, 1, wallet=ALICE_WALLET, nonce=1, expiry=now_s)
        assert receipt.tx.recorded_at == now_s * 1_000_000  # exactly at expiry: accepted
        # The same clock reading again: recorded at head + 1 µs, just past the expiry.
        assert_writes_nothing(
            book,
            ActionExpired,
            f"expired at {now_s}",
            lambda: book.transfer(ALICE, BOB, 1, wallet=ALICE_WALLET, nonce=2, expiry=now_s),
        )
        at[0] = (now_s + 5) * 1_000_000
        assert_writes_nothing(
            book,
            ActionExpired,
            f"expired at {now_s + 4}",
            lambda: book.transfer(ALICE, BOB, 1, wallet=ALICE_WALLET, nonce=2, expiry=now_s + 4),
        )
        assert book.store.last_nonce(ALICE) == 1
        book.transfer(ALICE, BOB, 1, wallet=ALICE_WALLET, nonce=2, expiry=now_s + 5)
        assert (book.store.head().seq, book.store.last_nonce(ALICE)) == (F + 2, 2)
        assert book.audit().ok


def test_system_events_need_the_operator_key(book: Ledger, db_url: str) -> None:
    """A ledger opened without ``operator=`` reads and accepts user actions, but cannot
    deposit, reverse or seal."""
    book.deposit(ALICE, "10")
    with Ledger(db_url) as reader:
        for action, message in [
            (lambda: reader.deposit(ALICE, "1"), "operator key"),
            (lambda: reader.reverse(F, reason="x"), "operator key"),
            (reader.seal, "operator key"),
            (lambda: reader.system(operations.deposit(BOB, 1, "sys")), "operator key"),
        ]:
            assert_writes_nothing(reader, UnknownOperator, message, action)
        assert reader.store.transaction_by_key("sys") is None
        assert list(reader.store.iter_blocks()) == []
        receipt = reader.transfer(ALICE, BOB, "1", wallet=ALICE_WALLET, nonce=1)
        assert receipt.seq == F + 1
        assert usdc(reader, BOB) == "1.00"
    assert usdc(book, BOB) == "1.00"


# ---------------------------------------------------------------------- audit of signatures
def _forge_signature(tx: TxRecord) -> str:
    """``tx``'s metadata with one bit of its signature flipped (still well-formed)."""
    metadata = json.loads(tx.metadata)
    auth = metadata["auth"]
    if isinstance(auth["signature"], list):  # a user action: SNIP-12 [r, s]
        r, s = auth["signature"]
        auth["signature"] = [r, f"{int(s, 16) ^ 1:#x}"]
    else:  # an operator event: EIP-712 r‖s‖v; flip the lowest bit of s (stays low-s)
        signature = bytearray.fromhex(auth["signature"][2:])
        signature[63] ^= 1
        auth["signature"] = "0x" + signature.hex()
    return canonical_json(metadata)


def _rewrite_head(url: str, tx: TxRecord) -> None:
    """Overwrite the head transaction with ``tx`` (and the chain head's hash) as an attacker
    with database access: the append-only triggers are disabled first."""
    engine = make_engine(url)
    try:
        with engine.begin() as db:
            restore = None
            if engine.dialect.name == "sqlite":
                restore = db.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = 'transactions_no_update'"
                ).scalar_one()
                db.exec_driver_sql("DROP TRIGGER transactions_no_update")
            else:
                db.exec_driver_sql("SET LOCAL session_replication_role = replica")
            changed = db.execute(
                text(
                    "UPDATE transactions SET metadata = :metadata, digest = :digest, "
                    "hash = :hash WHERE seq = :seq"
                ),
                {"metadata": tx.metadata, "digest": tx.digest, "hash": tx.hash, "seq": tx.seq},
            ).rowcount
            assert changed == 1
            db.execute(text("UPDATE chain_head SET hash = :hash"), {"hash": tx.hash})
            if restore is not None:
                db.exec_driver_sql(restore)
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["transfer", "deposit"])
def test_audit_detects_a_signature_that_no_longer_verifies(
    book: Ledger, db_url: str, kind: str
) -> None:
    """The attacker also recomputes the digest and the hash chain, so only the signature
    check can notice."""
    book.deposit(ALICE, "10")
    if kind == "transfer":
        transfer(book, ALICE, BOB, "1")
    else:
        book.deposit(BOB, "1")
    assert book.audit().ok
    head = book.transaction(book.store.head().seq)
    assert head.kind == kind
    forged = head._replace(metadata=_forge_signature(head))
    forged = forged._replace(digest=request_of(forged).digest())
    forged = forged._replace(hash=chain_hash(forged.prev_hash, forged.encode()))
    _rewrite_head(db_url, forged)
    assert book.transaction(head.seq) == forged
    report = book.audit()
    assert not report.ok and report.divergence is not None
    assert report.divergence.seq == head.seq
    (problem,) = report.divergence.problems
    assert problem.startswith("signature check fails"), problem
    _rewrite_head(db_url, head)  # put it back: the ledger audits clean again
    assert book.audit().ok
