"""A planned transition: its postings, the trading-state changes it makes, and the margin
check of the accounts that initiated it.

The journal calls :meth:`Plan.check` with the balances the postings lead to, then
:meth:`Plan.commit`. ``check`` applies the state changes (so that the accounts can be valued
after the transition) and undoes them if any account fails, so a rejected transition leaves
the state exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ledger.core.amounts import USDC, format_amount
from ledger.core.journal import Posting, PostingRecord
from ledger.errors import InsufficientMargin
from ledger.trading.state import AccountMode, Market, Position, TradingState
from ledger.trading.valuation import AccountSummary, summarize

Balances = Mapping[tuple[str, str], int]


@dataclass(slots=True)
class Changes:
    """Trading-state changes of one transition, applied only once it is accepted."""

    positions: dict[tuple[str, str], Position | None] = field(default_factory=dict)
    modes: dict[str, AccountMode] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)
    markets: dict[str, Market] = field(default_factory=dict)
    config_text: str | None = None

    def apply(self, state: TradingState) -> Callable[[], None]:
        """Apply to ``state`` and return the function that undoes it."""
        old_positions = {k: state.positions.get(k) for k in self.positions}
        old_modes = {k: state.modes.get(k) for k in self.modes}
        old_filled = {k: state.filled.get(k) for k in self.filled}
        old_markets = {k: state.markets.get(k) for k in self.markets}
        old_config = state.config_text
        for (account, instrument), position in self.positions.items():
            state.set_position(account, instrument, position)
        for account, mode in self.modes.items():
            state.set_mode(account, mode)
        for order_id, size in self.filled.items():
            state.add_filled(order_id, size)
        for name, market in self.markets.items():
            state.touch_market(name)
            state.markets[name] = market
        if self.config_text is not None:
            state.config_text = self.config_text
            state.dirty.add(("config", "listing"))

        def undo() -> None:
            for (account, instrument), position in old_positions.items():
                state.set_position(account, instrument, position)
            for account, mode in old_modes.items():
                if mode is None:
                    state.modes.pop(account, None)
                else:
                    state.modes[account] = mode
            for order_id, size in old_filled.items():
                if size is None:
                    state.filled.pop(order_id, None)
                else:
                    state.filled[order_id] = size
            for name, market in old_markets.items():
                if market is None:
                    state.markets.pop(name, None)
                else:
                    state.markets[name] = market
            state.config_text = old_config

        return undo


def lookup(balances: Balances, after: Balances | None = None) -> Callable[[str, str], int]:
    """A balance lookup of ``(account, asset)``, ``after`` taking precedence."""
    if after is None:
        return lambda account, asset: balances.get((account, asset), 0)
    return lambda account, asset: after.get((account, asset), balances.get((account, asset), 0))


def require_margin(what: str, before: AccountSummary, after: AccountSummary) -> None:
    """Accept if AV' >= IMR', or if the transition reduces risk (the dYdX rule):
    MMR' <= MMR and AV'/MMR' >= AV/MMR. Otherwise say which requirement fails by how much."""
    if after.value >= after.im:
        return
    reduces = after.mm == 0 or after.value * before.mm >= before.value * after.mm
    if before.mm > 0 and after.mm <= before.mm and reduces:
        return
    short = after.im - after.value
    raise InsufficientMargin(
        f"insufficient margin: after this {what}, account {after.account} would need "
        f"{format_amount(after.im, USDC)} USDC initial margin and have "
        f"{format_amount(after.value, USDC)} account value ({format_amount(short, USDC)} short)"
        + ("; it does not reduce risk either" if before.mm else "")
    )


@dataclass(slots=True)
class Plan:
    """A transition of the trading rules (see module doc); the journal's ``Transition``."""

    postings: tuple[Posting, ...]
    state: TradingState
    balances: Balances
    now_us: int
    what: str
    is_position: Callable[[str], bool]
    changes: Changes = field(default_factory=Changes)
    checked: Sequence[str] = ()

    def check(self, after: Balances) -> None:
        state, now = self.state, self.now_us
        undo = self.changes.apply(state)
        try:
            value = lookup(self.balances, after)
            short = [s for s in (summarize(a, value, state, now) for a in self.checked)]
            short = [s for s in short if s.value < s.im]
        except BaseException:
            undo()
            raise
        if not short:
            return
        # Only an account left under its initial margin needs its value before the
        # transition (whether it reduced risk): value it on the state without the changes.
        undo()
        before = {s.account: summarize(s.account, lookup(self.balances), state, now) for s in short}
        undo = self.changes.apply(state)
        try:
            for summary in short:
                require_margin(self.what, before[summary.account], summary)
        except BaseException:
            undo()
            raise

    def commit(self, legs: Sequence[PostingRecord]) -> None:
        """Keep each instrument's open interest (the sum of long sizes) in step."""
        state = self.state
        for leg in legs:
            if self.is_position(leg.asset):
                before = leg.balance_after - leg.amount
                delta = max(0, leg.balance_after) - max(0, before)
                if delta:
                    state.touch_market(leg.asset).open_interest += delta
