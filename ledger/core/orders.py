"""Signed orders and the check that a fill respects both of them.

A fill carries the buyer's and the seller's signed ``Order`` envelopes; the ledger accepts it
only if each order allows it: right side and market, price within the limit, size within
what the order has left, order not expired. How much of each order is already filled is the
ledger's state (keyed by the order id ``OWNER/NONCE``), passed in here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.core.amounts import format_amount
from ledger.core.envelopes import SignedAction
from ledger.core.journal import canonical_account
from ledger.errors import AuthorizationError

BUY = "buy"
SELL = "sell"


class FillViolatesOrder(AuthorizationError):
    """A fill is not allowed by one of the signed orders it carries."""


@dataclass(frozen=True, slots=True)
class Order:
    """A verified order: what its owner allowed."""

    order_id: str
    account: str
    market: str
    side: str
    size: int
    limit_price: int
    expiry: int

    @classmethod
    def from_envelope(cls, envelope: object) -> tuple[Order, str, int]:
        """Read a canonical order envelope whose signature was verified when it entered
        the ledger: ``(order, owner, stark public key)`` without the costly checks."""
        try:
            assert isinstance(envelope, dict)
            if envelope["action"] != "order":
                raise FillViolatesOrder(f"expected a signed order, got a {envelope['action']}")
            message, signer = envelope["message"], envelope["signer"]
            owner = str(signer["account"])
            order = cls(
                order_id=f"{owner}/{int(message['nonce'])}",
                account=canonical_account(str(message["account"])),
                market=str(message["market"]),
                side=str(message["side"]),
                size=int(message["size"]),
                limit_price=int(message["limit_price"]),
                expiry=int(message["expiry"]),
            )
            return order, owner, int(signer["stark_public_key"], 16)
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            raise FillViolatesOrder(f"malformed order envelope: {exc!r}") from exc

    @classmethod
    def from_action(cls, action: SignedAction) -> Order:
        if action.action != "order":
            raise FillViolatesOrder(f"expected a signed order, got a {action.action}")
        values = action.values
        if values["side"] not in (BUY, SELL):
            raise FillViolatesOrder(f"order side must be buy or sell, got {values['side']!r}")
        return cls(
            order_id=f"{action.owner}/{action.auth.nonce}",
            account=action.auth.subject,
            market=str(values["market"]),
            side=str(values["side"]),
            size=int(values["size"]),
            limit_price=int(values["limit_price"]),
            expiry=int(values["expiry"]),
        )


def check_fill(
    buy: Order,
    sell: Order,
    market: str,
    price: int,
    size: int,
    filled: dict[str, int],
    now_s: int,
) -> None:
    """Raise FillViolatesOrder unless both orders allow ``size`` at ``price`` on ``market``."""
    if size <= 0 or price <= 0:
        raise FillViolatesOrder("fill size and price must be positive")
    if buy.account == sell.account:
        raise FillViolatesOrder(f"{buy.account} cannot trade with itself")
    for order, side in ((buy, BUY), (sell, SELL)):
        if order.side != side:
            raise FillViolatesOrder(f"order {order.order_id} is a {order.side}, not a {side}")
        if order.market != market:
            raise FillViolatesOrder(f"order {order.order_id} is for {order.market}, not {market}")
        if order.expiry < now_s:
            raise FillViolatesOrder(f"order {order.order_id} expired at {order.expiry}")
        left = order.size - filled.get(order.order_id, 0)
        if left <= 0:
            raise FillViolatesOrder(f"order {order.order_id} is already fully filled")
        if size > left:
            raise FillViolatesOrder(
                f"fill of {size} size units exceeds what order {order.order_id} has left ({left})"
            )
    if price > buy.limit_price:
        raise FillViolatesOrder(
            f"price {format_amount(price)} is above the buy order's limit "
            f"{format_amount(buy.limit_price)} USDC"
        )
    if price < sell.limit_price:
        raise FillViolatesOrder(
            f"price {format_amount(price)} is below the sell order's limit "
            f"{format_amount(sell.limit_price)} USDC"
        )
