"""Socialised loss: while the insurance fund is negative, withdrawals are haircut by
ExchBankruptcy / (TotalUSDC + ExchBankruptcy) and the haircut recapitalises the fund."""

from __future__ import annotations

from ledger import Ledger
from ledger.core.accounts import BRIDGE, INSURANCE, SYSTEM_ACCOUNTS, WITHDRAWALS
from ledger.trading.socialised_loss import haircut
from tests.conftest import ALICE, ALICE_WALLET, BOB, BOB_WALLET

USDC = 10**6


def _usdc(book: Ledger, account: str) -> int:
    return book.balance(account).units


def _bankrupt_alice(book: Ledger) -> None:
    """ALICE goes long 1 BTC with 1,500 USDC; a gap to 60,000 leaves her 8,500 short."""
    book.deposit(ALICE, "1500")
    book.deposit(BOB, "100000")
    book.publish_prices({"BTC": {"index": "70000"}, "BTC-USD-PERP": {"mark": "70000"}})
    buy = book.sign_order(ALICE_WALLET, ALICE, "BTC-USD-PERP", "buy", "1", "70000", nonce=1)
    sell = book.sign_order(BOB_WALLET, BOB, "BTC-USD-PERP", "sell", "1", "70000", nonce=1)
    book.fill(buy, sell, "70000", "1")
    book.publish_prices({"BTC": {"index": "60000"}, "BTC-USD-PERP": {"mark": "60000"}})
    (receipt,) = book.liquidate_all()
    assert receipt.tx.kind == "liquidation"
    assert _usdc(book, ALICE) == 0  # the fund covered what she could not pay


def test_pure_haircut() -> None:
    # Fund at -100, users hold 900 (system accounts sum to -900): h = 100 / 1000.
    balances = {(INSURANCE, "USDC"): -100, (BRIDGE, "USDC"): -800}
    assert haircut(1_000, balances) == 100
    assert haircut(1, balances) == 1  # rounded up: never in the leaver's favour
    assert haircut(1_000, {(INSURANCE, "USDC"): 5}) == 0


def test_withdrawals_are_haircut_while_the_fund_is_negative(book: Ledger) -> None:
    _bankrupt_alice(book)
    fund = _usdc(book, INSURANCE)
    assert fund < 0
    users = -sum(_usdc(book, account) for account in SYSTEM_ACCOUNTS)
    amount = 1_000 * USDC
    expected_cut = -(-amount * -fund // (users - fund))
    pending_before = _usdc(book, WITHDRAWALS)
    receipt = book.withdraw(BOB, amount, wallet=BOB_WALLET, nonce=2)
    legs = {(p.account, p.asset): p.amount for p in receipt.tx.postings}
    assert legs == {
        (BOB, "USDC"): -amount,
        (WITHDRAWALS, "USDC"): amount - expected_cut,
        (INSURANCE, "USDC"): expected_cut,
    }
    assert _usdc(book, WITHDRAWALS) == pending_before + amount - expected_cut
    assert _usdc(book, INSURANCE) == fund + expected_cut
    report = book.audit()
    assert report.ok, report.divergence


def test_no_haircut_once_the_fund_is_recapitalised(book: Ledger) -> None:
    _bankrupt_alice(book)
    shortfall = -_usdc(book, INSURANCE)  # BOB recapitalises the fund himself
    book.transfer(BOB, INSURANCE, shortfall, wallet=BOB_WALLET, nonce=2)
    assert _usdc(book, INSURANCE) == 0
    receipt = book.withdraw(BOB, 10 * USDC, wallet=BOB_WALLET, nonce=3)
    assert {(p.account, p.amount) for p in receipt.tx.postings} == {
        (BOB, -10 * USDC),
        (WITHDRAWALS, 10 * USDC),
    }
    assert book.audit().ok
