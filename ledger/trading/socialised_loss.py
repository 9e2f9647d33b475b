"""Socialised loss: while the insurance fund is negative (bad debt it could not cover),
every withdrawal is haircut by ExchBankruptcy / (TotalUSDC + ExchBankruptcy) and the
haircut goes to the fund, until it is recapitalised.

TotalUSDC, the users' USDC, needs no scan of every account: USDC sums to zero over all
accounts, so it is minus the sum of the (few) system accounts' USDC.
"""

from __future__ import annotations

from collections.abc import Mapping

from ledger.core.accounts import INSURANCE, SYSTEM_ACCOUNTS
from ledger.core.amounts import USDC


def haircut(amount: int, balances: Mapping[tuple[str, str], int]) -> int:
    """The part of a withdrawal of ``amount`` kept by a negative insurance fund (rounded
    up: the rounding never favours the one leaving)."""
    insurance = balances.get((INSURANCE, USDC.code), 0)
    if insurance >= 0:
        return 0
    bankruptcy = -insurance
    users = -sum(balances.get((account, USDC.code), 0) for account in SYSTEM_ACCOUNTS)
    return -(-amount * bankruptcy // (users + bankruptcy))
