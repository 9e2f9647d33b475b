"""Hypothesis properties of the trading rules.

1. ``positions.trade``, the cost-basis arithmetic every fill, liquidation and settlement
   goes through: summed over both sides of a trade, realised PnL equals the change of all
   costs (so ``system:clearing`` holds exactly minus the open costs), a full close leaves
   cost 0, and a round trip realises exactly ``size x (exit - entry) / size_scale``.
2. A state machine drives a real ledger (fresh SQLite database per example, a clock the
   test controls) with four funded accounts: price moves of up to 30% around a base price
   with funding ticks, spot, perp and option fills of freshly signed orders (and refills of
   partly filled ones), withdrawals, transfers, margin-mode changes, funding, liquidation
   and expiry settlement. A refused operation must leave the journal, the balances and the
   trading state untouched; an accepted account-initiated one must leave each initiating
   account with AV >= IMR or with less risk. After every step every asset sums to zero,
   ``system:clearing`` holds minus the open perp costs, no user balance is negative, cost
   entries exist exactly for non-zero positions and open interest is the sum of the longs;
   at the end the audit replays everything.
3. Liquidation cascades after price shocks keep the insurance fund's books consistent.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ledger import Ledger
from ledger.core import operations
from ledger.core.accounts import CLEARING, FEES, FUNDING, INSURANCE, is_system
from ledger.core.orders import FillViolatesOrder
from ledger.errors import (
    InstrumentClosed,
    InsufficientFunds,
    InsufficientMargin,
    InvalidMarketEvent,
    LedgerError,
    NotLiquidatable,
)
from ledger.trading.positions import trade
from ledger.trading.state import FUNDING_SCALE, AccountMode, TradingState
from ledger.trading.valuation import AccountSummary, summarize
from ledger.trading.whatif import Hypothetical
from ledger.wallet import Wallet
from tests.conftest import (
    ALICE,
    ALICE_WALLET,
    BOB,
    BOB_WALLET,
    CAROL,
    CAROL_WALLET,
    OPERATOR,
    STORES,
    drop_postgres_database,
    new_postgres_database,
)
from tests.conftest import test_wallet as make_wallet

SCALE = 10**8  # size units per whole BTC / ETH
STEP = 100_000  # size step (0.001)
TICK = 10_000  # price tick (0.01 USDC)
USDC = "USDC"

# ---------------------------------------------------------------------------------------
# 1. positions.trade()
# ---------------------------------------------------------------------------------------

SIZES = st.integers(1, 5_000).map(lambda n: n * STEP)  # 0.001 .. 5 units
PRICES = st.integers(1, 10_000_000).map(lambda n: n * TICK)  # 0.01 .. 100,000 USDC
PARTIES = st.sampled_from([(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)])
TRADES = st.lists(st.tuples(PARTIES, SIZES, PRICES), min_size=1, max_size=40)


def _assert_cost_sign(size: int, cost: int) -> None:
    """A long's cost is >= 0, a short's <= 0, a flat position's 0."""
    if size == 0:
        assert cost == 0
    elif size > 0:
        assert cost >= 0
    else:
        assert cost <= 0


@settings(max_examples=300, deadline=None)
@given(TRADES)
def test_realised_pnl_mirrors_cost_changes(trades: list[tuple[tuple[int, int], int, int]]) -> None:
    """Over both sides of every trade, realised PnL == change of the sum of costs; so the
    counterparty of realised PnL (system:clearing) always holds minus the open costs. Each
    side alone: realised - cost change == -ds x price / scale (its cash flow)."""
    sizes, costs = [0, 0, 0], [0, 0, 0]
    clearing = 0
    for (buyer, seller), size, price in trades:
        realised = 0
        cost_change = 0
        for who, ds in ((buyer, size), (seller, -size)):
            out = trade(sizes[who], costs[who], ds, price, SCALE)
            assert out.realised - (out.cost - costs[who]) == -ds * price // SCALE
            realised += out.realised
            cost_change += out.cost - costs[who]
            sizes[who] += ds
            costs[who] = out.cost
            _assert_cost_sign(sizes[who], costs[who])
        assert realised == cost_change
        clearing -= realised
        assert clearing == -sum(costs)
    assert sum(sizes) == 0


SIDE_TRADES = st.lists(
    st.tuples(st.booleans(), SIZES, PRICES), min_size=0, max_size=20
)  # (buy?, size, price) of one account against anyone


@settings(max_examples=300, deadline=None)
@given(SIDE_TRADES, PRICES)
def test_full_close_returns_cost_zero(trades: list[tuple[bool, int, int]], exit: int) -> None:
    """Whatever path led to a position, closing all of it leaves cost 0, and the PnL
    realised over the whole history is exactly the account's net cash flow."""
    size = cost = realised = cash = 0
    for buy, n, price in trades:
        ds = n if buy else -n
        out = trade(size, cost, ds, price, SCALE)
        size, cost, realised = size + ds, out.cost, realised + out.realised
        cash -= ds * price // SCALE
        _assert_cost_sign(size, cost)
    if size == 0:
        assert cost == 0
        assert realised == cash
        return
    out = trade(size, cost, -size, exit, SCALE)
    assert out.cost == 0
    assert out.realised == size * exit // SCALE - cost
    assert realised + out.realised == cash + size * exit // SCALE


