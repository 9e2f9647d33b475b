"""The trading session of ``ledger demo``: prices with funding ticks, spot, perp and option
fills between signed orders, a portfolio-margin account, an isolated sub-account, an option
expiry and a liquidation after a crash. Deterministic like the rest of the demo."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger.core import operations
from ledger.errors import InsufficientMargin
from ledger.ledger import Ledger
from ledger.wallet import Wallet

EXPIRY = "20260102"  # the demo clock starts on 2026-01-01: these options expire next morning
CALL = f"BTC-USD-{EXPIRY}-72000-C"
PUT = f"BTC-USD-{EXPIRY}-68000-P"
PERP = "BTC-USD-PERP"
TICK_US = 10_000_000  # price ticks 10 s apart, so funding accrues between them
DAY_US = 86_400_000_000
TRADER_USDC = 100_000 * 10**6


@dataclass(slots=True)
class TradingStats:
    """What the trading session did."""

    fills: int = 0
    price_updates: int = 0
    settlements: int = 0
    liquidations: int = 0
    margin_rejections: int = 0
    transactions: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


class TradingSession:
    """Six traders, one market maker; the clock is the demo's synthetic clock."""

    def __init__(
        self,
        book: Ledger,
        traders: list[Wallet],
        advance: Callable[[int], None],
        expiry_s: int,
    ) -> None:
        self.book, self.traders, self.advance, self.expiry_s = book, traders, advance, expiry_s
        self.stats = TradingStats()
        self.nonce = 1_000_000  # orders and settings: above the payment actions' nonces
        self.index = 70_000

    def _next_nonce(self) -> int:
        self.nonce += 1
        return self.nonce

    def _count(self, kind: str, n: int = 1) -> None:
        self.stats.transactions += n
        self.stats.kinds[kind] = self.stats.kinds.get(kind, 0) + n

    def prices(self, index: int, perp_premium: int = 20) -> None:
        self.index = index
        self.advance(TICK_US)
        self.book.publish_prices(
            {
                "BTC": {"index": str(index)},
                PERP: {"mark": str(index + perp_premium)},
                CALL: {"mark": str(max(5, index - 72_000 + 400)), "iv": "0.55"},
                PUT: {"mark": str(max(5, 68_000 - index + 350)), "iv": "0.6"},
            }
        )
        self.stats.price_updates += 1
        self._count("price_update")

    def trade(
        self,
        buyer: Wallet,
        seller: Wallet,
        market: str,
        size: str,
        price: str,
        *,
        buy_account: str | None = None,
        sell_account: str | None = None,
    ) -> None:
        book = self.book
        limit_buy, limit_sell = str(int(price) + 100), str(max(1, int(price) - 100))
        buy = book.sign_order(
            buyer,
            buy_account or buyer.address,
            market,
            "buy",
            size,
            limit_buy,
            nonce=self._next_nonce(),
            expiry=self.expiry_s,
        )
        sell = book.sign_order(
            seller,
            sell_account or seller.address,
            market,
            "sell",
            size,
            limit_sell,
            nonce=self._next_nonce(),
            expiry=self.expiry_s,
        )
        book.fill(buy, sell, price, size)
        self.stats.fills += 1
        self._count("fill")

    def run(self, funded: bool = False) -> TradingStats:
        """Trade; each trader first gets 100,000 USDC by an operator deposit unless
        ``funded`` (``ledger devnet`` deposits them on L1 instead)."""
        book, t = self.book, self.traders
        maker, alice, bob, carol, dave, erin = t
        for wallet in [] if funded else t:
            deposit = operations.deposit(wallet.address, TRADER_USDC, f"fund-{wallet.address}")
            book.system(deposit)
            self._count("deposit")
        book.deposit(maker.address, "5", key="fund-maker-btc", asset="BTC")  # bridged spot
        self._count("deposit")
        self.prices(70_000)
        self.prices(70_000)
        self.trade(alice, maker, PERP, "1", "70000")
        self.trade(maker, bob, PERP, "0.5", "70010")
        self.trade(carol, maker, "BTC/USDC", "0.5", "70000")
        self.trade(maker, carol, CALL, "0.5", "400")  # carol's call is covered by her spot
        self.trade(dave, maker, PUT, "1", "350")
        self.trade(maker, dave, PERP, "1", "70000")  # dave: long put + short perp
        book.set_margin_mode(
            dave.address, "portfolio", wallet=dave, nonce=self._next_nonce(), expiry=self.expiry_s
        )
        self._count("account_setting")
        isolated = f"{erin.address}:btc-perp"
        book.transfer(
            erin.address,
            isolated,
            "3000",
            wallet=erin,
            nonce=self._next_nonce(),
            expiry=self.expiry_s,
        )
        self._count("transfer")
        book.set_margin_mode(
            isolated, "isolated", wallet=erin, nonce=self._next_nonce(), expiry=self.expiry_s
        )
        self._count("account_setting")
        self.trade(erin, maker, PERP, "1.5", "70000", buy_account=isolated)
        try:  # over-leveraged: the margin check refuses it and writes nothing
            self.trade(erin, maker, PERP, "10", "70000", buy_account=isolated)
        except InsufficientMargin:
            self.stats.margin_rejections += 1
        for index in (70_100, 70_250, 70_150, 70_400):
            self.prices(index, perp_premium=60)
        book.realise_funding(alice.address)
        self._count("funding")
        self.prices(68_600)  # a 2.6% drop: erin's isolated 1.5 BTC at 70,000 goes under
        for _ in book.liquidate_all():
            self.stats.liquidations += 1
            self._count("liquidation")
        self.trade(bob, maker, PERP, "0.5", "68600")  # bob closes his short at a profit
        self.advance(DAY_US + 9 * 3_600_000_000)  # past 08:00 UTC on the expiry date
        self.prices(71_000)
        receipts = book.settle_expiry(EXPIRY, "71000")
        self.stats.settlements += len(receipts)
        self._count("settlement", len(receipts))
        return self.stats


def summary(stats: TradingStats) -> dict[str, Any]:
    """The trading part of the demo's summary."""
    return {
        "trading_transactions": stats.transactions,
        "fills": stats.fills,
        "price_updates": stats.price_updates,
        "liquidations": stats.liquidations,
        "settlements": stats.settlements,
        "margin_rejections_as_expected": stats.margin_rejections,
    }
