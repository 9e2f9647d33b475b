"""Option expiry: cash settlement at a settlement-price event.

Every option of one underlying and expiry date settles at price P: a holder of ``size``
receives (a short pays) ``size x payoff``, payoff = max(0, P - K) for calls and
max(0, K - P) for puts, and pays the settlement fee ``min(fee_rate x P, fee_cap x payoff)``
per unit; the positions close. Payoffs round down (a short pays the rounding), the dust goes
to ``system:fees``. The request lists the holders; every long unit of the open interest must
be among them, so no position is left behind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ledger.core.accounts import FEES
from ledger.core.amounts import USDC
from ledger.errors import InvalidMarketEvent
from ledger.margin.instruments import Instrument
from ledger.trading.market import price_units
from ledger.trading.plan import Changes
from ledger.trading.positions import Legs
from ledger.trading.state import TradingState, listed_instrument


def expiring(state: TradingState, underlying: str, expiry: str) -> list[Instrument]:
    """The options of ``underlying`` expiring on ``expiry`` (YYYYMMDD) that have open
    interest or a published price."""
    out = []
    for name in sorted(state.markets):
        if name.startswith(f"{underlying}-USD-{expiry}-"):
            inst = listed_instrument(state.config_text, name)
            if inst.kind == "option" and not state.markets[name].settled:
                out.append(inst)
    return out


def payoff(inst: Instrument, price: int) -> int:
    """Payoff per whole unit at settlement price ``price``."""
    assert inst.strike is not None
    return (
        max(0, price - inst.strike) if inst.option_kind == "call" else max(0, inst.strike - price)
    )


def plan_settlement(
    meta: Mapping[str, Any],
    state: TradingState,
    balances: Mapping[tuple[str, str], int],
    now_us: int,
) -> tuple[Legs, Changes]:
    """Legs and changes that settle every option of one underlying and expiry date."""
    config = state.config
    underlying, expiry, holders = meta.get("underlying"), meta.get("expiry"), meta.get("accounts")
    if (
        config is None
        or not isinstance(underlying, str)
        or underlying not in config.underlyings
        or not isinstance(expiry, str)
    ):
        raise InvalidMarketEvent("a settlement names a listed underlying and an expiry YYYYMMDD")
    if not isinstance(holders, list) or not all(isinstance(a, str) for a in holders):
        raise InvalidMarketEvent("a settlement lists the holders' accounts")
    params = config.underlyings[underlying]
    price = price_units(meta.get("price"), "settlement price", params)
    instruments = expiring(state, underlying, expiry)
    if not instruments:
        raise InvalidMarketEvent(f"no open {underlying} options expire on {expiry}")
    legs, changes = Legs(), Changes()
    for inst in instruments:
        assert inst.expiry is not None
        if now_us < inst.expiry.timestamp() * 1_000_000:
            raise InvalidMarketEvent(
                f"{inst.name} expires at {inst.expiry.isoformat()}: it cannot settle before"
            )
        per_unit = payoff(inst, price)
        market = state.market(inst.name)
        settled_long = 0
        for account in sorted(set(holders)):
            size = balances.get((account, inst.name), 0)
            if not size:
                continue
            legs.add(account, inst.name, -size)
            legs.move(FEES, account, USDC.code, size * per_unit // inst.size_scale)
            fee = math.ceil(
                min(
                    params.option.fee_rate * price * abs(size) / inst.size_scale,
                    params.option.fee_cap * per_unit * abs(size) / inst.size_scale,
                )
            )
            legs.move(account, FEES, USDC.code, fee)
            settled_long += max(0, size)
            changes.positions[(account, inst.name)] = None
        if settled_long != market.open_interest:
            raise InvalidMarketEvent(
                f"settlement of {inst.name} misses holders: "
                f"{market.open_interest - settled_long} long size units are not listed"
            )
        changes.markets[inst.name] = replace(market, settled=price, mark=0)
    return legs, changes
