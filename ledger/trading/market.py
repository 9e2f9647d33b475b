"""Market data as journal events: the instrument listing, and price updates (index, mark,
implied vol) that also tick each perpetual's funding index.

Funding (reference: margin-model.md): on every mark tick of a perp, its index grows by
``rate x S x dt / 8h`` for the rate in force since the previous tick (a gap over 30 s counts
as dt = 0), then the rate is recomputed from the new premium:
``rate = clip(premium + clip(interest - premium, -clamp, clamp), -max, max)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from fractions import Fraction
from typing import Any

from ledger.core.amounts import MAX_AMOUNT, format_amount
from ledger.errors import InvalidMarketEvent
from ledger.margin.config import MarginConfig
from ledger.margin.params import PerpParams, UnderlyingParams
from ledger.trading.state import FUNDING_SCALE, Market, TradingState, parse_listing

EIGHT_HOURS_US = 8 * 3600 * 1_000_000
MAX_TICK_GAP_US = 30 * 1_000_000
MAX_PRICES_PER_UPDATE = 256
_IV = re.compile(r"^[0-9]{1,2}(\.[0-9]{1,8})?$")


def check_listing(text: object) -> MarginConfig:
    """Validate the configuration a listing carries (raises InvalidConfig)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidMarketEvent("a listing carries its configuration as TOML text")
    return parse_listing(text)


def price_units(value: object, what: str, params: UnderlyingParams) -> int:
    """A price in USDC base units: a positive integer on the underlying's tick."""
    if type(value) is not int:
        raise InvalidMarketEvent(
            f"{what} must be an integer number of USDC base units, got {value!r}"
        )
    if not 0 < value <= MAX_AMOUNT:
        raise InvalidMarketEvent(f"{what} must be positive and within 64 bits, got {value}")
    if value % params.price_tick:
        raise InvalidMarketEvent(
            f"{what} {format_amount(value)} USDC is not on the price tick of "
            f"{format_amount(params.price_tick)} USDC"
        )
    return value


def implied_vol(value: object, what: str) -> str:
    """An implied volatility: a decimal string in (0, 10] (0.55 is 55%)."""
    if not isinstance(value, str) or not _IV.match(value) or not 0 < Fraction(value) <= 10:
        raise InvalidMarketEvent(f'{what} must be a decimal string in (0, 10], e.g. "0.55"')
    return value


def funding_rate(mark: int, index: int, params: PerpParams) -> Fraction:
    """The 8-hour funding rate for a mark/index premium."""
    premium = Fraction(mark - index, index)
    clamp = params.funding_clamp
    inner = min(max(params.funding_interest - premium, -clamp), clamp)
    return min(max(premium + inner, -params.funding_max), params.funding_max)


def tick_funding(market: Market, index: int, params: PerpParams, now_us: int) -> Market:
    """Accrue the rate in force since the last tick, then set the rate for the new mark."""
    funding_index = market.funding_index
    elapsed = now_us - market.funding_at if market.funding_at else 0
    if 0 < elapsed <= MAX_TICK_GAP_US:
        growth = Fraction(market.funding_rate) * index * elapsed * FUNDING_SCALE / EIGHT_HOURS_US
        funding_index += math.floor(growth)
    rate = funding_rate(market.mark, index, params)
    return replace(
        market,
        funding_index=funding_index,
        funding_rate=f"{rate.numerator}/{rate.denominator}" if rate.denominator != 1 else str(rate),
        funding_at=now_us,
    )


def price_changes(prices: object, state: TradingState, now_us: int) -> dict[str, Market]:
    """The markets a price update changes (validated: unknown names, non-positive or
    off-tick prices, non-integers, NaN and the like are refused)."""
    config = state.config
    if config is None:
        raise InvalidMarketEvent("list instruments before publishing prices")
    if not isinstance(prices, Mapping) or not prices:
        raise InvalidMarketEvent('a price update needs "prices": {name: {index|mark|iv: ...}}')
    if len(prices) > MAX_PRICES_PER_UPDATE:
        raise InvalidMarketEvent(f"at most {MAX_PRICES_PER_UPDATE} prices per update")
    out: dict[str, Market] = {}
    for name, fields in prices.items():
        if not isinstance(fields, Mapping) or not fields:
            raise InvalidMarketEvent(
                f'prices of {name!r} must be an object such as {{"mark": ...}}'
            )
        if name in config.underlyings:
            out[name] = _index_update(name, fields, config.underlyings[name], state)
        else:
            out[name] = _instrument_update(name, fields, state)
    for name, market in list(out.items()):
        if name in config.underlyings:
            continue
        inst = state.instrument(name)
        if inst.kind == "perp":
            underlying = out.get(inst.underlying) or state.market(inst.underlying)
            if underlying.index:
                params = config.underlyings[inst.underlying]
                out[name] = tick_funding(market, underlying.index, params.perp, now_us)
    return out


def _index_update(
    name: str, fields: Mapping[str, Any], params: UnderlyingParams, state: TradingState
) -> Market:
    if set(fields) != {"index"}:
        raise InvalidMarketEvent(f"underlying {name} takes only an index price")
    return replace(
        state.market(name), index=price_units(fields["index"], f"index of {name}", params)
    )


def _instrument_update(name: str, fields: Mapping[str, Any], state: TradingState) -> Market:
    inst = state.instrument(name)
    config = state.config
    assert config is not None
    params = config.underlyings[inst.underlying]
    allowed = {"mark", "iv"} if inst.kind == "option" else {"mark"}
    if inst.kind == "spot" or not set(fields) <= allowed or "mark" not in fields:
        raise InvalidMarketEvent(
            f"{name} takes {' and '.join(sorted(allowed))}; spot pairs are priced by their "
            "underlying's index"
        )
    market = state.market(name)
    if market.settled:
        raise InvalidMarketEvent(f"{name} has settled: it takes no more prices")
    update: dict[str, Any] = {"mark": price_units(fields["mark"], f"mark of {name}", params)}
    if "iv" in fields:
        update["iv"] = implied_vol(fields["iv"], f"iv of {name}")
    return replace(market, **update)
