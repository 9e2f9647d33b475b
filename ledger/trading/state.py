"""The trading state the margin rules decide on, beside the balances.

Everything here is a projection of the journal (listings, price updates, fills, settlements):
replaying the journal from genesis rebuilds it exactly, and audit compares the stored copy
with the replayed one. Position *sizes* are balances of the instrument's asset; what the
balances cannot hold lives here: each position's cost basis and funding snapshot, the
published market data, each account's margin mode, and how much of each order is filled.

The store persists it as rows ``(scope, key, value)``; :meth:`TradingState.rows` and
:meth:`TradingState.load_rows` are the only place that knows that layout.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from ledger.core.encoding import canonical_json
from ledger.errors import UnknownInstrument
from ledger.margin.config import MarginConfig, load_config_text
from ledger.margin.instruments import Instrument

CROSS = "cross"
ISOLATED = "isolated"
PORTFOLIO = "portfolio"
MODES = (CROSS, ISOLATED, PORTFOLIO)

# The funding index is kept in USDC base units per whole unit of the underlying, times this.
FUNDING_SCALE = 10**9

SCOPE_CONFIG = "config"
SCOPE_MARKET = "market"
SCOPE_POSITION = "position"
SCOPE_MODE = "mode"
SCOPE_ORDER = "order"


def row_account(scope: str, key: str) -> str:
    """The account a stored row belongs to ('' for ledger-wide rows), so that a batch
    loads only the rows of the accounts it touches."""
    if scope == SCOPE_POSITION:
        return key.partition("|")[0]
    return key if scope == SCOPE_MODE else ""


class Position(NamedTuple):
    """What a position's balance does not say: its cost and its funding snapshot.

    ``cost`` is the signed entry notional in USDC base units (long > 0, short < 0), so the
    entry price is ``cost x size_scale / size``; ``funding`` is the market's funding index
    when funding was last realised on this position.
    """

    cost: int
    funding: int


MAX_LEVERAGE = 100


class AccountMode(NamedTuple):
    """An account's margin mode and the leverage it chose for perps (IMF = max(1 /
    leverage, IMF_base): the default, the maximum, leaves each market's IMF_base)."""

    mode: str = CROSS
    leverage: int = MAX_LEVERAGE


@dataclass(slots=True)
class Market:
    """Published data of one instrument (mark, implied vol, funding) or of one underlying
    (its index price). ``open_interest`` is the sum of long sizes; ``settled`` the price an
    option settled at (it trades no more)."""

    mark: int = 0
    index: int = 0
    iv: str = ""
    funding_index: int = 0
    funding_rate: str = "0"
    funding_at: int = 0
    open_interest: int = 0
    settled: int = 0

    def to_json(self) -> str:
        return canonical_json({k: getattr(self, k) for k in self.__slots__ if getattr(self, k)})

    @classmethod
    def from_json(cls, text: str) -> Market:
        return cls(**json.loads(text))


@lru_cache(maxsize=8)
def parse_listing(text: str) -> MarginConfig:
    """The configuration a listing recorded (cached: every batch loads it)."""
    return load_config_text(text, "listing")


@lru_cache(maxsize=1 << 14)
def listed_instrument(config_text: str, name: str) -> Instrument:
    """Parse ``name`` against a listing (cached: names repeat on every check)."""
    return parse_listing(config_text).instrument(name)


