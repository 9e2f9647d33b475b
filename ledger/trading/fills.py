"""Fills: one atomic transaction moving a spot pair, perp or option between two accounts.

A fill's request names the market, price, size, which side was the maker, and carries both
signed orders; the ledger checks the orders allow it and computes the postings:

* spot: the buyer pays ``size x price`` USDC for ``size`` of the base asset;
* perp: ``+size`` / ``-size`` of the perp's asset, no cash at open; each side first realises
  its accrued funding (against ``system:funding``), then the PnL of any units it closes
  (against ``system:clearing``);
* option: ``+size`` / ``-size`` of the option's asset and the premium ``size x price`` in USDC.

Fees go to ``system:fees``: maker/taker rates of notional for spot and perps; for options
``fee_rate x S x size``, capped at ``fee_cap x premium``. Both sides are margin-checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from ledger.core.accounts import CLEARING, FEES, FUNDING, owner_of
from ledger.core.amounts import USDC, Asset, format_amount
from ledger.core.authorization import AuthState
from ledger.core.orders import BUY, SELL, FillViolatesOrder, Order, check_fill
from ledger.errors import (
    InstrumentClosed,
    InvalidMarginMode,
    InvalidMarketEvent,
    MarketDataMissing,
    NotOnboarded,
    NotOwner,
)
from ledger.margin.instruments import Instrument
from ledger.margin.params import UnderlyingParams
from ledger.trading.plan import Changes
from ledger.trading.positions import Legs, accrued_funding, trade
from ledger.trading.state import ISOLATED, Position, TradingState, listed_instrument


def check_steps(size: int, price: int, params: UnderlyingParams) -> None:
    """Sizes are multiples of the underlying's size step and prices of its price tick."""
    base = Asset(params.name, len(str(params.size_scale)) - 1)
    if size % params.size_step:
        raise InvalidMarketEvent(
            f"size {format_amount(size, base)} {base.code} is not a multiple of the size step "
            f"{format_amount(params.size_step, base)}"
        )
    if price % params.price_tick:
        raise InvalidMarketEvent(
            f"price {format_amount(price)} USDC is not on the price tick of "
            f"{format_amount(params.price_tick)} USDC"
        )


class FillSpec:
    """The fill's own fields, validated against the instrument's steps."""

    __slots__ = ("maker", "market", "price", "size")

    def __init__(self, data: Mapping[str, Any], params: UnderlyingParams) -> None:
        market, price, size, maker = (data.get(k) for k in ("market", "price", "size", "maker"))
        for name, value in (("price", price), ("size", size)):
            if type(value) is not int or value <= 0:
                raise InvalidMarketEvent(f"fill {name} must be a positive integer, got {value!r}")
        assert isinstance(price, int) and isinstance(size, int)
        check_steps(size, price, params)
        if maker not in (BUY, SELL):
            raise InvalidMarketEvent(f'fill maker must be "buy" or "sell", got {maker!r}')
        self.market, self.price, self.size, self.maker = str(market), price, size, str(maker)


def read_orders(meta: Mapping[str, Any], auth_state: AuthState) -> tuple[Order, Order]:
    """The buy and sell orders a fill carries, each signed by the onboarded key of the
    owner of the account it trades for."""
    orders = []
    for side in (BUY, SELL):
        order, owner, stark_key = Order.from_envelope(meta.get(side))
        if auth_state.wallets.get(owner) != stark_key:
            raise NotOnboarded(f"the {side} order is not signed by {owner}'s onboarded L2 key")
        if owner_of(order.account) != owner:
            raise NotOwner(f"{owner} cannot trade for {order.account}: it does not own it")
        orders.append(order)
    return orders[0], orders[1]


def check_open(inst: Instrument, state: TradingState, now_us: int) -> None:
    """Refuse trading an option that has expired or settled."""
    if inst.expiry is not None and now_us >= inst.expiry.timestamp() * 1_000_000:
        raise InstrumentClosed(f"{inst.name} expired at {inst.expiry.isoformat()}")
    if state.market(inst.name).settled:
        raise InstrumentClosed(f"{inst.name} has settled")


def _check_isolated(account: str, inst: Instrument, state: TradingState) -> None:
    if state.mode(account).mode != ISOLATED:
        return
    others = state.holdings(account) - {inst.name}
    if inst.kind == "spot" or others:
        raise InvalidMarginMode(
            f"{account} is isolated: it holds one perp or option market"
            + (f" ({', '.join(sorted(others))})" if others else "")
            + f", not {inst.name}"
        )


