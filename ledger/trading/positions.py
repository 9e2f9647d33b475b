"""Position arithmetic shared by fills, liquidations and settlement: cost basis, realised
PnL, accrued funding, and the collection of legs into zero-sum postings.

Costs and notionals are exact: sizes are on the instrument's size step and prices on its
tick, and ``size_step x price_tick`` is a multiple of ``size_scale`` (the configuration
refuses anything else), so ``size x price // size_scale`` never rounds.

Realised perp PnL is posted against ``system:clearing``. Opening adds ``ds x price`` to the
opener's cost; closing removes the cost share of the closed units and realises their value
at the trade price minus that share. Summed over both sides of a trade, realised PnL equals
the change of all costs, so ``system:clearing`` holds exactly minus the sum of open costs.
"""

from __future__ import annotations

from typing import NamedTuple

from ledger.core.journal import Posting
from ledger.trading.state import FUNDING_SCALE, Position


class Trade(NamedTuple):
    """The outcome of changing a position by ``ds`` at ``price``."""

    cost: int  # the new cost basis
    realised: int  # PnL of the closed units, USDC base units


def trade(size: int, cost: int, ds: int, price: int, scale: int) -> Trade:
    """Change a position of ``size`` (cost ``cost``) by ``ds`` units at ``price``."""
    assert ds != 0
    if size == 0 or (size > 0) == (ds > 0):
        return Trade(cost + ds * price // scale, 0)
    closed = min(abs(ds), abs(size))
    removed_cost = cost if closed == abs(size) else cost * closed // abs(size)
    sign = 1 if size > 0 else -1
    realised = sign * closed * price // scale - removed_cost
    cost -= removed_cost
    rest = abs(ds) - closed
    if rest:  # the trade flips the position: the rest opens on the other side
        cost += (rest if ds > 0 else -rest) * price // scale
    return Trade(cost, realised)


def accrued_funding(size: int, position: Position | None, funding_index: int, scale: int) -> int:
    """Funding a position has accrued since its snapshot (positive: received), rounded
    down so that the ledger never rounds in the account's favour."""
    if position is None or size == 0:
        return 0
    return -size * (funding_index - position.funding) // (scale * FUNDING_SCALE)


class Legs:
    """Amounts per ``(account, asset)``, merged and emitted in first-touched order."""

    __slots__ = ("_amounts",)

    def __init__(self) -> None:
        self._amounts: dict[tuple[str, str], int] = {}

    def add(self, account: str, asset: str, amount: int) -> None:
        if amount:
            key = (account, asset)
            self._amounts[key] = self._amounts.get(key, 0) + amount

    def move(self, source: str, target: str, asset: str, amount: int) -> None:
        """``amount`` from ``source`` to ``target`` (negative: the other way)."""
        self.add(source, asset, -amount)
        self.add(target, asset, amount)

    def get(self, account: str, asset: str) -> int:
        return self._amounts.get((account, asset), 0)

    def postings(self) -> tuple[Posting, ...]:
        return tuple(Posting(a, asset, x) for (a, asset), x in self._amounts.items() if x)
