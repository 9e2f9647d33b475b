"""Trading on the ledger from Python: listings, prices, orders and fills, margin modes,
funding, expiry settlement, liquidation, and the margin view with what-if.

Mixed into :class:`ledger.Ledger`; every write is one journal transaction that the trading
rules (:mod:`ledger.trading.rules`) check and that ``ledger audit`` re-checks on replay.
Prices are USDC base units (int) or decimal strings (``"70000.5"``); sizes are size units
of the underlying (int; 10**8 per BTC) or decimal strings (``"0.25"``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ledger.core import envelopes
from ledger.core.amounts import USDC, Asset, parse_amount
from ledger.core.encoding import canonical_json
from ledger.core.journal import TxKind, TxRequest, canonical_account, make_request
from ledger.core.orders import Order
from ledger.errors import InvalidMarketEvent, NotLiquidatable
from ledger.margin.config import MarginConfig, default_config_text, load_config_text
from ledger.store.sql import Receipt, SqlStore
from ledger.trading.fills import check_steps
from ledger.trading.liquidation_price import liquidation_prices
from ledger.trading.market import implied_vol
from ledger.trading.settlement import expiring
from ledger.trading.state import MAX_LEVERAGE, TradingState, listed_instrument
from ledger.trading.valuation import AccountSummary, mirror_accounts, summarize
from ledger.trading.whatif import Hypothetical, parse_trade, simulate
from ledger.wallet.signer import Wallet

if TYPE_CHECKING:
    from ledger.core import snip12
    from ledger.ledger import Clock


def _digest_key(prefix: str, *parts: object) -> str:
    digest = hashlib.sha256(canonical_json({"parts": list(parts)}).encode()).hexdigest()
    return f"{prefix}/{digest[:40]}"


class Venue:
    """The trading half of :class:`ledger.Ledger` (see module doc)."""

    store: SqlStore
    clock: Clock
    domain: snip12.Domain

    if TYPE_CHECKING:  # provided by Ledger

        def system(self, request: TxRequest) -> Receipt: ...

        def submit_signed(self, envelope: Mapping[str, Any]) -> Receipt: ...

    # ------------------------------------------------------------------ market data
    def list_instruments(self, config_text: str | None = None) -> Receipt:
        """Record the instrument configuration (TOML text; default: the shipped one)."""
        text = config_text if config_text is not None else default_config_text()
        load_config_text(text, "listing")  # a clear error before anything is signed
        request = make_request(
            TxKind.LISTING.value, _digest_key("listing", text), (), {"config": text}
        )
        return self.system(request)

    def config(self) -> MarginConfig:
        """The listed configuration."""
        config = self.store.trading_state([]).config
        if config is None:
            raise InvalidMarketEvent("no instruments are listed: run `ledger init` or list them")
        return config

    def publish_prices(
        self, prices: Mapping[str, Mapping[str, int | str]], *, key: str | None = None
    ) -> Receipt:
        """Publish index prices (by underlying), marks (perps, options) and implied vols
        (options, as decimal strings): ``{"BTC": {"index": "70000"}, "BTC-USD-PERP":
        {"mark": "70010"}}``. Ticks each perp's funding index."""
        units = {
            name: {
                field: implied_vol(value, f"iv of {name}") if field == "iv" else price_units(value)
                for field, value in fields.items()
            }
            for name, fields in prices.items()
        }
        request = make_request(
            TxKind.PRICE_UPDATE.value,
            key or self._state_key("prices", units),
            (),
            {"prices": units},
        )
        return self.system(request)

    # ------------------------------------------------------------------ orders and fills
    def sign_order(
        self,
        wallet: Wallet,
        account: str,
        market: str,
        side: str,
        size: int | str,
        limit_price: int | str,
        *,
        nonce: int | None = None,
        expiry: int | None = None,
    ) -> dict[str, Any]:
        """An order signed by ``wallet`` (a fill carries two of them)."""
        inst = listed_instrument(self._listing(), market)
        units, limit = size_units(size, inst.size_scale), price_units(limit_price)
        check_steps(units, limit, self.config().underlyings[inst.underlying])
        return wallet.order(account, market, side, units, limit, self.domain, nonce, expiry)

    def fill(
        self,
        buy: Mapping[str, Any],
        sell: Mapping[str, Any],
        price: int | str,
        size: int | str,
        *,
        maker: str = "sell",
        key: str | None = None,
    ) -> Receipt:
        """Match ``size`` at ``price`` between a signed buy and a signed sell order (the
        orders are verified, the fill is operator-signed, both accounts margin-checked)."""
        verified = [envelopes.verify_action(order, self.domain) for order in (buy, sell)]
        orders = [Order.from_action(action) for action in verified]
        market = orders[0].market
        inst = listed_instrument(self._listing(), market)
        units = size_units(size, inst.size_scale)
        price_u = price_units(price)
        if key is None:
            # Retrying the same fill on the same order state gives the same key (idempotent).
            ids = [o.order_id for o in orders]
            filled = self.store.trading_state([], ids).filled
            key = _digest_key("fill", ids, price_u, units, [filled.get(i, 0) for i in ids])
        meta = {
            "market": market,
            "price": price_u,
            "size": units,
            "maker": maker,
            "buy": verified[0].envelope,
            "sell": verified[1].envelope,
        }
        return self.system(make_request(TxKind.FILL.value, key, (), meta))

    def set_margin_mode(
        self,
        account: str,
        mode: str,
        leverage: int = MAX_LEVERAGE,
        *,
        wallet: Wallet,
        nonce: int | None = None,
        expiry: int | None = None,
    ) -> Receipt:
        """Set ``account``'s margin mode (cross, isolated, portfolio) and perp leverage,
        signed by its owner; the change itself must pass the margin check."""
        envelope = wallet.set_margin_mode(account, mode, leverage, self.domain, nonce, expiry)
        return self.submit_signed(envelope)

    # ------------------------------------------------------------------ forced transitions
    def realise_funding(self, account: str) -> Receipt:
        """Post the funding ``account``'s perps have accrued (operator-signed)."""
        request = make_request(
            TxKind.FUNDING.value, self._state_key("funding", account), (), {"account": account}
        )
        return self.system(request)

    def settle_expiry(
        self, expiry: str, price: int | str, underlying: str | None = None
    ) -> list[Receipt]:
        """Cash-settle every option expiring on ``expiry`` (YYYYMMDD) at ``price``, one
        settlement per underlying (all underlyings with such options by default)."""
        state = self.store.trading_state([])
        config = self.config()
        names = [underlying] if underlying else sorted(config.underlyings)
        receipts = []
        for name in names:
            options = expiring(state, name, expiry)
            if not options:
                continue
            holders = self.store.holders([o.name for o in options])
            meta = {
                "underlying": name,
                "expiry": expiry,
                "price": price_units(price),
                "accounts": holders,
            }
            key = _digest_key("settle", name, expiry)
            receipts.append(self.system(make_request(TxKind.SETTLEMENT.value, key, (), meta)))
        if not receipts:
            raise InvalidMarketEvent(f"no open options expire on {expiry}")
        return receipts

    def liquidate(self, account: str) -> Receipt:
        """Liquidate ``account`` (it must be under its maintenance margin)."""
        canonical = canonical_account(account)
        key = self._state_key("liquidate", canonical)
        return self.system(make_request(TxKind.LIQUIDATION.value, key, (), {"account": canonical}))

    def liquidatable(self) -> list[AccountSummary]:
        """Every account under its maintenance margin now."""
        accounts = self.store.position_accounts()
        state = self.store.trading_state(accounts)
        balances = self.store.balances_of([*accounts, *mirror_accounts(accounts)])
        now = self.clock()
        out = []
        for account in accounts:
            summary = summarize(account, lambda a, s: balances.get((a, s), 0), state, now)
            if summary.liquidatable:
                out.append(summary)
        return out

    def liquidate_all(self) -> list[Receipt]:
        """Liquidate every account under its maintenance margin (after forced moves)."""
        receipts = []
        for summary in self.liquidatable():
            try:
                receipts.append(self.liquidate(summary.account))
            except NotLiquidatable:
                continue  # recovered meanwhile
        return receipts

    # ------------------------------------------------------------------ margin view
    def margin(self, account: str, what_if: str | Hypothetical | None = None) -> AccountSummary:
        """AV, IMR, MMR and their parts for ``account``; with ``what_if`` (e.g.
        ``"buy 2 BTC-USD-PERP @ 70000"``) after that hypothetical fill, writing nothing."""
        canonical = canonical_account(account)
        state = self._state([canonical])
        balances = self.store.balances_of([canonical, *mirror_accounts([canonical])])
        now = self.clock()
        if what_if is not None:
            trade = parse_trade(what_if, state) if isinstance(what_if, str) else what_if
            return simulate(canonical, trade, state, balances, now)
        return summarize(canonical, lambda a, s: balances.get((a, s), 0), state, now, detail=True)

    def liquidation_prices(self, account: str) -> dict[str, list[int]]:
        """Per underlying, every index price (in a range around the current one) at which
        ``account``'s value crosses its maintenance margin."""
        canonical = canonical_account(account)
        state = self._state([canonical])
        balances = self.store.balances_of([canonical, *mirror_accounts([canonical])])
        return liquidation_prices(canonical, state, balances, self.clock())

    def _state_key(self, prefix: str, *parts: object) -> str:
        # Keyed by the chain head: retrying against the same state is an idempotent no-op,
        # and the same event after anything else happened is a new transaction.
        return _digest_key(prefix, self.store.head().seq, *parts)

    def _state(self, accounts: list[str]) -> TradingState:
        return self.store.trading_state(accounts)

    def _listing(self) -> str:
        text = self.store.trading_state([]).config_text
        if not text:
            raise InvalidMarketEvent("no instruments are listed: run `ledger init` or list them")
        return text


def price_units(value: int | str) -> int:
    """A price in USDC base units from an int or a decimal string."""
    if isinstance(value, str):
        return parse_amount(value, USDC)
    if type(value) is not int:
        raise InvalidMarketEvent(
            f"a price is an integer of base units or a decimal string, got {value!r}"
        )
    return value


def size_units(value: int | str, size_scale: int) -> int:
    """A size in size units from an int or a decimal string of whole units."""
    if isinstance(value, str):
        return parse_amount(value, Asset("SIZE", len(str(size_scale)) - 1))
    if type(value) is not int:
        raise InvalidMarketEvent(
            f"a size is an integer of size units or a decimal string, got {value!r}"
        )
    return value
