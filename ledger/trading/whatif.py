"""What-if margin: an account's summary after a hypothetical fill, writing nothing.

``parse_trade("buy 2 BTC-USD-PERP @ 70000")`` reads the trade; :func:`simulate` applies it
to a copy of the account's balances with the same code a real fill uses (as the taker, so
fees are the taker's) and values the result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from ledger.core.amounts import USDC, Asset, parse_amount
from ledger.errors import InvalidMarketEvent
from ledger.trading.fills import check_open, check_steps, fill_side
from ledger.trading.plan import Changes, lookup
from ledger.trading.positions import Legs
from ledger.trading.state import TradingState
from ledger.trading.valuation import AccountSummary, summarize

_TRADE = re.compile(
    r"^\s*(buy|sell)\s+([0-9]+(?:\.[0-9]+)?)\s+(\S+)\s*@\s*([0-9]+(?:\.[0-9]+)?)\s*$"
)


class Hypothetical(NamedTuple):
    """A trade to simulate: side, market, size (size units), price (USDC base units)."""

    side: str
    market: str
    size: int
    price: int


def parse_trade(text: str, state: TradingState) -> Hypothetical:
    """Read ``"buy|sell SIZE MARKET @ PRICE"`` (decimal size in whole units, price in USDC)."""
    match = _TRADE.match(text)
    if match is None:
        raise InvalidMarketEvent(
            f"cannot read the trade {text!r}: write e.g. 'buy 2 BTC-USD-PERP @ 70000'"
        )
    side, size, market, price = match.groups()
    inst = state.instrument(market)
    scale = Asset("SIZE", len(str(inst.size_scale)) - 1)
    return Hypothetical(side, market, parse_amount(size, scale), parse_amount(price, USDC))


def simulate(
    account: str,
    trade: Hypothetical,
    state: TradingState,
    balances: Mapping[tuple[str, str], int],
    now_us: int,
) -> AccountSummary:
    """``account``'s summary after ``trade`` (the state is left as it was)."""
    inst = state.instrument(trade.market)
    config = state.config
    assert config is not None  # state.instrument refuses an unlisted ledger
    check_steps(trade.size, trade.price, config.underlyings[inst.underlying])
    check_open(inst, state, now_us)
    legs, changes = Legs(), Changes()
    ds = trade.size if trade.side == "buy" else -trade.size
    size = balances.get((account, trade.market), 0)
    fill_side(legs, changes, state, inst, account, size, ds, trade.price, True)
    after = {
        (p.account, p.asset): balances.get((p.account, p.asset), 0) + p.amount
        for p in legs.postings()
    }
    undo = changes.apply(state)
    try:
        return summarize(account, lookup(balances, after), state, now_us, detail=True)
    finally:
        undo()
