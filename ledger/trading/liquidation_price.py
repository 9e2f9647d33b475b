"""Liquidation prices: where an account's value crosses its maintenance margin as the
underlying moves.

For each underlying the account is exposed to, the index is moved by a factor x (all
other underlyings stay put): perp marks move with it (the basis is kept), option marks are
repriced with Black-76 at the moved index and their current vol, spot at the moved index.
f(x) = AV(x) - MMR(x) is sampled on a geometric grid from x = 0.05 to 5 and every sign
change is refined by bisection. Option books are not monotonic, so there may be several
crossings, or none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from ledger.margin import black76
from ledger.trading.plan import lookup
from ledger.trading.state import TradingState, listed_instrument
from ledger.trading.valuation import US_PER_DAY, summarize

GRID = 160
LOW, HIGH = 0.05, 5.0
BISECTIONS = 40


def _moved(state: TradingState, underlying: str, factor: float, now_us: int) -> TradingState:
    markets = dict(state.markets)
    index = state.market(underlying).index
    markets[underlying] = replace(markets[underlying], index=max(1, round(index * factor)))
    for name, market in state.markets.items():
        if name == underlying or not market.mark:
            continue
        inst = listed_instrument(state.config_text, name)
        if inst.underlying != underlying:
            continue
        if inst.kind == "perp":
            mark = round(market.mark * factor)
        else:
            assert inst.expiry is not None and inst.strike is not None and inst.option_kind
            years = max(0.0, (inst.expiry.timestamp() * 1e6 - now_us) / US_PER_DAY / 365.0)
            iv = float(market.iv) if market.iv else 0.5
            mark = round(black76.price(inst.option_kind, index * factor, inst.strike, years, iv))
        markets[name] = replace(market, mark=max(1, mark))
    return replace(state, markets=markets, dirty=set())


def liquidation_prices(
    account: str, state: TradingState, balances: Mapping[tuple[str, str], int], now_us: int
) -> dict[str, list[int]]:
    """Per underlying, the index prices (USDC base units, to the price tick) where
    AV = MMR."""
    config = state.config
    if config is None:
        return {}
    value = lookup(balances)
    exposed = sorted(
        {listed_instrument(state.config_text, n).underlying for n in state.holdings(account)}
        | {u for u in config.underlyings if value(account, u)}
    )
    out: dict[str, list[int]] = {}
    for underlying in exposed:
        index = state.market(underlying).index
        if not index:
            continue

        def gap(x: float, u: str = underlying) -> int:
            s = summarize(account, value, _moved(state, u, x, now_us), now_us)
            return s.value - s.mm

        xs = [LOW * (HIGH / LOW) ** (i / GRID) for i in range(GRID + 1)]
        values = [gap(x) for x in xs]
        roots = []
        for i in range(GRID):
            a, b, fa = xs[i], xs[i + 1], values[i]
            if (fa < 0) == (values[i + 1] < 0):
                continue
            for _ in range(BISECTIONS):
                mid = (a + b) / 2
                if (gap(mid) < 0) == (fa < 0):
                    a = mid
                else:
                    b = mid
            # To the tick on the liquidatable side: the reported price already liquidates.
            tick = config.underlyings[underlying].price_tick
            ticks = index * (a + b) / 2 / tick
            roots.append((math.ceil(ticks) if fa >= 0 else math.floor(ticks)) * tick)
        out[underlying] = roots
    return out
