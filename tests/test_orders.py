"""A fill must respect both signed orders it carries."""

from __future__ import annotations

import pytest

from ledger.core import envelopes, genesis
from ledger.core.orders import FillViolatesOrder, Order, check_fill
from ledger.errors import MalformedEnvelope
from tests.conftest import ALICE, ALICE_WALLET, BOB, BOB_WALLET

DOMAIN = genesis.l2_domain(genesis.DEFAULT_L2_CHAIN_ID)
MARKET = "BTC-USD-PERP"


def order(
    wallet_account: str,
    side: str,
    size: int,
    limit: int,
    nonce: int = 1,
    expiry: int = 2_000_000_000,
    market: str = MARKET,
) -> Order:
    wallet = ALICE_WALLET if wallet_account == ALICE else BOB_WALLET
    envelope = wallet.sign_action(
        "order",
        {
            "account": wallet_account,
            "market": market,
            "side": side,
            "size": str(size),
            "limit_price": str(limit),
            "nonce": str(nonce),
            "expiry": str(expiry),
        },
        DOMAIN,
    )
    return Order.from_action(envelopes.verify_action(envelope, DOMAIN))


BUY = order(ALICE, "buy", 10, 70_000)
SELL = order(BOB, "sell", 6, 69_000)


def test_a_fill_within_both_orders_passes() -> None:
    check_fill(BUY, SELL, MARKET, 69_500, 6, {}, 1_900_000_000)
    check_fill(BUY, SELL, MARKET, 70_000, 4, {SELL.order_id: 2}, 1_900_000_000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((SELL, BUY, MARKET, 69_500, 1, {}), "is a sell, not a buy"),
        ((BUY, SELL, "ETH-USD-PERP", 69_500, 1, {}), "not ETH-USD-PERP"),
        ((BUY, SELL, MARKET, 70_001, 1, {}), "above the buy order's limit"),
        ((BUY, SELL, MARKET, 68_999, 1, {}), "below the sell order's limit"),
        ((BUY, SELL, MARKET, 69_500, 7, {}), "exceeds what order"),
        ((BUY, SELL, MARKET, 69_500, 1, {SELL.order_id: 6}), "already fully filled"),
        ((BUY, SELL, MARKET, 69_500, 5, {BUY.order_id: 6}), "exceeds what order"),
        ((BUY, SELL, MARKET, 0, 1, {}), "must be positive"),
        ((BUY, order(ALICE, "sell", 5, 1, nonce=2), MARKET, 10, 1, {}), "trade with itself"),
    ],
)
def test_fills_that_break_an_order_are_refused(
    args: tuple[Order, Order, str, int, int, dict[str, int]], message: str
) -> None:
    with pytest.raises(FillViolatesOrder, match=message):
        check_fill(*args, now_s=1_900_000_000)


def test_an_expired_order_cannot_be_filled() -> None:
    with pytest.raises(FillViolatesOrder, match="expired"):
        check_fill(BUY, order(BOB, "sell", 5, 1, expiry=100), MARKET, 69_500, 1, {}, 1_000)


def test_an_order_is_not_a_transaction_by_itself() -> None:
    envelope = ALICE_WALLET.sign_action(
        "order",
        {
            "account": ALICE,
            "market": MARKET,
            "side": "buy",
            "size": "1",
            "limit_price": "1",
            "nonce": "9",
            "expiry": "2000000000",
        },
        DOMAIN,
    )
    with pytest.raises(MalformedEnvelope, match="carried by a fill"):
        envelopes.request_for_action(envelopes.verify_action(envelope, DOMAIN))
