"""Liquidation of an account under its maintenance margin (AV < MMR, or AV <= 0).

The same share s of every perp and option position, s in 20%, 40%, ... 100%, the smallest
that brings the margin ratio MMR / AV below 90%, is taken over at mark by
``system:insurance``; the account pays a penalty of s x 70% x MMR to the fund, as far as its
USDC goes. If its USDC is still negative (a bankruptcy), the fund covers the shortfall.
Isolated sub-accounts are accounts of their own, so they are liquidated alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

from ledger.core.accounts import INSURANCE
from ledger.core.amounts import USDC, format_amount
from ledger.errors import NotLiquidatable
from ledger.trading.fills import change_position
from ledger.trading.plan import Changes, lookup
from ledger.trading.positions import Legs
from ledger.trading.state import TradingState, listed_instrument
from ledger.trading.valuation import AccountSummary, summarize

PENALTY = Fraction(7, 10)
TARGET_RATIO = Fraction(9, 10)
STEPS = 5  # shares of 20%


def _close_share(
    account: str, k: int, state: TradingState, balances: Mapping[tuple[str, str], int]
) -> tuple[Legs, Changes]:
    legs, changes = Legs(), Changes()
    config = state.config
    assert config is not None
    for name in sorted(state.holdings(account)):
        size = balances.get((account, name), 0)
        inst = listed_instrument(state.config_text, name)
        step = config.underlyings[inst.underlying].size_step
        part = size if k == STEPS else abs(size) * k // STEPS // step * step
        c = part if k == STEPS else (part if size > 0 else -part)
        if not c:
            continue
        mark = state.market(name).mark
        ins_size = balances.get((INSURANCE, name), 0)
        change_position(legs, changes, state, INSURANCE, inst, ins_size, c, mark)
        change_position(legs, changes, state, account, inst, size, -c, mark)
        if inst.kind == "option":
            legs.move(INSURANCE, account, USDC.code, c * mark // inst.size_scale)
    return legs, changes


def plan_liquidation(
    account: str, state: TradingState, balances: Mapping[tuple[str, str], int], now_us: int
) -> tuple[Legs, Changes, AccountSummary]:
    """Legs and changes of liquidating ``account``, and its summary before."""
    before = summarize(account, lookup(balances), state, now_us)
    if not before.liquidatable:
        raise NotLiquidatable(
            f"{account} is not liquidatable: account value {format_amount(before.value)} USDC, "
            f"maintenance margin {format_amount(before.mm)} USDC"
        )
    for k in range(1, STEPS + 1):
        legs, changes = _close_share(account, k, state, balances)
        penalty = int(PENALTY * before.mm * k // STEPS)
        after = {key: balances.get(key, 0) + legs.get(*key) for key in _keys(legs)}
        undo = changes.apply(state)
        try:
            summary = summarize(account, lookup(balances, after), state, now_us)
        finally:
            undo()
        value = summary.value - penalty
        if k == STEPS or (value > 0 and summary.mm < TARGET_RATIO * value):
            break
    usdc = balances.get((account, USDC.code), 0) + legs.get(account, USDC.code)
    legs.move(account, INSURANCE, USDC.code, min(penalty, max(0, usdc)))
    return legs, changes, before


def _keys(legs: Legs) -> list[tuple[str, str]]:
    return [(p.account, p.asset) for p in legs.postings()]