def plan_fill(
    meta: Mapping[str, Any],
    state: TradingState,
    balance: Mapping[tuple[str, str], int],
    auth_state: AuthState,
    now_us: int,
) -> tuple[Legs, Changes, tuple[str, str]]:
    """Legs and state changes of a fill, and the two accounts to margin-check."""
    config = state.config
    name = meta.get("market")
    if config is None or not isinstance(name, str):
        raise InvalidMarketEvent("a fill names a listed market")
    inst = listed_instrument(state.config_text, name)
    params = config.underlyings[inst.underlying]
    spec = FillSpec(meta, params)
    check_open(inst, state, now_us)
    buy, sell = read_orders(meta, auth_state)
    if owner_of(buy.account) == owner_of(sell.account):
        raise FillViolatesOrder(
            f"{owner_of(buy.account)} cannot trade with itself: {buy.account} and "
            f"{sell.account} have one owner"
        )
    filled = {o.order_id: state.filled.get(o.order_id, 0) for o in (buy, sell)}
    check_fill(buy, sell, name, spec.price, spec.size, filled, now_us // 1_000_000)
    for order in (buy, sell):
        _check_isolated(order.account, inst, state)
    changes = Changes(filled={buy.order_id: spec.size, sell.order_id: spec.size})
    legs = Legs()
    for account, ds, side in ((buy.account, spec.size, BUY), (sell.account, -spec.size, SELL)):
        size = balance.get((account, name), 0)
        fill_side(legs, changes, state, inst, account, size, ds, spec.price, side != spec.maker)
    return legs, changes, (buy.account, sell.account)


def fill_side(
    legs: Legs,
    changes: Changes,
    state: TradingState,
    inst: Instrument,
    account: str,
    size: int,
    ds: int,
    price: int,
    taker: bool,
) -> None:
    """One side of a fill: ``account`` (holding ``size``) trades ``ds`` at ``price``."""
    config = state.config
    assert config is not None
    params = config.underlyings[inst.underlying]
    notional = abs(ds) * price // inst.size_scale
    fee = math.ceil((params.perp.taker_fee if taker else params.perp.maker_fee) * notional)
    if inst.kind == "spot":
        legs.add(account, inst.underlying, ds)
    else:
        change_position(legs, changes, state, account, inst, size, ds, price)
    if inst.kind != "perp":  # spot and options move cash now: the price or premium
        legs.add(account, USDC.code, -notional if ds > 0 else notional)
    if inst.kind == "option":
        fee = option_fee(params, _index(state, inst), abs(ds), notional)
    legs.move(account, FEES, USDC.code, fee)


def option_fee(params: UnderlyingParams, index: int, size: int, premium: int) -> int:
    """min(fee_rate x S x size, fee_cap x premium), rounded up."""
    op = params.option
    return math.ceil(
        min(op.fee_rate * Fraction(index * size, params.size_scale), op.fee_cap * premium)
    )


def _index(state: TradingState, inst: Instrument) -> int:
    index = state.market(inst.underlying).index
    if not index:
        raise MarketDataMissing(f"no index price for {inst.underlying} yet: publish one first")
    return index


def change_position(
    legs: Legs,
    changes: Changes,
    state: TradingState,
    account: str,
    inst: Instrument,
    size: int,
    ds: int,
    price: int,
) -> None:
    """Move ``account``'s position in ``inst`` (now ``size``) by ``ds`` at ``price``: the
    position's legs, for perps its funding and realised PnL, and its new cost basis."""
    key = (account, inst.name)
    position = changes.positions.get(key, state.positions.get(key))
    market = state.market(inst.name)
    cost = position.cost if position is not None else 0
    if inst.kind == "perp":
        funding = accrued_funding(size, position, market.funding_index, inst.size_scale)
        legs.move(FUNDING, account, USDC.code, funding)
    result = trade(size, cost, ds, price, inst.size_scale)
    if inst.kind == "perp":
        legs.move(CLEARING, account, USDC.code, result.realised)
    legs.add(account, inst.name, ds)
    new_size = size + ds
    changes.positions[key] = Position(result.cost, market.funding_index) if new_size else None
