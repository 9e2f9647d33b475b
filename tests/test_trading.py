"""Trading through the Python API on both stores, with hand-computed numbers.

Every test runs on a ledger with a controllable clock (2026-01-01T00:00Z onwards), the
default instrument listing (or one with a SOL perp), and ALICE, BOB and CAROL onboarded.
The expected amounts are worked out by hand in the comments next to them, in USDC (one
USDC is 10**6 base units) and whole BTC (10**8 size units): the defaults are IMF_base 2%,
taker 0.045%, maker 0.003%, option fee min(0.0075% x S, 12.5% x premium), spot at 90% of S.

Covered: perp, spot and option fills and their fees; IMR/MMR; realised PnL against
``system:clearing``; funding ticks and their realisation; expiry settlement; the margin
check (and the risk-reducing exception) on fills, withdrawals and mode changes; bad input;
liquidation (partial, bankrupt, isolated sub-accounts vs cross); portfolio margin and
covered calls; what-if and liquidation prices; audit after a session and after tampering.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

import pytest

from ledger import Ledger, Receipt
from ledger.core.accounts import CLEARING, FEES, FUNDING, INSURANCE, owner_of
from ledger.core.journal import canonical_account
from ledger.core.orders import FillViolatesOrder
from ledger.errors import (
    InstrumentClosed,
    InsufficientFunds,
    InsufficientMargin,
    InvalidAmount,
    InvalidInstrument,
    InvalidMarginMode,
    InvalidMarketEvent,
    LedgerError,
    NotLiquidatable,
    NotOwner,
    UnknownInstrument,
)
from ledger.margin import portfolio
from ledger.margin.config import default_config_text
from ledger.margin.params import BTC as BTC_PARAMS
from ledger.margin.positions import OptionPosition, PerpPosition
from ledger.trading.liquidation_price import _moved
from ledger.trading.plan import lookup
from ledger.trading.state import FUNDING_SCALE
from ledger.trading.valuation import AccountSummary, summarize
from tests.conftest import (
    ALICE,
    ALICE_WALLET,
    BOB,
    CAROL,
    OPERATOR,
    WALLETS,
)
from tests.test_tamper import attacker, run

EPOCH_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
NEVER = 4_102_444_800  # 2100-01-01: orders and actions that do not expire in these tests
PERP = "BTC-USD-PERP"
SPOT = "BTC/USDC"
# Options of 2026-03-01 (08:00 UTC): 59 days and 8 hours after EPOCH_US.
MARCH = "20260301"
MARCH_EXPIRY_US = EPOCH_US + (59 * 24 + 8) * 3_600_000_000


def usdc(text: str) -> int:
    """USDC base units of a decimal string (exactly)."""
    units = Decimal(text) * 10**6
    assert units == units.to_integral_value(), text
    return int(units)


def size(text: str) -> int:
    """Size units (10**8 per BTC, ETH or SOL) of a decimal string (exactly)."""
    units = Decimal(text) * 10**8
    assert units == units.to_integral_value(), text
    return int(units)


def option(expiry: str, strike: int, kind: str) -> str:
    return f"BTC-USD-{expiry}-{strike}-{kind}"


# ---------------------------------------------------------------------- the harness
class Clock:
    """The ledger's clock (microseconds), moved only by the test. A transaction is recorded
    at max(clock, previous + 1 us), so a jump of the clock is the next recorded time."""

    def __init__(self, now: int = EPOCH_US) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds * 1_000_000


@dataclass
class Session:
    """A ledger, its clock, and the signing chores (one nonce counter for every owner)."""

    book: Ledger
    clock: Clock
    nonce: int = 0

    def next_nonce(self) -> int:
        self.nonce += 1
        return self.nonce

    def publish(
        self, prices: Mapping[str, Mapping[str, int | str]], *, after_s: int = 60
    ) -> Receipt:
        """A price update ``after_s`` seconds after the clock's last position (the default,
        60 s, is over the 30 s funding gap: no funding accrues between such ticks)."""
        self.clock.advance(after_s)
        return self.book.publish_prices(prices)

    def btc(
        self,
        price: str,
        marks: Mapping[str, Mapping[str, str]] | None = None,
        *,
        after_s: int = 60,
    ) -> Receipt:
        """BTC index and perp mark at ``price``, plus ``marks`` (``{name: {"mark": ...}}``,
        which may override the perp's)."""
        prices: dict[str, Mapping[str, str]] = {"BTC": {"index": price}, PERP: {"mark": price}}
        prices.update(marks or {})
        return self.publish(prices, after_s=after_s)

    def order(
        self,
        account: str,
        market: str,
        side: str,
        amount: str,
        limit: str,
        *,
        expiry: int = NEVER,
    ) -> dict[str, Any]:
        wallet = WALLETS[owner_of(canonical_account(account))]
        return self.book.sign_order(
            wallet, account, market, side, amount, limit, nonce=self.next_nonce(), expiry=expiry
        )

    def trade(
        self,
        buyer: str,
        seller: str,
        market: str,
        amount: str,
        price: str,
        *,
        maker: str = "sell",
    ) -> Receipt:
        """``buyer`` buys ``amount`` of ``market`` from ``seller`` at ``price`` (limits at
        the price); by default the seller is the maker and the buyer the taker."""
        buy = self.order(buyer, market, "buy", amount, price)
        sell = self.order(seller, market, "sell", amount, price)
        return self.book.fill(buy, sell, price, amount, maker=maker)

    def transfer(self, source: str, target: str, amount: str) -> Receipt:
        wallet = WALLETS[owner_of(canonical_account(source))]
        return self.book.transfer(
            source, target, amount, wallet=wallet, nonce=self.next_nonce(), expiry=NEVER
        )

    def withdraw(self, account: str, amount: str) -> Receipt:
        wallet = WALLETS[owner_of(canonical_account(account))]
        return self.book.withdraw(
            account, amount, wallet=wallet, nonce=self.next_nonce(), expiry=NEVER
        )

    def set_mode(self, account: str, mode: str, leverage: int = 100) -> Receipt:
        wallet = WALLETS[owner_of(canonical_account(account))]
        return self.book.set_margin_mode(
            account, mode, leverage, wallet=wallet, nonce=self.next_nonce(), expiry=NEVER
        )

    def margin(self, account: str) -> AccountSummary:
        return self.book.margin(account)

    def units(self, account: str, asset: str = "USDC") -> int:
        return self.book.balance(account, asset).units


def open_session(url: str, instruments: str | None = None) -> Session:
    clock = Clock()
    book = Ledger.init(url, operator=OPERATOR, clock=clock, instruments=instruments)
    for wallet in WALLETS.values():
        book.onboard(wallet)
    return Session(book, clock)


@pytest.fixture
def venue(db_url: str) -> Iterator[Session]:
    """A ledger on each store with a controllable clock, the default listing, and ALICE,
    BOB and CAROL onboarded."""
    session = open_session(db_url)
    with session.book:
        yield session


def legs(receipt: Receipt) -> dict[tuple[str, str], int]:
    """A transaction's postings by (account, asset) (the ledger merges them per pair)."""
    out: dict[tuple[str, str], int] = {}
    for posting in receipt.tx.postings:
        key = (posting.account, posting.asset)
        assert key not in out, key
        out[key] = posting.amount
    return out


def numbers(summary: AccountSummary) -> tuple[int, int, int]:
    """(AV, IMR, MMR) in USDC base units."""
    return summary.value, summary.im, summary.mm


def open_perp_costs(book: Ledger) -> int:
    """The sum of the cost bases of every open perp position (system accounts too)."""
    state = book.store.trading_state()
    return sum(p.cost for (_, name), p in state.positions.items() if name.endswith("-PERP"))


def held(book: Ledger, account: str, asset: str = "USDC") -> int:
    """A balance, 0 for an account that never held anything (``book.balance`` refuses it)."""
    return book.store.balances_of([account]).get((account, asset), 0)


def assert_clearing_balanced(book: Ledger) -> None:
    assert held(book, CLEARING) == -open_perp_costs(book)


def assert_writes_nothing(
    book: Ledger, error: type[LedgerError], match: str, action: Callable[[], object]
) -> LedgerError:
    """``action`` raises exactly ``error`` (message matching ``match``) and changes nothing:
    no transaction, balance, trading state, nonce or onboarding."""
    head = book.store.head()
    balances = book.store.current_balances()
    state = list(book.store.trading_state().rows())
    authorization = book.store.auth_projection()
    with pytest.raises(error, match=match) as info:
        action()
    assert type(info.value) is error, repr(info.value)
    assert book.store.head() == head
    assert book.store.current_balances() == balances
    assert list(book.store.trading_state().rows()) == state
    assert book.store.auth_projection() == authorization
    return info.value


# ---------------------------------------------------------------------- 1. perps
def test_perp_fill_fees_margin_and_partial_close(venue: Session) -> None:
    book = venue.book
    for account in (ALICE, BOB, CAROL):
        book.deposit(account, "10000")
    venue.btc("70000")
    opened = venue.trade(ALICE, BOB, PERP, "0.5", "70000")  # BOB (seller) is the maker
    assert opened.tx.kind == "fill"
    # notional 0.5 x 70,000 = 35,000; taker 0.045% = 15.75, maker 0.003% = 1.05
    assert legs(opened) == {
        (ALICE, PERP): size("0.5"),
        (ALICE, "USDC"): -usdc("15.75"),
        (FEES, "USDC"): usdc("16.80"),  # 15.75 + 1.05
        (BOB, PERP): -size("0.5"),
        (BOB, "USDC"): -usdc("1.05"),
    }
    alice = venue.margin(ALICE)
    # AV = 10,000 - 15.75 + (0.5 x 70,000 - 35,000) = 9,984.25
    # IMR = 35,000 x 2% + 35,000 x 0.045% = 700 + 15.75 = 715.75
    # MMR = 35,000 x 2% / 2 + 15.75 = 350 + 15.75 = 365.75
    assert numbers(alice) == (usdc("9984.25"), usdc("715.75"), usdc("365.75"))
    assert (alice.usdc, alice.mode, alice.leverage) == (usdc("9984.25"), "cross", 100)
    assert alice.free_collateral == usdc("9268.50")  # 9,984.25 - 715.75
    # BOB's short has the same notional: same requirements; AV = 10,000 - 1.05
    assert numbers(venue.margin(BOB)) == (usdc("9998.95"), usdc("715.75"), usdc("365.75"))
    state = book.store.trading_state()
    assert state.positions[(ALICE, PERP)].cost == usdc("35000")
    assert state.positions[(BOB, PERP)].cost == -usdc("35000")
    assert state.markets[PERP].open_interest == size("0.5")
    assert_clearing_balanced(book)  # nothing realised yet: 0 == -(35,000 - 35,000)

    venue.btc("72000")  # 60 s later: over the funding gap, so no funding accrues
    closed = venue.trade(CAROL, ALICE, PERP, "0.2", "72000", maker="buy")  # ALICE takes
    # ALICE closes 0.2 of 0.5: cost share 35,000 x 0.2 / 0.5 = 14,000, sold for
    # 0.2 x 72,000 = 14,400: realised +400 from system:clearing; taker fee 0.045% x 14,400
    # = 6.48; CAROL opens 0.2 long at 72,000 paying maker 0.003% x 14,400 = 0.432.
    assert legs(closed) == {
        (CAROL, PERP): size("0.2"),
        (CAROL, "USDC"): -usdc("0.432"),
        (FEES, "USDC"): usdc("6.912"),  # 0.432 + 6.48
        (ALICE, PERP): -size("0.2"),
        (CLEARING, "USDC"): -usdc("400"),
        (ALICE, "USDC"): usdc("393.52"),  # +400 - 6.48
    }
    positions = book.store.trading_state().positions
    assert {key: p.cost for key, p in positions.items()} == {
        (ALICE, PERP): usdc("21000"),  # 35,000 - 14,000 for the 0.3 left
        (BOB, PERP): -usdc("35000"),
        (CAROL, PERP): usdc("14400"),
    }
    # system:clearing paid out 400 = -(21,000 - 35,000 + 14,400)
    assert book.balance(CLEARING).units == -usdc("400")
    assert_clearing_balanced(book)
    assert book.balance(FEES).units == usdc("23.712")  # 16.80 + 6.912
    # ALICE: USDC 9,984.25 + 393.52 = 10,377.77; unrealised 0.3 x 72,000 - 21,000 = 600;
    # IMR on 21,600 notional: 432 + 9.72 = 441.72; MMR 216 + 9.72 = 225.72
    alice = venue.margin(ALICE)
    assert alice.usdc == usdc("10377.77")
    assert numbers(alice) == (usdc("10977.77"), usdc("441.72"), usdc("225.72"))
    assert book.store.trading_state().markets[PERP].funding_index == 0
    assert book.audit().ok


# ---------------------------------------------------------------------- 2. spot
def test_spot_fill_moves_base_asset_and_counts_at_90_percent(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "40000")
    book.deposit(BOB, "1", asset="BTC")  # bridged spot BTC
    venue.publish({"BTC": {"index": "70000"}})
    receipt = venue.trade(ALICE, BOB, SPOT, "0.5", "70000")
    # 0.5 BTC for 35,000 USDC; ALICE (taker) pays 15.75, BOB (maker) 1.05
    assert legs(receipt) == {
        (ALICE, "BTC"): size("0.5"),
        (ALICE, "USDC"): -usdc("35015.75"),
        (FEES, "USDC"): usdc("16.80"),
        (BOB, "BTC"): -size("0.5"),
        (BOB, "USDC"): usdc("34998.95"),
    }
    assert venue.units(ALICE, "BTC") == venue.units(BOB, "BTC") == size("0.5")
    alice = venue.margin(ALICE)
    # AV = 4,984.25 USDC + 0.5 x 70,000 x 90% = 4,984.25 + 31,500; spot alone needs no margin
    assert numbers(alice) == (usdc("36484.25"), 0, 0)
    assert alice.spot == (("BTC", size("0.5")),)
    assert numbers(venue.margin(BOB)) == (usdc("66498.95"), 0, 0)  # 34,998.95 + 31,500

    venue.publish({"BTC": {"index": "60000"}})
    # 4,984.25 + 0.5 x 60,000 x 90% = 4,984.25 + 27,000
    assert venue.margin(ALICE).value == usdc("31984.25")
    # CAROL has no BTC to sell: spot balances cannot go negative
    book.deposit(CAROL, "100")
    buy, sell = (
        venue.order(BOB, SPOT, "buy", "0.001", "60000"),
        venue.order(CAROL, SPOT, "sell", "0.001", "60000"),
    )
    assert_writes_nothing(
        book,
        InsufficientFunds,
        "has 0.00 BTC, needs 0.001",
        lambda: book.fill(buy, sell, "60000", "0.001"),
    )
    assert book.audit().ok


# ---------------------------------------------------------------------- 3. options
CHEAP = option(MARCH, 100000, "C")
RICH = option(MARCH, 70000, "C")


def test_option_fills_premium_and_capped_fee(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "10000")
    book.deposit(BOB, "50000")
    venue.btc(
        "70000",
        {CHEAP: {"mark": "20", "iv": "0.8"}, RICH: {"mark": "3000", "iv": "0.55"}},
    )
    cheap = venue.trade(ALICE, BOB, CHEAP, "1", "20")
    # premium 1 x 20 = 20; fee per side min(0.0075% x 70,000 x 1 = 5.25, 12.5% x 20 = 2.5):
    # the 12.5% cap binds, 2.5 each, the same for maker and taker
    assert legs(cheap) == {
        (ALICE, CHEAP): size("1"),
        (ALICE, "USDC"): -usdc("22.5"),  # 20 + 2.5
        (FEES, "USDC"): usdc("5"),
        (BOB, CHEAP): -size("1"),
        (BOB, "USDC"): usdc("17.5"),  # 20 - 2.5
    }
    rich = venue.trade(ALICE, BOB, RICH, "2", "3000")
    # premium 2 x 3,000 = 6,000; fee min(0.0075% x 70,000 x 2 = 10.5, 12.5% x 6,000 = 750):
    # the cap does not bind, 10.5 each
    assert legs(rich) == {
        (ALICE, RICH): size("2"),
        (ALICE, "USDC"): -usdc("6010.5"),
        (FEES, "USDC"): usdc("21"),
        (BOB, RICH): -size("2"),
        (BOB, "USDC"): usdc("5989.5"),
    }
    # ALICE, long: USDC 10,000 - 22.5 - 6,010.5 = 3,967, options at mark 20 + 6,000:
    # AV = 9,987. IMR: cheap min(100% x 20, 20% x 70,000) + fee provision min(5.25, 2.5)
    # = 22.5; rich 2 x min(3,000, 14,000) + 2 x 5.25 = 6,010.5; total 6,033.
    # MMR: cheap min(50% x 20, 10% x 70,000) + 2.5 = 12.5; rich 2 x 1,500 + 10.5 = 3,010.5.
    assert numbers(venue.margin(ALICE)) == (usdc("9987"), usdc("6033"), usdc("3023"))
    # BOB, short: USDC 50,000 + 17.5 + 5,989.5 = 56,007, minus the options at mark 6,020:
    # AV = 49,987. Cheap call 30,000 OTM: IMR max(15% x 70,000 - 30,000, 10% x 70,000)
    # = 7,000 + 2.5; MMR max(7.5% x 70,000 - 30,000, 5% x 70,000) = 3,500 + 2.5.
    # Rich call at the money: IMR 2 x 10,500 + 10.5, MMR 2 x 5,250 + 10.5.
    assert numbers(venue.margin(BOB)) == (usdc("49987"), usdc("28013"), usdc("14013"))
    assert book.balance(FEES).units == usdc("26")
    assert book.audit().ok


# ---------------------------------------------------------------------- 4. funding
def test_funding_ticks_accrue_and_realise(venue: Session) -> None:
    book = venue.book
    for account in (ALICE, BOB, CAROL):
        book.deposit(account, "10000")
    t0 = venue.btc("70000").tx.recorded_at  # premium 0: rate = 0 + clip(0.01%, ±0.05%)
    market = book.store.trading_state().markets[PERP]
    assert (market.funding_index, market.funding_rate, market.funding_at) == (0, "1/10000", t0)
    venue.trade(ALICE, BOB, PERP, "1", "70000")  # ALICE long 1, BOB short 1, snapshot 0

    # Tick 1, 10 s later, mark 70,070 over index 70,000. Accrued first, at the old rate:
    # 0.01% x 70,000 USDC x 10 s / 8 h = 7 USDC x 10 / 28,800 per BTC, x 10**9 (scale)
    # = 7,000,000 x 10**9 / 2,880 base units = 2,430,555,555,555.5... -> floor.
    # New premium 70 / 70,000 = 0.1%: rate = 0.1% + clip(0.01% - 0.1%, ±0.05%) = 0.05%.
    t1 = venue.btc("70000", {PERP: {"mark": "70070"}}, after_s=10).tx.recorded_at
    assert t1 - t0 == 10_000_000
    market = book.store.trading_state().markets[PERP]
    assert (market.funding_index, market.funding_rate) == (2_430_555_555_555, "1/2000")
    # Tick 2, 10 s later again: 0.05% x 70,000 x 10 / 28,800 = 35,000,000 x 10**9 / 2,880
    # = 12,152,777,777,777.7... -> floor; index 2,430,555,555,555 + 12,152,777,777,777.
    venue.btc("70000", {PERP: {"mark": "70070"}}, after_s=10)
    growth = 14_583_333_333_332
    assert book.store.trading_state().markets[PERP].funding_index == growth
    assert growth * 10**8 // (10**8 * FUNDING_SCALE) == 14_583  # per BTC, base units

    # ALICE's long owes floor(-1 BTC x 14,583.333...) = -14,584 (rounded against her)
    assert venue.margin(ALICE).positions[0].funding == -14_584
    realised = book.realise_funding(ALICE)
    assert legs(realised) == {(FUNDING, "USDC"): 14_584, (ALICE, "USDC"): -14_584}
    assert book.store.trading_state().positions[(ALICE, PERP)].funding == growth
    # BOB's short is owed floor(14,583.333...) = 14,583, realised at his next fill: he buys
    # back 0.5 from CAROL at 70,070 as maker. Cost share -70,000 x 0.5 = -35,000; value
    # -0.5 x 70,070 = -35,035: realised -35 to system:clearing; maker fee 0.003% x 35,035
    # = 1.05105. CAROL opens a 0.5 short at 70,070, taker fee 0.045% x 35,035 = 15.76575.
    fill = venue.trade(BOB, CAROL, PERP, "0.5", "70070", maker="buy")
    assert legs(fill) == {
        (FUNDING, "USDC"): -14_583,
        (BOB, "USDC"): 14_583 - usdc("35") - usdc("1.05105"),
        (CLEARING, "USDC"): usdc("35"),
        (BOB, PERP): size("0.5"),
        (FEES, "USDC"): usdc("16.8168"),  # 1.05105 + 15.76575
        (CAROL, PERP): -size("0.5"),
        (CAROL, "USDC"): -usdc("15.76575"),
    }
    # paid + received + the dust system:funding keeps = 0
    assert -14_584 + 14_583 + book.balance(FUNDING).units == 0
    assert book.balance(FUNDING).units == 1
    assert_clearing_balanced(book)  # 70,000 - 35,000 - 35,035 = -35: clearing holds +35
    assert book.audit().ok


# ---------------------------------------------------------------------- 5. settlement
JAN2 = "20260102"  # 2026-01-02T08:00Z: 32 hours after EPOCH_US
CALL = option(JAN2, 72000, "C")
PUT = option(JAN2, 68000, "P")


def test_expiry_settlement(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "10000")
    book.deposit(BOB, "50000")
    book.deposit(CAROL, "10000")
    venue.btc("70000", {CALL: {"mark": "400", "iv": "0.55"}, PUT: {"mark": "300", "iv": "0.6"}})
    # fee per side: call min(5.25, 12.5% x 400 = 50) = 5.25; puts min(10.5, 12.5% x 600) = 10.5
    venue.trade(ALICE, BOB, CALL, "1", "400")
    venue.trade(CAROL, BOB, PUT, "2", "300")
    assert venue.units(ALICE) == usdc("9594.75")  # 10,000 - 400 - 5.25
    assert venue.units(CAROL) == usdc("9389.5")  # 10,000 - 600 - 10.5
    assert venue.units(BOB) == usdc("50984.25")  # 50,000 + 400 - 5.25 + 600 - 10.5

    assert_writes_nothing(
        book,
        InvalidMarketEvent,
        "expires at 2026-01-02T08:00:00\\+00:00: it cannot settle before",
        lambda: book.settle_expiry(JAN2, "75000"),
    )
    venue.clock.now = EPOCH_US + 32 * 3_600_000_000  # 08:00 UTC on the expiry date
    late = (venue.order(ALICE, CALL, "buy", "1", "400"), venue.order(BOB, CALL, "sell", "1", "400"))
    assert_writes_nothing(
        book, InstrumentClosed, "expired at 2026-01-02T08:00", lambda: book.fill(*late, "400", "1")
    )
    [receipt] = book.settle_expiry(JAN2, "75000")
    assert receipt.tx.kind == "settlement"
    # At 75,000 the call pays 75,000 - 72,000 = 3,000 per BTC, the put 0. Settlement fee
    # per unit min(0.0075% x 75,000 = 5.625, 12.5% x payoff): 5.625 on the call (both
    # sides), 0 on the worthless put. Payoffs pass through system:fees.
    assert legs(receipt) == {
        (ALICE, CALL): -size("1"),
        (FEES, "USDC"): usdc("11.25"),  # -3,000 + 3,000 + 5.625 + 5.625
        (ALICE, "USDC"): usdc("2994.375"),  # 3,000 - 5.625
        (BOB, CALL): size("1"),
        (BOB, "USDC"): -usdc("3005.625"),  # -3,000 - 5.625
        (BOB, PUT): size("2"),
        (CAROL, PUT): -size("2"),
    }
    assert venue.units(ALICE) == usdc("12589.125")  # 9,594.75 + 2,994.375
    assert venue.units(BOB) == usdc("47978.625")  # 50,984.25 - 3,005.625
    assert venue.units(CAROL) == usdc("9389.5")
    assert book.balance(FEES).units == usdc("42.75")  # 31.5 at the fills + 11.25
    state = book.store.trading_state()
    assert not state.positions
    for name in (CALL, PUT):
        market = state.markets[name]
        assert (market.settled, market.mark, market.open_interest) == (usdc("75000"), 0, 0)
    assert numbers(venue.margin(BOB)) == (usdc("47978.625"), 0, 0)

    venue.clock.advance(60)
    again = (
        venue.order(ALICE, CALL, "buy", "1", "400"),
        venue.order(BOB, CALL, "sell", "1", "400"),
    )
    assert_writes_nothing(
        book, InstrumentClosed, "expired at", lambda: book.fill(*again, "400", "1")
    )
    assert_writes_nothing(
        book,
        InvalidMarketEvent,
        "has settled: it takes no more prices",
        lambda: book.publish_prices({CALL: {"mark": "1"}}),
    )
    assert_writes_nothing(
        book, InvalidMarketEvent, "no open options expire", lambda: book.settle_expiry(JAN2, "1")
    )
    assert book.audit().ok


# ---------------------------------------------------------------------- 6. margin checks
def test_fill_under_initial_margin_is_refused(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "1000")
    book.deposit(BOB, "10000")
    venue.btc("70000")
    buy = venue.order(ALICE, PERP, "buy", "1", "70000")
    sell = venue.order(BOB, PERP, "sell", "1", "70000")
    # 1 BTC at 70,000: IMR 1,400 + 31.5 = 1,431.5; AV 1,000 - 31.5 taker fee = 968.5
    message = (
        f"insufficient margin: after this fill, account {ALICE} would need 1431.50 USDC "
        "initial margin and have 968.50 account value (463.00 short)"
    )
    error = assert_writes_nothing(
        book, InsufficientMargin, re.escape(message), lambda: book.fill(buy, sell, "70000", "1")
    )
    assert str(error) == message
    assert book.audit().ok


def test_withdrawal_is_limited_to_value_over_initial_margin(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "10000")
    book.deposit(BOB, "10000")
    venue.btc("70000")
    venue.trade(ALICE, BOB, PERP, "0.5", "70000")
    # AV 9,984.25 - IMR 715.75 = 9,268.50
    assert venue.margin(ALICE).max_withdrawable == usdc("9268.50")
    message = (
        f"after this withdrawal, account {ALICE} would need 715.75 USDC initial margin and "
        "have 715.74 account value (0.01 short); it does not reduce risk either"
    )
    assert_writes_nothing(
        book, InsufficientMargin, re.escape(message), lambda: venue.withdraw(ALICE, "9268.51")
    )
    assert_writes_nothing(
        book,
        InsufficientMargin,
        "after this transfer",
        lambda: venue.transfer(ALICE, f"{ALICE}:spare", "9268.51"),
    )
    venue.withdraw(ALICE, "9268.50")
    assert numbers(venue.margin(ALICE)) == (usdc("715.75"), usdc("715.75"), usdc("365.75"))
    assert book.audit().ok


def test_risk_reducing_fill_is_accepted_under_initial_margin(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "1000")
    book.deposit(BOB, "10000")
    book.deposit(CAROL, "10000")
    venue.btc("70000")
    venue.trade(ALICE, BOB, PERP, "0.5", "70000")  # AV 984.25 >= IMR 715.75
    venue.btc("69000")
    before = venue.margin(ALICE)
    # AV 984.25 + 0.5 x (69,000 - 70,000) = 484.25; notional 34,500: IMR 34,500 x 2.045%
    # = 705.525, MMR 34,500 x 1.045% = 360.525: under IMR, above MMR
    assert numbers(before) == (usdc("484.25"), usdc("705.525"), usdc("360.525"))
    assert not before.liquidatable

    # adding 0.1 is refused: AV 484.25 - 3.105 fee = 481.145 against IMR 41,400 x 2.045%
    more = (
        venue.order(ALICE, PERP, "buy", "0.1", "69000"),
        venue.order(BOB, PERP, "sell", "0.1", "69000"),
    )
    assert_writes_nothing(
        book,
        InsufficientMargin,
        re.escape("would need 846.63 USDC initial margin and have 481.145 account value")
        + ".*does not reduce risk either",
        lambda: book.fill(*more, "69000", "0.1"),
    )
    # selling 0.1 is accepted although the account stays under IMR: MMR falls to
    # 27,600 x 1.045% = 288.42 and AV'/MMR' = 481.145 / 288.42 >= 484.25 / 360.525.
    receipt = venue.trade(CAROL, ALICE, PERP, "0.1", "69000", maker="buy")
    # realised 0.1 x 69,000 - 7,000 = -100; taker fee 0.045% x 6,900 = 3.105
    assert legs(receipt)[(ALICE, "USDC")] == -usdc("103.105")
    after = venue.margin(ALICE)
    # AV 484.25 - 3.105; IMR 27,600 x 2.045% = 564.42
    assert numbers(after) == (usdc("481.145"), usdc("564.42"), usdc("288.42"))
    assert after.value < after.im
    assert book.audit().ok  # replay accepts it by the same rule


# ---------------------------------------------------------------------- 7. bad input
class Bad(NamedTuple):
    name: str
    error: type[LedgerError]
    match: str
    action: Callable[[], object]


def test_bad_input_writes_nothing(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "10000")
    book.deposit(BOB, "10000")
    expired = option("20251231", 70000, "C")  # expired 2025-12-31T08:00Z, before EPOCH_US
    venue.btc("70000", {expired: {"mark": "100", "iv": "0.5"}})
    buy = venue.order(ALICE, PERP, "buy", "0.5", "70000")
    sell = venue.order(BOB, PERP, "sell", "0.5", "70000")
    partly = venue.order(BOB, PERP, "sell", "0.5", "70000")
    venue.book.fill(venue.order(ALICE, PERP, "buy", "0.3", "70000"), partly, "70000", "0.3")
    mine = venue.order(ALICE, PERP, "sell", "0.5", "70000")
    doge = ALICE_WALLET.order(ALICE, "DOGE-USD-PERP", "buy", 10**8, 10**6, book.domain, 99, NEVER)
    stale = venue.order(BOB, PERP, "sell", "0.5", "70000", expiry=EPOCH_US // 10**6)
    eth = venue.order(BOB, "ETH-USD-PERP", "sell", "0.5", "70000")
    theirs = WALLETS[BOB].order(ALICE, PERP, "buy", 10**8, usdc("70000"), book.domain, 98, NEVER)
    call = (
        venue.order(ALICE, expired, "buy", "1", "100"),
        venue.order(BOB, expired, "sell", "1", "100"),
    )

    def fill(b: dict[str, Any], s: dict[str, Any], price: Any, amount: Any, **kw: Any) -> Any:
        return lambda: book.fill(b, s, price, amount, **kw)

    def prices(fields: Mapping[str, Any], name: str = PERP) -> Callable[[], object]:
        return lambda: book.publish_prices({name: fields})

    cases = [
        Bad(
            "unknown underlying",
            UnknownInstrument,
            "unknown underlying 'DOGE'",
            fill(doge, sell, "70000", "0.5"),
        ),
        Bad(
            "unknown market, signing",
            UnknownInstrument,
            "unknown underlying 'DOGE'",
            lambda: venue.order(ALICE, "DOGE-USD-PERP", "buy", "1", "1"),
        ),
        Bad(
            "not an instrument",
            InvalidInstrument,
            "is neither <BASE>-USD-PERP nor an option",
            lambda: venue.order(ALICE, "BTC-USD-FUT", "buy", "1", "1"),
        ),
        Bad(
            "size off the step",
            InvalidMarketEvent,
            "size 0.0005 BTC is not a multiple of the size step 0.001",
            fill(buy, sell, "70000", "0.0005"),
        ),
        Bad(
            "price off the tick",
            InvalidMarketEvent,
            "price 70000.005 USDC is not on the price tick of 0.01 USDC",
            fill(buy, sell, "70000.005", "0.5"),
        ),
        Bad(
            "zero price",
            InvalidMarketEvent,
            "fill price must be a positive integer, got 0",
            fill(buy, sell, 0, "0.5"),
        ),
        Bad(
            "negative price",
            InvalidMarketEvent,
            "positive integer, got -10000",
            fill(buy, sell, -10_000, "0.5"),
        ),
        Bad(
            "zero size",
            InvalidMarketEvent,
            "fill size must be a positive integer, got 0",
            fill(buy, sell, "70000", 0),
        ),
        Bad(
            "float price",
            InvalidMarketEvent,
            "integer of base units or a decimal string",
            fill(buy, sell, 70000.0, "0.5"),
        ),
        Bad(
            "bad maker",
            InvalidMarketEvent,
            'maker must be "buy" or "sell"',
            fill(buy, sell, "70000", "0.5", maker="both"),
        ),
        Bad(
            "expired option",
            InstrumentClosed,
            "expired at 2025-12-31T08:00:00",
            fill(*call, "100", "1"),
        ),
        Bad(
            "self-trade",
            FillViolatesOrder,
            "cannot trade with itself",
            fill(buy, mine, "70000", "0.5"),
        ),
        Bad(
            "above the buy limit",
            FillViolatesOrder,
            "above the buy order's limit",
            fill(buy, sell, "70000.01", "0.5"),
        ),
        Bad(
            "below the sell limit",
            FillViolatesOrder,
            "below the sell order's limit",
            fill(buy, sell, "69999.99", "0.5"),
        ),
        Bad(
            "more than the order's size",
            FillViolatesOrder,
            re.escape("has left (50000000)"),
            fill(buy, sell, "70000", "0.6"),
        ),
        Bad(
            "more than the order has left",
            FillViolatesOrder,
            re.escape("has left (20000000)"),
            fill(buy, partly, "70000", "0.3"),
        ),
        Bad(
            "orders swapped",
            FillViolatesOrder,
            "is a sell, not a buy",
            fill(sell, buy, "70000", "0.5"),
        ),
        Bad(
            "markets differ",
            FillViolatesOrder,
            "is for ETH-USD-PERP, not BTC-USD-PERP",
            fill(buy, eth, "70000", "0.5"),
        ),
        Bad("expired order", FillViolatesOrder, "expired at", fill(buy, stale, "70000", "0.5")),
        Bad(
            "another owner's account",
            NotOwner,
            "cannot trade for",
            fill(theirs, sell, "70000", "0.5"),
        ),
        Bad("NaN mark", InvalidMarketEvent, "got nan", prices({"mark": float("nan")})),
        Bad("infinite mark", InvalidMarketEvent, "got inf", prices({"mark": float("inf")})),
        Bad("'inf' mark", InvalidAmount, "invalid amount 'inf'", prices({"mark": "inf"})),
        Bad("'NaN' mark", InvalidAmount, "invalid amount 'NaN'", prices({"mark": "NaN"})),
        Bad("float mark", InvalidMarketEvent, "got 70000.0", prices({"mark": 70000.0})),
        Bad("bool mark", InvalidMarketEvent, "got True", prices({"mark": True})),
        Bad("zero index", InvalidMarketEvent, "must be positive", prices({"index": 0}, "BTC")),
        Bad("bool index", InvalidMarketEvent, "got False", prices({"index": False}, "BTC")),
        Bad(
            "index off the tick",
            InvalidMarketEvent,
            "price tick",
            prices({"index": 70_000_000_001}, "BTC"),
        ),
        Bad(
            "a spot pair's price",
            InvalidMarketEvent,
            "priced by their underlying's index",
            prices({"mark": "70000"}, SPOT),
        ),
        Bad("a perp's iv", InvalidMarketEvent, "takes mark", prices({"mark": "1", "iv": "0.5"})),
        Bad(
            "'nan' iv",
            InvalidMarketEvent,
            "decimal string in \\(0, 10\\]",
            prices({"mark": "100", "iv": "nan"}, expired),
        ),
        Bad(
            "bool iv",
            InvalidMarketEvent,
            "decimal string",
            prices({"mark": "1", "iv": True}, expired),
        ),
        Bad(
            "unknown price name",
            InvalidInstrument,
            "not a known shape",
            prices({"index": "1"}, "DOGE"),
        ),
    ]
    for case in cases:
        try:
            assert_writes_nothing(book, case.error, case.match, case.action)
        except BaseException as exc:
            raise AssertionError(f"case {case.name!r}: {exc}") from exc
    assert book.audit().ok


@pytest.mark.parametrize("iv", [float("nan"), 0.55], ids=["nan", "float"])
def test_float_iv_is_a_market_event_error(venue: Session, iv: float) -> None:
    book = venue.book
    venue.btc("70000")
    name = option(MARCH, 70000, "C")
    assert_writes_nothing(
        book,
        InvalidMarketEvent,
        "iv of",
        lambda: book.publish_prices({name: {"mark": "100", "iv": iv}}),  # type: ignore[dict-item]
    )


# ---------------------------------------------------------------------- 8. liquidation
def test_partial_liquidation(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "1000")
    book.deposit(BOB, "10000")
    venue.btc("70000")
    venue.trade(ALICE, BOB, PERP, "0.5", "70000")  # ALICE: USDC 984.25, cost 35,000
    assert book.liquidatable() == []
    assert_writes_nothing(
        book,
        NotLiquidatable,
        re.escape(f"{ALICE} is not liquidatable: account value 984.25 USDC, maintenance margin"),
        lambda: book.liquidate(ALICE),
    )
    venue.btc("68700")
    # AV 984.25 + 0.5 x (68,700 - 70,000) = 334.25 < MMR 34,350 x 1.045% = 358.9575
    [summary] = book.liquidatable()
    assert (summary.account, *numbers(summary)[::2]) == (ALICE, usdc("334.25"), usdc("358.9575"))
    assert_writes_nothing(
        book, NotLiquidatable, "account value 10648.95 USDC", lambda: book.liquidate(BOB)
    )
    receipt = book.liquidate(ALICE)
    # Shares of 20%: after closing k/5 at mark AV stays 334.25, penalty 70% x 358.9575 x k/5
    #   k=1: 0.4 left, MMR 27,480 x 1.045% = 287.166 vs 90% x (334.25 - 50.25405) = 255.6
    #   k=2: 0.3 left, MMR 215.3745 vs 90% x (334.25 - 100.5081) = 210.4
    #   k=3: 0.2 left, MMR 143.583 < 90% x (334.25 - 150.76215) = 165.1: 60% it is.
    # 0.3 BTC go to system:insurance at 68,700: ALICE realises 20,610 - 21,000 = -390 and
    # pays the penalty floor(0.7 x 358.9575 x 3/5) = 150.76215.
    assert legs(receipt) == {
        (INSURANCE, PERP): size("0.3"),
        (ALICE, PERP): -size("0.3"),
        (CLEARING, "USDC"): usdc("390"),
        (ALICE, "USDC"): -usdc("540.76215"),  # -390 - 150.76215
        (INSURANCE, "USDC"): usdc("150.76215"),
    }
    positions = book.store.trading_state().positions
    assert positions[(ALICE, PERP)].cost == usdc("14000")  # 35,000 x 0.2 / 0.5
    assert positions[(INSURANCE, PERP)].cost == usdc("20610")  # 0.3 x 68,700
    assert_clearing_balanced(book)  # -(14,000 + 20,610 - 35,000) = 390
    # USDC 984.25 - 540.76215 = 443.48785; AV 443.48785 + 13,740 - 14,000; MMR 143.583
    alice = venue.margin(ALICE)
    assert numbers(alice)[::2] == (usdc("183.48785"), usdc("143.583"))
    assert book.liquidatable() == []
    assert book.audit().ok


def test_bankrupt_liquidation_is_covered_by_insurance(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "1000")
    book.deposit(BOB, "10000")
    venue.btc("70000")
    venue.trade(ALICE, BOB, PERP, "0.5", "70000")
    venue.btc("67000")  # a gap: AV 984.25 - 0.5 x 3,000 = -515.75
    assert venue.margin(ALICE).value == -usdc("515.75")
    receipt = book.liquidate(ALICE)
    # AV < 0 after any share and penalty: everything goes at 67,000; realised
    # 33,500 - 35,000 = -1,500; the penalty finds no USDC (984.25 - 1,500 < 0), and
    # system:insurance pays the -515.75 shortfall.
    assert legs(receipt) == {
        (INSURANCE, PERP): size("0.5"),
        (ALICE, PERP): -size("0.5"),
        (CLEARING, "USDC"): usdc("1500"),
        (ALICE, "USDC"): -usdc("984.25"),  # -1,500 + 515.75
        (INSURANCE, "USDC"): -usdc("515.75"),
    }
    assert venue.units(ALICE) == 0
    assert venue.units(ALICE, PERP) == 0
    assert numbers(venue.margin(ALICE)) == (0, 0, 0)
    assert book.balance(INSURANCE).units == -usdc("515.75")
    assert book.store.trading_state().positions[(INSURANCE, PERP)].cost == usdc("33500")
    assert_clearing_balanced(book)  # -(33,500 - 35,000)
    assert book.liquidatable() == []
    assert book.audit().ok


# ---------------------------------------------------------------------- 9. isolated vs cross
def sol_config() -> str:
    """The shipped configuration plus SOL (ETH's parameters, IMF_base 5%) and its perp."""
    text = default_config_text()
    head, eth = text.split("[underlyings.ETH]")
    sol = ("[underlyings.ETH]" + eth).replace("underlyings.ETH", "underlyings.SOL")
    sol = sol.replace('imf_base = "2%"', 'imf_base = "5%"').replace("whole ETH", "whole SOL")
    head = head.replace(
        'perps = ["BTC-USD-PERP", "ETH-USD-PERP"]',
        'perps = ["BTC-USD-PERP", "ETH-USD-PERP", "SOL-USD-PERP"]',
    )
    assert "SOL-USD-PERP" in head
    return f"{head}[underlyings.ETH]{eth}\n{sol}"


def test_isolated_sub_accounts_against_cross(db_url: str) -> None:
    venue = open_session(db_url, instruments=sol_config())
    with venue.book as book:
        _isolated_story(venue, book)


def _isolated_story(venue: Session, book: Ledger) -> None:
    subs = {"btc": f"{ALICE}:btc", "eth": f"{ALICE}:eth", "sol": f"{ALICE}:sol"}
    book.deposit(ALICE, "10000")
    book.deposit(CAROL, "10000")
    book.deposit(BOB, "100000")
    for name, amount in (("btc", "2000"), ("eth", "1500"), ("sol", "1000")):
        venue.transfer(ALICE, subs[name], amount)
        venue.set_mode(subs[name], "isolated")
    assert venue.units(ALICE) == usdc("5500")  # idle on the main account
    venue.publish(
        {
            "BTC": {"index": "70000"},
            PERP: {"mark": "70000"},
            "ETH": {"index": "3500"},
            "ETH-USD-PERP": {"mark": "3500"},
            "SOL": {"index": "150"},
            "SOL-USD-PERP": {"mark": "150"},
        }
    )
    trades = ((PERP, "1", "70000"), ("ETH-USD-PERP", "10", "3500"), ("SOL-USD-PERP", "40", "150"))
    for (market, amount, price), sub in zip(trades, subs.values(), strict=True):
        venue.trade(sub, BOB, market, amount, price)
        venue.trade(CAROL, BOB, market, amount, price)  # CAROL: the same book, cross mode
    # An isolated sub-account holds one market only
    wrong = (
        venue.order(subs["btc"], "ETH-USD-PERP", "buy", "1", "3500"),
        venue.order(BOB, "ETH-USD-PERP", "sell", "1", "3500"),
    )
    assert_writes_nothing(
        book, InvalidMarginMode, "is isolated", lambda: book.fill(*wrong, "3500", "1")
    )
    # taker fees: 70,000 x 0.045% = 31.5; 35,000 x 0.045% = 15.75; 6,000 x 0.045% = 2.7
    # BTC: IMR 1,400 + 31.5, MMR 700 + 31.5; ETH: 700 + 15.75, 350 + 15.75;
    # SOL (IMF_base 5%): 6,000 x 5% + 2.7 = 302.7, 6,000 x 2.5% + 2.7 = 152.7
    expected = {
        "btc": (usdc("1968.5"), usdc("1431.5"), usdc("731.5")),
        "eth": (usdc("1484.25"), usdc("715.75"), usdc("365.75")),
        "sol": (usdc("997.3"), usdc("302.7"), usdc("152.7")),
    }
    for name, sub in subs.items():
        summary = venue.margin(sub)
        assert (summary.mode, summary.leverage) == ("isolated", 100)
        assert numbers(summary) == expected[name], name
    # CAROL: 10,000 - 49.95 fees; requirements add up
    assert numbers(venue.margin(CAROL)) == (usdc("9950.05"), usdc("2449.95"), usdc("1249.95"))

    venue.publish({"BTC": {"index": "68000"}, PERP: {"mark": "68000"}})
    # ALICE:btc: 1,968.5 - 2,000 = -31.5 (wiped out) < MMR 68,000 x 1.045% = 710.6.
    # CAROL absorbs it: AV 9,950.05 - 2,000 = 7,950.05, MMR 710.6 + 365.75 + 152.7.
    [under] = book.liquidatable()
    assert (under.account, under.value, under.mm) == (subs["btc"], -usdc("31.5"), usdc("710.6"))
    assert numbers(venue.margin(CAROL))[::2] == (usdc("7950.05"), usdc("1229.05"))
    others = [ALICE, subs["eth"], subs["sol"]]
    balances = book.store.balances_of(others)
    summaries = [venue.margin(a) for a in others]
    receipt = book.liquidate(subs["btc"])
    # everything at 68,000: realised -2,000, USDC 1,968.5 - 2,000 = -31.5 covered by insurance
    assert legs(receipt) == {
        (INSURANCE, PERP): size("1"),
        (subs["btc"], PERP): -size("1"),
        (CLEARING, "USDC"): usdc("2000"),
        (subs["btc"], "USDC"): -usdc("1968.5"),
        (INSURANCE, "USDC"): -usdc("31.5"),
    }
    assert book.store.balances_of(others) == balances
    assert [venue.margin(a) for a in others] == summaries
    assert venue.units(ALICE) == usdc("5500")
    assert book.liquidatable() == []

    # cross: CAROL is liquidatable only when AV < total MMR. With BTC at p:
    # AV = 9,950.05 + (p - 70,000), MMR = 1.045% x p + 365.75 + 152.7
    venue.publish({"BTC": {"index": "61300"}, PERP: {"mark": "61300"}})
    # AV 1,250.05 >= MMR 640.585 + 518.45 = 1,159.035
    carol = venue.margin(CAROL)
    assert numbers(carol)[::2] == (usdc("1250.05"), usdc("1159.035"))
    assert book.liquidatable() == []
    venue.publish({"BTC": {"index": "61200"}, PERP: {"mark": "61200"}})
    # AV 1,150.05 < MMR 639.54 + 518.45 = 1,157.99
    [under] = book.liquidatable()
    assert (under.account, under.value, under.mm) == (CAROL, usdc("1150.05"), usdc("1157.99"))
    assert_clearing_balanced(book)
    assert book.audit().ok


# ---------------------------------------------------------------------- 10. portfolio margin
PUT_70K = option(MARCH, 70000, "P")
CALL_80K = option(MARCH, 80000, "C")


def test_portfolio_margin_credits_a_hedged_perp(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "10000")
    book.deposit(BOB, "100000")
    book.deposit(CAROL, "2000")
    venue.btc("70000", {PUT_70K: {"mark": "5600", "iv": "0.5"}})
    venue.trade(ALICE, BOB, PERP, "1", "70000")
    venue.trade(ALICE, BOB, PUT_70K, "1", "5600")  # fee min(5.25, 700) = 5.25
    venue.trade(CAROL, BOB, PERP, "1", "70000")
    cross = venue.margin(ALICE)
    # USDC 10,000 - 31.5 - 5,600 - 5.25 = 4,363.25, put at mark 5,600: AV 9,963.25.
    # perp IMR 1,431.5, MMR 731.5; long put IMR min(5,600, 20% x 70,000) + 5.25,
    # MMR min(2,800, 7,000) + 5.25: IMR 7,036.75, MMR 3,536.75
    assert numbers(cross) == (usdc("9963.25"), usdc("7036.75"), usdc("3536.75"))

    venue.set_mode(ALICE, "portfolio")
    pm = venue.margin(ALICE)
    assert (pm.mode, pm.value) == ("portfolio", usdc("9963.25"))
    # The put pays off in the down scenarios: IMR strictly less than in cross mode. The
    # scan reprices the put with Black-76 (floats), so its exact value is the margin
    # library's: the same book valued directly, with the perp's funding rate of 0.01%.
    dte = (MARCH_EXPIRY_US - venue.clock.now) // 1_000_000 / 86_400
    expected = portfolio.portfolio_requirement(
        portfolio.Book(
            BTC_PARAMS,
            usdc("70000"),
            [PerpPosition(size("1"), usdc("70000"), 100, Fraction(1, 10_000))],
            [OptionPosition("put", usdc("70000"), size("1"), usdc("5600"), 0.5, dte)],
        )
    ).requirement
    assert (pm.im, pm.mm) == (expected.im, expected.mm)
    assert pm.im < cross.im
    # scan ~4,338 (at -12%, vol -22%) + fee provisions 31.5 + 5.25 + funding provision
    # 0.01% x 70,000 = 7
    assert usdc("4300") < pm.im < usdc("4400")

    assert book.audit().ok


def test_switch_to_portfolio_is_margin_checked(venue: Session) -> None:
    book = venue.book
    book.deposit(BOB, "100000")
    book.deposit(CAROL, "2000")
    venue.btc("70000")
    venue.trade(CAROL, BOB, PERP, "1", "70000")
    # CAROL's AV is 2,000 - 31.5 = 1,968.5 against the cross IMR 1,400 + 31.5.
    assert numbers(venue.margin(CAROL)) == (usdc("1968.5"), usdc("1431.5"), usdc("731.5"))
    # An unhedged perp needs much more in portfolio mode: the -16% scenario loses
    # 70,000 x 16% = 11,200 (min-delta is only 2% x 70,000 = 1,400); provisions 31.5 fee
    # + 0.01% x 70,000 = 7 funding: IMR 11,238.5, so the mode change itself is refused.
    message = (
        f"after this margin mode change, account {CAROL} would need 11238.50 USDC initial "
        "margin and have 1968.50 account value (9270.00 short); it does not reduce risk either"
    )
    assert_writes_nothing(
        book, InsufficientMargin, re.escape(message), lambda: venue.set_mode(CAROL, "portfolio")
    )
    assert venue.margin(CAROL).mode == "cross"
    assert book.audit().ok


def test_a_sub_account_holding_two_markets_cannot_be_isolated(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "10000")
    book.deposit(BOB, "100000")
    sub = f"{ALICE}:two"
    venue.transfer(ALICE, sub, "5000")
    venue.publish(
        {
            "BTC": {"index": "70000"},
            PERP: {"mark": "70000"},
            "ETH": {"index": "3500"},
            "ETH-USD-PERP": {"mark": "3500"},
        }
    )
    venue.trade(sub, BOB, PERP, "0.1", "70000")
    venue.trade(sub, BOB, "ETH-USD-PERP", "1", "3500")
    assert_writes_nothing(
        book,
        InvalidMarginMode,
        "holds more than one market: it cannot be isolated",
        lambda: venue.set_mode(sub, "isolated"),
    )
    assert book.audit().ok


def test_covered_call_needs_less_than_a_naked_one(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "1", asset="BTC")
    book.deposit(BOB, "10000")
    book.deposit(CAROL, "10000")
    venue.btc("70000", {CALL_80K: {"mark": "600", "iv": "0.5"}})
    venue.trade(BOB, ALICE, CALL_80K, "1", "600")  # covered by ALICE's 1 BTC
    venue.trade(BOB, CAROL, CALL_80K, "1", "600")  # naked
    # fee per side min(0.0075% x 70,000 = 5.25, 12.5% x 600 = 75) = 5.25
    # ALICE: USDC 600 - 5.25, spot 1 x 70,000 x 90%, call -600: AV 63,000 - 5.25.
    # Covered: no short-option margin, only the fee provision 5.25.
    assert numbers(venue.margin(ALICE)) == (usdc("62994.75"), usdc("5.25"), usdc("5.25"))
    # CAROL: AV 10,000 + 600 - 5.25 - 600. Naked call 10,000 OTM:
    # IMR max(10,500 - 10,000, 7,000) + 5.25; MMR max(5,250 - 10,000, 3,500) + 5.25
    assert numbers(venue.margin(CAROL)) == (usdc("9994.75"), usdc("7005.25"), usdc("3505.25"))
    assert book.audit().ok


# ---------------------------------------------------------------------- 11. what-if
def test_what_if_equals_the_real_fill(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "10000")
    book.deposit(BOB, "10000")
    venue.btc("70000")
    head = book.store.head()
    balances = book.store.current_balances()
    state = list(book.store.trading_state().rows())
    what_if = book.margin(ALICE, "buy 0.5 BTC-USD-PERP @ 70000")
    assert book.store.head() == head
    assert book.store.current_balances() == balances
    assert list(book.store.trading_state().rows()) == state
    assert numbers(book.margin(ALICE)) == (usdc("10000"), 0, 0)  # unchanged
    # as taker: AV 10,000 - 15.75, IMR 715.75, MMR 365.75
    assert numbers(what_if) == (usdc("9984.25"), usdc("715.75"), usdc("365.75"))
    venue.trade(ALICE, BOB, PERP, "0.5", "70000")
    assert numbers(book.margin(ALICE)) == numbers(what_if)
    assert what_if.positions == book.margin(ALICE).positions


def test_liquidation_price_of_a_long_perp(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "1000")
    book.deposit(BOB, "10000")
    venue.btc("70000")
    venue.trade(ALICE, BOB, PERP, "0.5", "70000")
    # AV(p) = 984.25 + 0.5 x (p - 70,000) = 0.5 p - 34,015.75; MMR(p) = 0.5 p x 1.045%.
    # AV = MMR at p = 34,015.75 / 0.494775 = 68,749.93684...
    # The ledger reports it to the tick on the liquidatable side (0.01 below): 68,749.93.
    [root] = book.liquidation_prices(ALICE)["BTC"]
    assert root == usdc("68749.93")
    # Valued a tick either side. At 68,749.93: AV 984.25 - 0.5 x 1,250.07 = 359.215;
    # MMR 34,374.965 x 1.045% = 359.21838425, rounded up 359.218385: liquidatable.
    # At 68,749.94: AV 359.22 >= MMR 34,374.97 x 1.045% = 359.2184365 -> 359.218437.
    venue.btc("68749.93")
    assert numbers(venue.margin(ALICE))[::2] == (usdc("359.215"), usdc("359.218385"))
    assert [s.account for s in book.liquidatable()] == [ALICE]
    venue.btc("68749.94")
    assert numbers(venue.margin(ALICE))[::2] == (usdc("359.22"), usdc("359.218437"))
    assert book.liquidatable() == []


def test_liquidation_prices_of_a_short_straddle(venue: Session) -> None:
    book = venue.book
    book.deposit(ALICE, "25000")
    book.deposit(BOB, "50000")
    call = option(MARCH, 70000, "C")
    venue.btc(
        "70000",
        {call: {"mark": "5600", "iv": "0.5"}, PUT_70K: {"mark": "5600", "iv": "0.5"}},
    )
    venue.trade(BOB, ALICE, call, "1", "5600")
    venue.trade(BOB, ALICE, PUT_70K, "1", "5600")
    # AV 25,000 + 2 x (5,600 - 5.25) - 2 x 5,600 = 24,989.5; at the money each short needs
    # IMR 10,500 + 5.25 and MMR 5,250 + 5.25
    assert numbers(venue.margin(ALICE)) == (usdc("24989.5"), usdc("21010.5"), usdc("10510.5"))
    low, high = book.liquidation_prices(ALICE)["BTC"]
    assert low < usdc("70000") < high
    # valued with the same repricing just inside and just outside each root
    state = book.store.trading_state([ALICE])
    balances = book.store.balances_of([ALICE])
    now = venue.clock.now

    def gap(price: int) -> int:
        moved = _moved(state, "BTC", price / usdc("70000"), now)
        summary = summarize(ALICE, lookup(balances), moved, now)
        return summary.value - summary.mm

    assert gap(low - 10**7) < 0 <= gap(low + 10**7)  # 10 USDC either side
    assert gap(high + 10**7) < 0 <= gap(high - 10**7)


# ---------------------------------------------------------------------- 12. audit
def test_audit_after_a_session_and_after_tampering(venue: Session) -> None:
    book = venue.book
    for account in (ALICE, BOB, CAROL):
        book.deposit(account, "10000")
    venue.btc("70000")
    fill = venue.trade(ALICE, BOB, PERP, "0.5", "70000")
    venue.btc("70070", after_s=10)
    venue.btc("70070", after_s=10)
    book.realise_funding(ALICE)
    venue.trade(CAROL, ALICE, PERP, "0.2", "70070", maker="buy")
    report = book.audit()
    assert report.ok and report.head_seq == book.store.head().seq
    # Move 1 USDC of ALICE's taker fee back to her (both legs and their running
    # balances, so the postings still sum to zero), with the append-only guards off.
    url = book.engine.url.render_as_string(hide_password=False)
    seq = fill.seq
    with attacker(url) as db:
        for account, delta in ((ALICE, usdc("1")), (FEES, -usdc("1"))):
            touched = run(
                db,
                "UPDATE postings SET amount = amount + {delta}, "
                "balance_after = balance_after + {delta} "
                "WHERE seq = {seq} AND account = {account} AND asset = 'USDC'",
                delta=delta,
                seq=seq,
                account=account,
            )
            assert touched == 1
    tampered = book.audit()
    assert not tampered.ok
    divergence = tampered.divergence
    assert divergence is not None and (divergence.seq, divergence.block) == (seq, None)
    assert tampered.head_seq == seq
    differ, hashed = divergence.problems
    assert differ.startswith("postings differ from what the trading rules compute: stored [")
    # ALICE's fee leg as stored and as the rules compute it
    stored, replayed = differ.split("], replay [")
    assert f"account='{ALICE}', asset='USDC', amount=-14750000" in stored
    assert f"account='{ALICE}', asset='USDC', amount=-15750000" in replayed
    assert hashed == "stored hash does not match the transaction's contents"
    assert f"divergence at seq {seq}" in divergence.describe()
