"""Mirrored StarkNet USDC is evidence only by default; a listing with
``mirror_collateral`` counts that share of it in its owner's account value (never in what
can be withdrawn), and a mirror entry that lowers it is a forced transition that can leave
the account liquidatable."""

from __future__ import annotations

import re

import pytest

from ledger.core import mirror
from ledger.core.journal import TxKind
from ledger.errors import InsufficientMargin, InvalidConfig
from ledger.margin.config import default_config_text, load_config_text
from tests.conftest import ALICE, ALICE_WALLET, BOB
from tests.test_trading import PERP, Session, open_session, usdc

TOKEN = 0x053C91253BC9682C04929CA02ED00B3E423F6710D2EE7E0D5EBB06F3ECF368A8
CHAIN = "starknet:SN_SEPOLIA"


def _listing(weight: str) -> str:
    return default_config_text().replace(
        'mirror_collateral = "0%"', f'mirror_collateral = "{weight}"'
    )


def _mirror(venue: Session, units: int) -> mirror.Opened:
    """ALICE authorises the mirror and it opens with ``units`` of L2 USDC."""
    book = venue.book
    book.submit_signed(ALICE_WALLET.mirror(TOKEN, book.domain, nonce=venue.next_nonce()))
    kinds = (TxKind.ACCOUNT_SETTING.value, TxKind.MIRROR.value)
    auth = mirror.fold(book.store.transactions_of_kind(kinds)).authorizations[ALICE]
    book.submit([book.operator_signed(mirror.opening(CHAIN, auth, 1, 0x1, units))])
    return mirror.Opened(auth.seq, auth.l2_address, 1)


def _open_long(venue: Session) -> None:
    venue.book.deposit(ALICE, "600")
    venue.book.deposit(BOB, "10000")
    venue.btc("70000")
    venue.trade(ALICE, BOB, PERP, "1", "70000")  # IMR 1,431.50 against AV 568.50 alone


def test_mirrored_usdc_is_evidence_only_by_default(db_url: str) -> None:
    venue = open_session(db_url)
    with venue.book as book:
        _mirror(venue, usdc("5000"))
        summary = venue.margin(ALICE)
        assert (summary.mirrored, summary.value) == (0, 0)
        with pytest.raises(InsufficientMargin, match=r"1431\.50 USDC initial margin"):
            _open_long(venue)
        assert book.audit().ok


def test_a_configured_share_counts_in_value_but_is_never_withdrawable(db_url: str) -> None:
    venue = open_session(db_url, instruments=_listing("50%"))
    with venue.book as book:
        opened = _mirror(venue, usdc("5000"))
        _open_long(venue)  # AV 568.50 + 2,500 mirrored covers the IMR
        summary = venue.margin(ALICE)
        assert (summary.mirrored, summary.usdc) == (usdc("2500"), usdc("568.50"))
        assert summary.value == usdc("3068.50") and summary.im == usdc("1431.50")
        assert summary.max_withdrawable == usdc("568.50")  # capped by USDC held here
        # The mirror closes (say Alice revoked): forced, and the account is under water.
        closing = mirror.closing(
            CHAIN, mirror.mirror_account(ALICE), opened, TOKEN, 2, 0x2, usdc("5000"), "revoked"
        )
        book.submit([book.operator_signed(closing)])
        assert [s.account for s in book.liquidatable()] == [ALICE]
        assert book.audit().ok


def test_the_share_is_a_rate() -> None:
    assert load_config_text(_listing("12.5%")).mirror_collateral * 8 == 1
    with pytest.raises(InvalidConfig, match=re.escape("mirror_collateral: rate '150%'")):
        load_config_text(_listing("150%"))