@dataclass(slots=True)
class TradingState:
    """Market data, positions' cost basis, margin modes and order fills (see module doc).

    A per-batch overlay in the store (only what the batch touches is loaded), the whole
    state in a replay. ``dirty`` names the rows a batch changed.
    """

    config_text: str = ""
    markets: dict[str, Market] = field(default_factory=dict)
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    modes: dict[str, AccountMode] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)
    by_account: dict[str, set[str]] = field(default_factory=dict)
    dirty: set[tuple[str, str]] = field(default_factory=set)

    @property
    def config(self) -> MarginConfig | None:
        return parse_listing(self.config_text) if self.config_text else None

    def instrument(self, name: str) -> Instrument:
        """The instrument ``name`` as listed (raises UnknownInstrument / InvalidInstrument)."""
        if not self.config_text:
            raise UnknownInstrument(f"no instruments are listed yet, so {name!r} cannot trade")
        return listed_instrument(self.config_text, name)

    def market(self, name: str) -> Market:
        """The published data of ``name`` (empty if none yet; not stored by reading)."""
        return self.markets.get(name) or Market()

    def touch_market(self, name: str) -> Market:
        """The stored market record of ``name``, to change in place (marked dirty)."""
        self.dirty.add((SCOPE_MARKET, name))
        market = self.markets.get(name)
        if market is None:
            market = self.markets[name] = Market()
        return market

    def holdings(self, account: str) -> set[str]:
        """Instruments (perps and options) the account holds a position in."""
        return self.by_account.get(account) or set()

    def set_position(self, account: str, instrument: str, position: Position | None) -> None:
        """Record (or, with None, drop) the cost basis of an account's position."""
        key = (account, instrument)
        self.dirty.add((SCOPE_POSITION, f"{account}|{instrument}"))
        if position is None:
            self.positions.pop(key, None)
            held = self.by_account.get(account)
            if held is not None:
                held.discard(instrument)
        else:
            self.positions[key] = position
            self.by_account.setdefault(account, set()).add(instrument)

    def set_mode(self, account: str, mode: AccountMode) -> None:
        self.modes[account] = mode
        self.dirty.add((SCOPE_MODE, account))

    def mode(self, account: str) -> AccountMode:
        return self.modes.get(account) or AccountMode()

    def add_filled(self, order_id: str, size: int) -> None:
        self.filled[order_id] = self.filled.get(order_id, 0) + size
        self.dirty.add((SCOPE_ORDER, order_id))

    # ------------------------------------------------------------------ persistence
    def value(self, scope: str, key: str) -> str | None:
        """The stored form of one row (None: the row is gone)."""
        if scope == SCOPE_CONFIG:
            return self.config_text or None
        if scope == SCOPE_MARKET:
            market = self.markets.get(key)
            return None if market is None else market.to_json()
        if scope == SCOPE_POSITION:
            account, _, instrument = key.partition("|")
            position = self.positions.get((account, instrument))
            return None if position is None else f"{position.cost},{position.funding}"
        if scope == SCOPE_MODE:
            mode = self.modes.get(key)
            return None if mode is None else f"{mode.mode},{mode.leverage}"
        assert scope == SCOPE_ORDER, scope
        filled = self.filled.get(key)
        return None if filled is None else str(filled)

    def rows(
        self, keys: Iterable[tuple[str, str]] | None = None
    ) -> Iterator[tuple[str, str, str | None]]:
        """``(scope, key, value)`` for ``keys`` (default: every row of the state)."""
        if keys is None:
            keys = self.all_keys()
        for scope, key in keys:
            yield scope, key, self.value(scope, key)

    def all_keys(self) -> list[tuple[str, str]]:
        keys = [(SCOPE_CONFIG, "listing")] if self.config_text else []
        keys += [(SCOPE_MARKET, name) for name in self.markets]
        keys += [(SCOPE_POSITION, f"{a}|{i}") for a, i in self.positions]
        keys += [(SCOPE_MODE, account) for account in self.modes]
        keys += [(SCOPE_ORDER, order) for order in self.filled]
        return sorted(keys)

    def load_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """Fill the state from stored rows (no row is marked dirty)."""
        for scope, key, value in rows:
            if scope == SCOPE_CONFIG:
                self.config_text = value
            elif scope == SCOPE_MARKET:
                self.markets[key] = Market.from_json(value)
            elif scope == SCOPE_POSITION:
                account, _, instrument = key.partition("|")
                cost, funding = value.split(",")
                self.positions[(account, instrument)] = Position(int(cost), int(funding))
                self.by_account.setdefault(account, set()).add(instrument)
            elif scope == SCOPE_MODE:
                mode, leverage = value.split(",")
                self.modes[key] = AccountMode(mode, int(leverage))
            elif scope == SCOPE_ORDER:
                self.filled[key] = int(value)