def _split(total: int, cuts: list[int]) -> list[int]:
    """``total`` (a multiple of STEP) in pieces on the step, cut at ``cuts`` (0..1000)."""
    points = sorted({total * c // 1000 // STEP * STEP for c in cuts} - {0, total})
    bounds = [0, *points, total]
    return [b - a for a, b in pairwise(bounds)]


CUTS = st.lists(st.integers(0, 1000), max_size=5)


@settings(max_examples=300, deadline=None)
@given(SIZES, PRICES, PRICES, st.booleans(), CUTS, CUTS)
def test_round_trip_realises_exact_pnl(
    size: int, entry: int, exit: int, long: bool, open_cuts: list[int], close_cuts: list[int]
) -> None:
    """Open ``size`` at ``entry`` (in pieces), close it at ``exit`` (in pieces): the PnL
    realised is exactly size x (exit - entry) / scale, with no rounding at all."""
    sign = 1 if long else -1
    assert size * (exit - entry) % SCALE == 0  # step x tick is a multiple of the scale
    position = cost = realised = 0
    for piece in _split(size, open_cuts):
        out = trade(position, cost, sign * piece, entry, SCALE)
        assert out.realised == 0
        position, cost = position + sign * piece, out.cost
    assert cost == sign * size * entry // SCALE
    for piece in _split(size, close_cuts):
        out = trade(position, cost, -sign * piece, exit, SCALE)
        position, cost, realised = position - sign * piece, out.cost, realised + out.realised
        assert cost == sign * abs(position) * entry // SCALE  # the rest keeps its entry
    assert (position, cost) == (0, 0)
    assert realised == sign * size * (exit - entry) // SCALE


@settings(max_examples=200, deadline=None)
@given(SIZES, SIZES, PRICES, PRICES, st.booleans())
def test_flip_opens_the_rest_at_the_trade_price(
    size: int, more: int, entry: int, price: int, long: bool
) -> None:
    """Trading through zero closes the old side (realising its PnL) and opens the rest at
    the trade price."""
    sign = 1 if long else -1
    opened = trade(0, 0, sign * size, entry, SCALE)
    out = trade(sign * size, opened.cost, -sign * (size + more), price, SCALE)
    assert out.realised == sign * size * (price - entry) // SCALE
    assert out.cost == -sign * more * price // SCALE


# ---------------------------------------------------------------------------------------
# Shared by the ledger tests
# ---------------------------------------------------------------------------------------

DAVE_WALLET = make_wallet("dave")
DAVE = DAVE_WALLET.address
ACCOUNTS = (ALICE, BOB, CAROL, DAVE)
SIGNERS: dict[str, Wallet] = {
    ALICE: ALICE_WALLET,
    BOB: BOB_WALLET,
    CAROL: CAROL_WALLET,
    DAVE: DAVE_WALLET,
}
PAIRS = st.permutations(ACCOUNTS).map(lambda p: (p[0], p[1]))

BASE = {"BTC": 70_000_000_000, "ETH": 3_500_000_000}  # index prices the moves centre on
SIZE_MULT = {"BTC": 1, "ETH": 20}  # so that size steps are worth about as much
NEAR = "20271231"  # expires during some runs
FAR = "20281229"
START_US = int(datetime(2027, 12, 31, 7, 58, 30, tzinfo=UTC).timestamp()) * 1_000_000
NEAR_EXPIRY_US = int(datetime(2027, 12, 31, 8, 0, tzinfo=UTC).timestamp()) * 1_000_000
ORDER_EXPIRY = START_US // 1_000_000 + 30 * 86_400

PERPS = ("BTC-USD-PERP", "ETH-USD-PERP")
SPOTS = ("BTC/USDC", "ETH/USDC")
NEAR_OPTIONS = (f"BTC-USD-{NEAR}-80000-C", f"BTC-USD-{NEAR}-60000-P")
FAR_OPTIONS = (f"BTC-USD-{FAR}-70000-P", f"ETH-USD-{FAR}-3500-C")
OPTIONS = NEAR_OPTIONS + FAR_OPTIONS
POSITION_ASSETS = PERPS + OPTIONS
MARKETS = PERPS + SPOTS + OPTIONS


def underlying_of(market: str) -> str:
    return market.split("/")[0].split("-")[0]


def on_tick(price: int) -> int:
    return max(TICK, price // TICK * TICK)


def moved(base: int, bp: int) -> int:
    """``base`` moved by ``bp`` basis points, on the tick."""
    return on_tick(base * (10_000 + bp) // 10_000)


def respects_margin(before: AccountSummary, after: AccountSummary) -> bool:
    """What every accepted account-initiated transition must leave: AV >= IMR, or less
    risk (MMR did not grow and AV/MMR did not shrink)."""
    if after.value >= after.im:
        return True
    return (
        before.mm > 0
        and after.mm <= before.mm
        and after.value * before.mm >= before.value * after.mm
    )


def mode_change(book: Ledger, account: str, mode: str, leverage: int) -> AccountSummary:
    """``account`` valued as if its margin mode were ``mode`` at ``leverage`` (pure)."""
    state = book.store.trading_state([account])
    state.set_mode(account, AccountMode(mode, leverage))
    balances = book.store.balances_of([account])
    return summarize(account, lambda a, s: balances.get((a, s), 0), state, book.clock())


def check_books(book: Ledger) -> tuple[dict[tuple[str, str], int], TradingState]:
    """The invariants of the whole ledger; returns what it read."""
    balances = book.store.current_balances()
    state = book.store.trading_state()
    totals: dict[str, int] = {}
    for (account, asset), amount in balances.items():
        totals[asset] = totals.get(asset, 0) + amount
        # USDC and spot are unsigned for users; forced transitions never leave debt.
        if not is_system(account) and asset not in POSITION_ASSETS:
            assert amount >= 0, (account, asset, amount)
    assert all(total == 0 for total in totals.values()), totals
    perp_costs = sum(p.cost for (_, name), p in state.positions.items() if name in PERPS)
    assert balances.get((CLEARING, USDC), 0) == -perp_costs
    # A cost entry exists exactly for every non-zero position, with the position's sign.
    open_positions = {
        key for key, amount in balances.items() if key[1] in POSITION_ASSETS and amount
    }
    assert set(state.positions) == open_positions, set(state.positions) ^ open_positions
    for key, position in state.positions.items():
        _assert_cost_sign(balances[key], position.cost)
    # Open interest: the sum of long sizes.
    for name in POSITION_ASSETS:
        longs = sum(max(0, v) for (_, asset), v in balances.items() if asset == name)
        market = state.markets.get(name)
        assert (market.open_interest if market else 0) == longs, name
    # Fees only ever receive (settlement payoffs round in their favour).
    assert balances.get((FEES, USDC), 0) >= 0
    # Funding is zero-sum at the funding index (perp sizes sum to zero at every tick) and
    # each realisation rounds down: system:funding holds at least what the open positions
    # have accrued and not yet realised, computed exactly.
    unrealised = 0
    for (account, name), position in state.positions.items():
        if name in PERPS:
            index = state.markets[name].funding_index
            unrealised += -balances[(account, name)] * (index - position.funding)
    assert balances.get((FUNDING, USDC), 0) * SCALE * FUNDING_SCALE >= unrealised
    return balances, state


def snapshot(book: Ledger) -> tuple[Any, ...]:
    head = book.store.head()
    rows = sorted(book.store.trading_state().rows())
    return head.seq, head.hash, book.store.current_balances(), rows


def new_url(store: str) -> tuple[str, Callable[[], None]]:
    """A fresh database URL on ``store`` and the function that removes it."""
    if store == "sqlite":
        directory = tempfile.mkdtemp(prefix="ledger-trading-")
        return f"sqlite:///{directory}/ledger.db", lambda: shutil.rmtree(directory, True)
    url = new_postgres_database()
    return url, lambda: drop_postgres_database(url)


@dataclass
class Clock:
    """The ledger's clock, moved by the test only."""

    now: int = START_US

    def __call__(self) -> int:
        return self.now


def deposit_spot(book: Ledger, account: str, underlying: str, units: int) -> None:
    request = operations.deposit(
        account,
        units,
        f"spot/{account}/{underlying}/{book.clock()}",
        asset=book.assets()[underlying],
    )
    book.system(request)


def open_ledger(url: str, clock: Clock, deposits: dict[str, int]) -> Ledger:
    book = Ledger.init(url, operator=OPERATOR, clock=clock)
    for account in ACCOUNTS:
        book.onboard(SIGNERS[account])
    for account, amount in deposits.items():
        book.deposit(account, amount, key=f"seed/{account}")
    return book


# ---------------------------------------------------------------------------------------
# 2. The state machine
# ---------------------------------------------------------------------------------------

DEPOSITS = st.integers(200, 50_000).map(lambda usdc: usdc * 1_000_000)
# Moves of the index from its base price, up to +-30%: often large, so that leveraged
# accounts fall under their maintenance margin.
BP = st.one_of(
    st.sampled_from([-3_000, -2_000, -1_000, -500, -200, 200, 500, 1_000, 2_000, 3_000]),
    st.integers(-3_000, 3_000),
)
IVS = st.sampled_from(["0.3", "0.55", "0.9"])
OPTION_MARKS = st.integers(1, 600_000).map(lambda n: n * TICK)  # up to 6,000 USDC
# random size; close the buyer's short or the seller's long; trade through it; or use
# `percent` of what the poorer side can afford (to reach liquidations).
SIZE_MODES = st.sampled_from(["random", "random", "close", "flip", "lever", "lever"])
FILL_ERRORS = (InsufficientMargin, InsufficientFunds)


class FillArgs(NamedTuple):
    """How a fill rule trades (its market aside)."""

    pair: tuple[str, str]  # buyer, seller
    mode: str  # see SIZE_MODES
    steps: int  # size in steps (random, flip)
    percent: int  # of the affordable size (lever)
    bp: int  # price offset from the mark (options: x10)
    maker: str
    slack: int  # ticks between the limits and the price
    resting: bool  # orders for twice the size, the rest filled later


FILL_ARGS = st.builds(
    FillArgs,
    pair=PAIRS,
    mode=SIZE_MODES,
    steps=st.integers(1, 3_000),
    percent=st.integers(30, 100),
    bp=st.integers(-200, 200),
    maker=st.sampled_from(["buy", "sell"]),
    slack=st.integers(0, 3),
    resting=st.booleans(),
)


@dataclass
class RestingOrders:
    buy: dict[str, Any]
    sell: dict[str, Any]
    market: str
    size: int
    price: int
    filled: int


class TradingMachine(RuleBasedStateMachine):
    store_name = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.url, self.cleanup = new_url(self.store_name)
        self.book: Ledger | None = None
        self.nonces = dict.fromkeys(ACCOUNTS, 0)
        self.prices: dict[str, dict[str, int | str]] = {}
        self.resting: list[RestingOrders] = []
        self.settled = False

    @property
    def ledger(self) -> Ledger:
        assert self.book is not None
        return self.book

    # ------------------------------------------------------------------ helpers
    def advance(self, us: int = 1_000) -> None:
        """Move the clock past the chain head, so an operation is recorded exactly at the
        clock reading the test valued the accounts at."""
        self.clock.now = max(self.clock.now, self.ledger.store.head().recorded_at) + us

    def nonce(self, account: str) -> int:
        self.nonces[account] += 1
        return self.nonces[account]

    def mark(self, market: str) -> int:
        if market in SPOTS:
            return int(self.prices[underlying_of(market)]["index"])
        return int(self.prices[market]["mark"])

    def expired(self, market: str) -> bool:
        return market in NEAR_OPTIONS and self.clock.now >= NEAR_EXPIRY_US

    def attempt(
        self,
        what: str,
        op: Callable[[], object],
        initiators: tuple[str, ...],
        allowed: tuple[type[LedgerError], ...],
        taker: tuple[str, Hypothetical] | None = None,
    ) -> bool:
        """Run ``op``; a refusal (one of ``allowed``) must change nothing, an acceptance must
        leave every initiating account meeting its margin or with less risk, and a fill's
        taker exactly where the what-if margin view said it would."""
        book = self.ledger
        before_state = snapshot(book)
        before = {a: book.margin(a) for a in initiators}
        predicted = None
        if taker is not None:
            with suppress(LedgerError):  # e.g. an expired option: the fill fails too
                predicted = book.margin(*taker)
        try:
            op()
        except allowed as exc:
            event(f"{what}: refused ({type(exc).__name__})")
            assert snapshot(book) == before_state, f"refused {what} changed the ledger"
            return False
        event(f"{what}: accepted")
        assert book.store.head().seq > before_state[0]
        for account in initiators:
            after = book.margin(account)
            assert respects_margin(before[account], after), (what, before[account], after)
            if taker is not None and account == taker[0]:
                assert predicted == after, (what, taker, predicted, after)
        return True

    def position(self, account: str, asset: str) -> int:
        return self.ledger.balance(account, asset).units

    # ------------------------------------------------------------------ setup
    @initialize(
        deposits=st.lists(DEPOSITS, min_size=len(ACCOUNTS), max_size=len(ACCOUNTS)),
        moves=st.lists(st.integers(-500, 500), min_size=2, max_size=2),
        marks=st.lists(OPTION_MARKS, min_size=len(OPTIONS), max_size=len(OPTIONS)),
        opening=st.tuples(st.sampled_from(PERPS), PAIRS, st.integers(50, 100)),
    )
    def setup(
        self,
        deposits: list[int],
        moves: list[int],
        marks: list[int],
        opening: tuple[str, tuple[str, str], int],
    ) -> None:
        """Funded accounts (two also hold spot), prices, and one leveraged perp position
        (so that every run has risk to move and, often, someone to liquidate)."""
        self.book = open_ledger(self.url, self.clock, dict(zip(ACCOUNTS, deposits, strict=True)))
        for account in ACCOUNTS[:2]:
            deposit_spot(self.book, account, "BTC", SCALE)
            deposit_spot(self.book, account, "ETH", 20 * SCALE)
        self.publish(moves, [0, 0], marks, ["0.55"] * len(OPTIONS))
        market, pair, percent = opening
        self.fill(market, FillArgs(pair, "lever", 1, percent, 0, "sell", 0, False))

    def teardown(self) -> None:
        try:
            if self.book is not None:
                check_books(self.book)
                report = self.book.audit()
                assert report.ok, report.to_json()
        finally:
            if self.book is not None:
                self.book.close()
            self.cleanup()

    def publish(
        self, moves: list[int], premia: list[int], marks: list[int], ivs: list[str]
    ) -> None:
        prices: dict[str, dict[str, int | str]] = {}
        for (name, base), bp, premium in zip(BASE.items(), moves, premia, strict=True):
            index = moved(base, bp)
            prices[name] = {"index": index}
            prices[f"{name}-USD-PERP"] = {"mark": moved(index, premium)}
        for name, mark, iv in zip(OPTIONS, marks, ivs, strict=True):
            if not (self.settled and name in NEAR_OPTIONS):
                prices[name] = {"mark": mark, "iv": iv}
        self.advance()
        self.ledger.publish_prices(prices)
        self.prices.update(prices)

    # ------------------------------------------------------------------ market events
    @rule(
        moves=st.lists(BP, min_size=2, max_size=2),
        premia=st.lists(st.integers(-100, 100), min_size=2, max_size=2),
        marks=st.lists(OPTION_MARKS, min_size=len(OPTIONS), max_size=len(OPTIONS)),
        ivs=st.lists(IVS, min_size=len(OPTIONS), max_size=len(OPTIONS)),
        liquidate=st.booleans(),
    )
    def move_prices(
        self,
        moves: list[int],
        premia: list[int],
        marks: list[int],
        ivs: list[str],
        liquidate: bool,
    ) -> None:
        """Index within +-30% of the base price, perp marks within +-1% of the index."""
        self.publish(moves, premia, marks, ivs)
        if liquidate:
            self.liquidate_all()

    @rule()
    def liquidate_all(self) -> None:
        book = self.ledger
        self.advance()
        expected = {s.account for s in book.liquidatable()}
        receipts = book.liquidate_all()
        event(f"liquidations: {min(len(receipts), 3)}")
        assert {json.loads(r.tx.metadata)["account"] for r in receipts} == expected
        for receipt in receipts:
            assert receipt.tx.kind == "liquidation" and not receipt.duplicate

    @rule(account=st.sampled_from(ACCOUNTS))
    def liquidate_one(self, account: str) -> None:
        """Liquidating a healthy account is refused and writes nothing."""
        book = self.ledger
        self.advance()
        if book.margin(account).liquidatable:
            book.liquidate(account)
            event("liquidate one: done")
            return
        before = snapshot(book)
        with pytest.raises(NotLiquidatable):
            book.liquidate(account)
        assert snapshot(book) == before

    @rule(seconds=st.integers(1, 45))
    def tick(self, seconds: int) -> None:
        self.clock.now += seconds * 1_000_000

    @precondition(lambda self: self.clock.now < NEAR_EXPIRY_US)
    @rule()
    def reach_expiry(self) -> None:
        self.clock.now = max(self.clock.now, NEAR_EXPIRY_US)

    @precondition(lambda self: self.clock.now >= NEAR_EXPIRY_US and not self.settled)
    @rule(bp=BP)
    def settle(self, bp: int) -> None:
        book = self.ledger
        self.advance()
        receipts = book.settle_expiry(NEAR, moved(BASE["BTC"], bp))
        assert [r.tx.kind for r in receipts] == ["settlement"]
        self.settled = True
        event("settled")
        balances = book.store.current_balances()
        assert not any(v for (_, asset), v in balances.items() if asset in NEAR_OPTIONS)

    @rule(account=st.sampled_from(ACCOUNTS))
    def realise_funding(self, account: str) -> None:
        """Funding of an account's perps; one without perps is refused (nothing written)."""
        book = self.ledger
        self.advance()
        if any(self.position(account, perp) for perp in PERPS):
            book.realise_funding(account)
            return
        before = snapshot(book)
        with pytest.raises(InvalidMarketEvent):
            book.realise_funding(account)
        assert snapshot(book) == before

    # ------------------------------------------------------------------ account actions
    @rule(account=st.sampled_from(ACCOUNTS), amount=DEPOSITS)
    def deposit(self, account: str, amount: int) -> None:
        self.advance()
        self.ledger.deposit(account, amount)

    @rule(account=st.sampled_from(ACCOUNTS), underlying=st.sampled_from(sorted(BASE)))
    def deposit_spot(self, account: str, underlying: str) -> None:
        """Base assets arrive from the bridge too (so that spot can be sold)."""
        self.advance()
        deposit_spot(self.ledger, account, underlying, 5 * SCALE // SIZE_MULT[underlying])

    @rule(market=st.sampled_from(PERPS), args=FILL_ARGS)
    def fill_perp(self, market: str, args: FillArgs) -> None:
        self.fill(market, args)

    @rule(market=st.sampled_from(PERPS), args=FILL_ARGS)
    def fill_perp_again(self, market: str, args: FillArgs) -> None:
        self.fill(market, args)  # perps matter most: twice the weight

    @rule(market=st.sampled_from(OPTIONS), args=FILL_ARGS)
    def fill_option(self, market: str, args: FillArgs) -> None:
        self.fill(market, args)

    @rule(market=st.sampled_from(SPOTS), args=FILL_ARGS)
    def fill_spot(self, market: str, args: FillArgs) -> None:
        self.fill(market, args)

    def fill(self, market: str, args: FillArgs) -> None:
        """A fill of two freshly signed orders (``resting``: twice the size, so that the rest
        can be filled later)."""
        pair, mode, steps, percent, bp, maker, slack, resting = args
        buyer, seller = pair
        underlying = underlying_of(market)
        size = steps * STEP * SIZE_MULT[underlying]
        if market in SPOTS:
            size = max(STEP, size // 20 // STEP * STEP)  # cash changes hands: smaller
        if market not in SPOTS and mode != "random":
            held_by_buyer = self.position(buyer, market)
            held_by_seller = self.position(seller, market)
            if held_by_buyer < 0:
                size = -held_by_buyer if mode == "close" else -held_by_buyer + size
            elif held_by_seller > 0:
                size = held_by_seller if mode == "close" else held_by_seller + size
        elif market in SPOTS and mode == "close":
            size = self.position(seller, underlying) or size
        if mode == "lever":
            book = self.ledger
            free = min(book.margin(a).free_collateral for a in pair)
            rate = 205 if market in PERPS else 1_500  # ~IMR per notional, basis points
            afford = max(0, free) * 10_000 * SCALE // (rate * self.mark(market))
            size = max(STEP, afford * percent // 100 // STEP * STEP)
        self.advance()
        price = moved(self.mark(market), bp if market not in OPTIONS else bp * 10)
        order_size = size * 2 if resting else size
        buy = self.ledger.sign_order(
            SIGNERS[buyer],
            buyer,
            market,
            "buy",
            order_size,
            price + slack * TICK,
            nonce=self.nonce(buyer),
            expiry=ORDER_EXPIRY,
        )
        sell = self.ledger.sign_order(
            SIGNERS[seller],
            seller,
            market,
            "sell",
            order_size,
            max(TICK, price - slack * TICK),
            nonce=self.nonce(seller),
            expiry=ORDER_EXPIRY,
        )
        kind = "spot" if market in SPOTS else "perp" if market in PERPS else "option"
        closed = self.expired(market)
        allowed: tuple[type[LedgerError], ...] = (InstrumentClosed,) if closed else FILL_ERRORS

        def op() -> None:
            self.ledger.fill(buy, sell, price, size, maker=maker)

        side, taker = ("buy", buyer) if maker == "sell" else ("sell", seller)
        what_if = (taker, Hypothetical(side, market, size, price))
        accepted = self.attempt(f"fill {kind} {mode}", op, (buyer, seller), allowed, what_if)
        assert not (accepted and closed)
        if accepted and resting:
            self.resting.append(RestingOrders(buy, sell, market, order_size, price, size))

    @precondition(lambda self: bool(self.resting))
    @rule(data=st.data(), over=st.booleans())
    def refill(self, data: st.DataObject, over: bool) -> None:
        """Fill more of a resting pair: within what is left, or one step over (refused)."""
        orders = data.draw(st.sampled_from(self.resting))
        left = orders.size - orders.filled
        size = left + STEP if over else data.draw(st.integers(1, left // STEP)) * STEP
        self.advance()
        accounts = (_order_account(orders.buy), _order_account(orders.sell))
        allowed: tuple[type[LedgerError], ...] = FILL_ERRORS
        if self.expired(orders.market):  # refused whether or not it is also too large
            allowed = (InstrumentClosed, FillViolatesOrder) if over else (InstrumentClosed,)
        elif over:
            allowed = (FillViolatesOrder,)

        def op() -> None:
            self.ledger.fill(orders.buy, orders.sell, orders.price, size, maker="buy")

        what_if = (accounts[1], Hypothetical("sell", orders.market, size, orders.price))
        accepted = self.attempt("refill", op, accounts, allowed, what_if)
        assert not (accepted and (over or self.expired(orders.market)))
        if accepted:
            orders.filled += size
            if orders.filled == orders.size:
                self.resting.remove(orders)

    @rule(
        account=st.sampled_from(ACCOUNTS),
        how=st.sampled_from(["max", "over", "half", "random"]),
        amount=DEPOSITS,
        to=st.sampled_from((None, *ACCOUNTS)),
    )
    def withdraw_or_transfer(self, account: str, how: str, amount: int, to: str | None) -> None:
        """``max_withdrawable`` is exact: all of it may leave, one base unit more may not."""
        book = self.ledger
        if to == account:
            to = None
        self.advance()
        free = book.margin(account).max_withdrawable
        if how == "max" or how == "over":
            amount = free + (how == "over")
        elif how == "half":
            amount = free // 2
        if amount <= 0:
            return
        wallet, nonce = SIGNERS[account], self.nonce(account)

        def op() -> None:
            if to is None:
                book.withdraw(account, amount, wallet=wallet, nonce=nonce, expiry=ORDER_EXPIRY)
            else:
                book.transfer(account, to, amount, wallet=wallet, nonce=nonce, expiry=ORDER_EXPIRY)

        what = "withdrawal" if to is None else "transfer"
        accepted = self.attempt(
            f"{what} {how}", op, (account,), (InsufficientMargin, InsufficientFunds)
        )
        if how in ("max", "half"):
            assert accepted, (how, amount, free)
        if how == "over":
            assert not accepted, (amount, free)

    @rule(
        account=st.sampled_from(ACCOUNTS),
        mode=st.sampled_from(["cross", "portfolio"]),
        leverage=st.sampled_from([2, 10, 50, 100]),
    )
    def set_mode(self, account: str, mode: str, leverage: int) -> None:
        book = self.ledger
        self.advance()
        nonce = self.nonce(account)
        # The outcome is predictable: the account valued in its new mode (pure).
        expected = respects_margin(book.margin(account), mode_change(book, account, mode, leverage))

        def op() -> None:
            book.set_margin_mode(
                account,
                mode,
                leverage,
                wallet=SIGNERS[account],
                nonce=nonce,
                expiry=ORDER_EXPIRY,
            )

        accepted = self.attempt(f"mode {mode}", op, (account,), (InsufficientMargin,))
        assert accepted == expected

    # ------------------------------------------------------------------ invariants
    @invariant()
    def books_balance(self) -> None:
        if self.book is not None:
            check_books(self.book)


def _order_account(envelope: dict[str, Any]) -> str:
    return str(envelope["message"]["account"])


EXAMPLES = {"sqlite": 20, "postgresql": 3}
STEPS = 30


@pytest.mark.parametrize("store", STORES)
def test_trading_state_machine(store: str) -> None:
    machine = type(f"TradingMachine_{store}", (TradingMachine,), {"store_name": store})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES[store],
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


# ---------------------------------------------------------------------------------------
# 3. Liquidation cascades and the insurance fund
# ---------------------------------------------------------------------------------------


@contextmanager
def fresh_ledger(clock: Clock, deposits: dict[str, int]) -> Iterator[Ledger]:
    url, cleanup = new_url("sqlite")
    try:
        with open_ledger(url, clock, deposits) as book:
            yield book
    finally:
        cleanup()


# (market, (buyer, seller), percent of what the poorer side can afford, price offset bp)
OPENING = st.tuples(
    st.sampled_from(PERPS + FAR_OPTIONS), PAIRS, st.integers(30, 110), st.integers(-50, 50)
)
SHOCK = st.tuples(BP, BP)
SMALL_DEPOSITS = st.integers(200, 5_000).map(lambda usdc: usdc * 1_000_000)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    deposits=st.lists(SMALL_DEPOSITS, min_size=4, max_size=4),
    openings=st.lists(OPENING, min_size=2, max_size=8),
    shocks=st.lists(SHOCK, min_size=1, max_size=4),
)
def test_liquidations_keep_the_insurance_books(
    deposits: list[int],
    openings: list[tuple[str, tuple[str, str], int, int]],
    shocks: list[tuple[int, int]],
) -> None:
    """Positions opened at the market, then price shocks of up to 30%, each followed by
    rounds of liquidate_all until nobody is liquidatable: the fund takes the positions over
    at mark (netting them when they offset), and after every round its cost entries exist
    exactly for its non-zero positions, clearing holds minus the open perp costs, no user
    is left in debt, and the audit replays it all."""
    clock = Clock()
    nonce = 0
    with fresh_ledger(clock, dict(zip(ACCOUNTS, deposits, strict=True))) as book:
        option_marks = {FAR_OPTIONS[0]: 4_000_000_000, FAR_OPTIONS[1]: 300_000_000}

        def publish(btc: int, eth: int) -> None:
            clock.now += 1_000_000
            prices: dict[str, dict[str, int | str]] = {
                "BTC": {"index": btc},
                "ETH": {"index": eth},
                "BTC-USD-PERP": {"mark": btc},
                "ETH-USD-PERP": {"mark": eth},
            }
            for name, mark in option_marks.items():
                prices[name] = {"mark": mark, "iv": "0.55"}
            book.publish_prices(prices)

        publish(BASE["BTC"], BASE["ETH"])
        for market, (buyer, seller), percent, bp in openings:
            nonce += 1
            clock.now += 1_000
            mark = option_marks.get(market) or BASE[underlying_of(market)]
            price = moved(mark, bp)
            # About `percent` of the size the poorer side's free collateral affords (perps
            # need ~2.05% of notional; options are sized as if they needed ~15%).
            free = min(book.margin(a).free_collateral for a in (buyer, seller))
            rate = 205 if market in PERPS else 1_500
            afford = max(0, free) * 10_000 * SCALE // (rate * BASE[underlying_of(market)])
            size = max(STEP, afford * percent // 100 // STEP * STEP)
            buy = book.sign_order(
                SIGNERS[buyer], buyer, market, "buy", size, price, nonce=nonce, expiry=ORDER_EXPIRY
            )
            sell = book.sign_order(
                SIGNERS[seller],
                seller,
                market,
                "sell",
                size,
                price,
                nonce=nonce,
                expiry=ORDER_EXPIRY,
            )
            before = snapshot(book)
            try:
                book.fill(buy, sell, price, size)
                event("opening: accepted")
            except FILL_ERRORS as exc:
                event(f"opening: refused ({type(exc).__name__})")
                assert snapshot(book) == before
        check_books(book)
        liquidations = 0
        for btc_bp, eth_bp in shocks:
            btc, eth = moved(BASE["BTC"], btc_bp), moved(BASE["ETH"], eth_bp)
            # Options follow their underlying, roughly (deltas of +-0.5).
            option_marks = {
                FAR_OPTIONS[0]: on_tick(4_000_000_000 - (btc - BASE["BTC"]) // 2),
                FAR_OPTIONS[1]: on_tick(300_000_000 + (eth - BASE["ETH"]) // 2),
            }
            publish(btc, eth)
            for _ in range(2 * 5 + 2):  # each liquidation takes at least a fifth
                clock.now += 1_000
                receipts = book.liquidate_all()
                liquidations += len(receipts)
                balances, state = check_books(book)
                for name in POSITION_ASSETS:
                    held = balances.get((INSURANCE, name), 0)
                    assert ((INSURANCE, name) in state.positions) == (held != 0)
                if not receipts:
                    break
            assert not book.liquidatable()
        event(f"liquidations: {min(liquidations, 5)}")
        report = book.audit()
        assert report.ok, report.to_json()


# ---------------------------------------------------------------------------------------
# 4. Under its initial margin, an account may reduce its risk but not add to it
# ---------------------------------------------------------------------------------------

IMF = 2 * 10**4 + 45  # IMR per notional, in millionths (2% + taker 0.045%)
MMF = 10**4 + 45  # MMR per notional (1% + 0.045%)


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    deposit=st.integers(1_000, 20_000).map(lambda usdc: usdc * 1_000_000),
    percent=st.integers(50, 95),
    long=st.booleans(),
    window=st.integers(5, 95),
    tenths=st.integers(1, 9),
    taker=st.booleans(),
)
def test_under_imr_an_account_may_reduce_but_not_add(
    deposit: int, percent: int, long: bool, window: int, tenths: int, taker: bool
) -> None:
    """ALICE holds a leveraged BTC perp; the price moves against her until her account value
    lies ``window`` percent of the way from MMR to IMR (not liquidatable, but under IMR).
    Closing any part of the position must then be accepted although AV' < IMR' (it lowers
    MMR and does not lower AV/MMR), while adding one step to it, and withdrawing one base
    unit, must be refused and write nothing."""
    clock = Clock()
    entry = BASE["BTC"]
    with fresh_ledger(clock, {ALICE: deposit, BOB: 10**12}) as book:
        nonces = {ALICE: 0, BOB: 0}

        def fill(buyer: str, seller: str, size: int, price: int, maker: str) -> None:
            clock.now += 1_000
            orders = []
            for account, side in ((buyer, "buy"), (seller, "sell")):
                nonces[account] += 1
                orders.append(
                    book.sign_order(
                        SIGNERS[account],
                        account,
                        "BTC-USD-PERP",
                        side,
                        size,
                        price,
                        nonce=nonces[account],
                        expiry=ORDER_EXPIRY,
                    )
                )
            book.fill(orders[0], orders[1], price, size, maker=maker)

        def publish(price: int) -> None:
            clock.now += 1_000_000
            book.publish_prices({"BTC": {"index": price}, "BTC-USD-PERP": {"mark": price}})

        publish(entry)
        size = deposit * 10**6 * SCALE // (IMF * entry) * percent // 100 // STEP * STEP
        opening = (ALICE, BOB) if long else (BOB, ALICE)
        fill(*opening, size, entry, "sell" if long else "buy")
        usdc = book.margin(ALICE).usdc
        # AV(p) = usdc +- size (p - entry) / scale; the target: AV = MMR + w (IMR - MMR).
        rate = MMF + window * (IMF - MMF) // 100  # millionths of the notional
        sign = 1 if long else -1
        numerator = (sign * size * entry - usdc * SCALE) * 10**6
        price = on_tick(numerator // (size * (sign * 10**6 - rate)))
        publish(price)
        before = book.margin(ALICE)
        assume(before.mm <= before.value < before.im)
        assert not before.liquidatable
        held = sign * size

        # Adding a step, or withdrawing anything, is refused and writes nothing.
        state = snapshot(book)
        with pytest.raises(InsufficientMargin):
            fill(*opening, STEP, price, "sell" if long else "buy")
        with pytest.raises(InsufficientMargin):
            clock.now += 1_000
            nonces[ALICE] += 1
            book.withdraw(ALICE, 1, wallet=ALICE_WALLET, nonce=nonces[ALICE], expiry=ORDER_EXPIRY)
        assert snapshot(book) == state

        # Closing part of it is accepted, though the account stays under its IMR.
        part = size * tenths // 10 // STEP * STEP or STEP
        closing = (BOB, ALICE) if long else (ALICE, BOB)
        maker = "buy" if long == taker else "sell"  # ALICE is the taker when `taker`
        fill(*closing, part, price, maker)
        after = book.margin(ALICE)
        assert book.balance(ALICE, "BTC-USD-PERP").units == held - sign * part
        assert respects_margin(before, after)
        assert after.mm < before.mm
        event("reduced, still under IMR" if after.value < after.im else "reduced, back over IMR")
        check_books(book)
        report = book.audit()
        assert report.ok, report.to_json()


# ---------------------------------------------------------------------------------------
# Bugs found by the properties above, as minimal deterministic examples (regression tests)
# ---------------------------------------------------------------------------------------


def test_margin_mode_change_is_margin_checked(book: Ledger) -> None:
    """ALICE holds 0.5 BTC-USD-PERP (35,000 USDC notional) on 1,000 USDC in cross mode
    (IMR 715.75, MMR 365.75 USDC). Portfolio margin would need 5,619.25 USDC IMR and
    2,819.25 MMR (the -16% scenario): the change raises MMR with AV below IMR, so it must be
    refused and leave the ledger as it was.

    Found by the state machine: the store loaded no trading state for an account_setting
    request (TradingRules.touched() named no account), so the mode change was checked
    against an empty book and always accepted, leaving ALICE liquidatable at once; the
    audit's replay then refused it. Fixed in 4792bfc (touched() names the account)."""
    book.deposit(ALICE, "1000")
    book.deposit(BOB, "100000")
    book.publish_prices({"BTC": {"index": "70000"}, "BTC-USD-PERP": {"mark": "70000"}})
    buy = book.sign_order(ALICE_WALLET, ALICE, "BTC-USD-PERP", "buy", "0.5", "70000", nonce=1)
    sell = book.sign_order(BOB_WALLET, BOB, "BTC-USD-PERP", "sell", "0.5", "70000", nonce=1)
    book.fill(buy, sell, "70000", "0.5")
    before = book.margin(ALICE)
    assert (before.value, before.im, before.mm) == (984_250_000, 715_750_000, 365_750_000)
    head = book.store.head().seq
    try:
        with pytest.raises(InsufficientMargin):
            book.set_margin_mode(ALICE, "portfolio", 100, wallet=ALICE_WALLET, nonce=2)
        assert book.store.head().seq == head
        assert not book.margin(ALICE).liquidatable
    finally:
        report = book.audit()
    assert report.ok, report.to_json()
