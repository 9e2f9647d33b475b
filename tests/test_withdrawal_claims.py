"""A block's withdrawal tree, built by the ledger when it seals, is what the settlement
vault pays out against: ledger proofs verify offline and are accepted on a real EVM
(py-evm), each exactly once, and audit re-derives every withdrawal root."""

from __future__ import annotations

import pytest
from eth_tester.exceptions import TransactionFailed

from ledger import Ledger
from ledger.chain.vault import Payout
from ledger.chain.watcher import finalise
from ledger.core import operations
from ledger.core.accounts import WITHDRAWALS
from ledger.core.withdrawals import Withdrawal, withdrawal_root
from ledger.errors import NotFound, PayoutMismatch
from tests.conftest import ALICE, ALICE_WALLET, BOB, BOB_WALLET, CAROL
from tests.test_contracts import Chain, chain  # noqa: F401 - the py-evm chain fixture

USDC = 10**6


def _withdrawals(book: Ledger) -> list[int]:
    """Deposits, then four withdrawals (one from a sub-account) and a transfer between."""
    book.deposit(ALICE, "100")
    book.deposit(BOB, "50")
    book.transfer(ALICE, f"{ALICE}:savings", "20", wallet=ALICE_WALLET, nonce=1)
    seqs = [
        book.withdraw(ALICE, "10", wallet=ALICE_WALLET, nonce=2).seq,
        book.withdraw(BOB, "7.5", wallet=BOB_WALLET, nonce=1).seq,
        book.withdraw(f"{ALICE}:savings", "3", wallet=ALICE_WALLET, nonce=3).seq,
    ]
    book.transfer(BOB, CAROL, "1", wallet=BOB_WALLET, nonce=2)
    seqs.append(book.withdraw(ALICE, "0.000001", wallet=ALICE_WALLET, nonce=4).seq)
    return seqs


def test_sealed_block_commits_to_its_withdrawals(book: Ledger) -> None:
    seqs = _withdrawals(book)
    with pytest.raises(NotFound, match="not sealed yet"):
        book.withdrawal_proof(seqs[0])
    header = book.seal()
    expected = [
        Withdrawal(seqs[0], ALICE, 10 * USDC),
        Withdrawal(seqs[1], BOB, 7_500_000),
        Withdrawal(seqs[2], ALICE, 3 * USDC),  # a sub-account's owner is paid
        Withdrawal(seqs[3], ALICE, 1),
    ]
    assert header.withdrawal_root == withdrawal_root(expected)
    for i, seq in enumerate(seqs):
        proof = book.withdrawal_proof(seq)
        assert (proof.block, proof.index, proof.count) == (header.number, i, 4)
        assert proof.withdrawal == expected[i] and proof.verify()
    with pytest.raises(NotFound, match="not a withdrawal"):
        book.withdrawal_proof(seqs[0] - 3)
    # A block without withdrawals keeps the zero root.
    book.deposit(CAROL, "1")
    assert book.seal().withdrawal_root == b"\x00" * 32
    report = book.audit()
    assert report.ok, report.divergence


def test_the_vault_pays_ledger_proofs_once(book: Ledger, chain: Chain) -> None:  # noqa: F811
    seqs = _withdrawals(book)
    header = book.seal()
    receipt = chain.commit(header)
    assert receipt["status"] == 1
    chain.send(chain.usdc.functions.mint(chain.vault.address, 100 * USDC), chain.deployer)
    for seq in seqs:
        proof = book.withdrawal_proof(seq)
        w = proof.withdrawal
        before = chain.balance(chain.w3.to_checksum_address(w.recipient))
        call = chain.vault.functions.claim(
            proof.block,
            w.seq,
            chain.w3.to_checksum_address(w.recipient),
            w.amount,
            proof.index,
            proof.count,
            list(proof.siblings),
        )
        chain.send(call, chain.users[0])  # anyone may claim on the recipient's behalf
        after = chain.balance(chain.w3.to_checksum_address(w.recipient))
        assert after - before == w.amount
        with pytest.raises(TransactionFailed):
            chain.send(call, chain.users[0])  # paid exactly once
    assert chain.balance(chain.vault.address) == 100 * USDC - 20_500_001


def _payout(seq: int, recipient: str, amount: int) -> Payout:
    return Payout(1, "0x" + "ab" * 32, 0, 1, 1, seq, recipient, amount)


def test_a_payout_must_match_its_pending_withdrawal(book: Ledger) -> None:
    seqs = _withdrawals(book)
    book.seal()
    head = book.store.head().seq
    refusals = [
        (_payout(seqs[0], ALICE, 10 * USDC + 1), "claim is 10000000 to"),  # wrong amount
        (_payout(seqs[0], BOB, 10 * USDC), "claim is 10000000 to"),  # wrong recipient
        (_payout(seqs[0] - 1, ALICE, 10 * USDC), "no unpaid withdrawal"),  # not a withdrawal
        (_payout(head + 10, ALICE, 1), "no unpaid withdrawal"),  # no such transaction
    ]
    for payout, message in refusals:
        with pytest.raises(PayoutMismatch, match=message):
            finalise(book, [payout])
        assert book.store.head().seq == head  # nothing written
    [receipt] = finalise(book, [_payout(seqs[1], BOB, 7_500_000)])
    assert not receipt.duplicate and book.balance(WITHDRAWALS).units == 13_000_001
    assert finalise(book, [_payout(seqs[1], BOB, 7_500_000)])[0].duplicate  # once
    assert book.audit().ok


def test_audit_reports_a_payout_that_does_not_pay_its_claim(book: Ledger) -> None:
    """An operator writing a payout by hand (not from the vault's event) for the wrong
    amount is caught on replay."""
    seqs = _withdrawals(book)
    metadata = {"recipient": ALICE}
    book.submit([book.operator_signed(operations.payout(seqs[0], 9 * USDC, metadata))])
    report = book.audit()
    assert not report.ok and report.divergence is not None
    assert "claim is 10000000 to" in report.divergence.describe()
