"""The trading rules every transaction passes through: the journal's :class:`Rules`.

For each request the rules either compute its postings (listings, price updates, fills,
funding, settlement, liquidations: the ``DERIVED_KINDS``) or check the postings it names
(withdrawals and transfers), and say which accounts initiated it: those must end with
AV >= IMR or have reduced their risk (:func:`~ledger.trading.plan.require_margin`). Forced
transitions (prices, funding, expiry settlement, liquidation) check nobody; a forced one
that leaves a user account short of USDC draws the shortfall from the insurance fund.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from ledger.core.accounts import (
    CLEARING,
    FEES,
    FUNDING,
    INSURANCE,
    SYSTEM_ACCOUNTS,
    WITHDRAWALS,
    AccountKind,
    account_kind,
    is_system,
)
from ledger.core.amounts import MIRROR_ASSET, USDC, Asset
from ledger.core.authorization import AuthState
from ledger.core.journal import TxKind, TxRequest, canonical_account
from ledger.core.mirror import check_evidence
from ledger.core.orders import Order
from ledger.errors import InvalidMarginMode, InvalidMarketEvent, LedgerError
from ledger.trading.fills import plan_fill
from ledger.trading.liquidation import plan_liquidation
from ledger.trading.market import check_listing, price_changes
from ledger.trading.plan import Changes, Plan
from ledger.trading.positions import Legs, accrued_funding
from ledger.trading.settlement import plan_settlement
from ledger.trading.socialised_loss import haircut
from ledger.trading.state import (
    ISOLATED,
    MAX_LEVERAGE,
    MODES,
    AccountMode,
    TradingState,
    listed_instrument,
)

_USER_CHECKED = frozenset({TxKind.WITHDRAWAL.value, TxKind.TRANSFER.value})


class TradingAssets(Mapping[str, Asset]):
    """USDC, each listed underlying's spot asset, and every listed perp and option (signed:
    a short is a negative balance)."""

    def __init__(self, state: TradingState) -> None:
        self._state = state
        self._known: dict[str, Asset] = {USDC.code: USDC, MIRROR_ASSET.code: MIRROR_ASSET}

    def __getitem__(self, code: str) -> Asset:
        asset = self._known.get(code)
        if asset is None:
            asset = self._known[code] = self._lookup(code)
        return asset

    def _lookup(self, code: str) -> Asset:
        config = self._state.config
        if config is None:
            raise KeyError(code)
        params = config.underlyings.get(code)
        if params is not None:
            return Asset(code, len(str(params.size_scale)) - 1)
        try:
            inst = listed_instrument(self._state.config_text, code)
        except LedgerError:
            raise KeyError(code) from None
        if inst.kind == "spot":
            raise KeyError(code)
        return Asset(code, len(str(inst.size_scale)) - 1, signed=True)

    def __iter__(self) -> Iterator[str]:
        config = self._state.config
        yield USDC.code
        if config is not None:
            yield from config.underlyings
            yield from (name for name in self._state.markets if name not in config.underlyings)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _meta(request: TxRequest) -> dict[str, Any]:
    meta = json.loads(request.metadata)
    assert isinstance(meta, dict)
    return meta


class TradingRules:
    """The journal's rules over a :class:`TradingState` (see module doc)."""

    def __init__(self, state: TradingState) -> None:
        self.state = state
        self._assets = TradingAssets(state)

    @property
    def assets(self) -> Mapping[str, Asset]:
        return self._assets

    def _is_position(self, code: str) -> bool:
        try:
            return self._assets[code].signed
        except KeyError:
            return False

    def _plan(
        self,
        legs: Legs | None,
        balances: Mapping[tuple[str, str], int],
        now_us: int,
        what: str,
        changes: Changes | None = None,
    ) -> Plan:
        postings = legs.postings() if legs is not None else ()
        return Plan(
            postings, self.state, balances, now_us, what, self._is_position, changes or Changes()
        )

    def transition(
        self,
        request: TxRequest,
        balances: Mapping[tuple[str, str], int],
        auth_state: AuthState,
        now_us: int,
    ) -> Plan | None:
        kind = request.kind
        state = self.state
        if kind in _USER_CHECKED:
            return self._checked_transfer(request, balances, now_us)
        if kind == TxKind.MIRROR.value:
            check_evidence(request)  # mirrored value: no trading effect
            return None
        if kind == TxKind.ACCOUNT_SETTING.value:
            envelope = _meta(request)["auth"]
            if envelope["action"] != "set_margin_mode":
                return None  # a mirror authorisation: nothing for the trading rules
            return self._set_mode(envelope["message"], balances, now_us)
        if kind == TxKind.LISTING.value:
            text = _meta(request).get("config")
            check_listing(text)
            assert isinstance(text, str)
            return self._plan(None, balances, now_us, "listing", Changes(config_text=text))
        if kind == TxKind.PRICE_UPDATE.value:
            changes = Changes(markets=price_changes(_meta(request).get("prices"), state, now_us))
            return self._plan(None, balances, now_us, "price update", changes)
        if kind == TxKind.FILL.value:
            legs, changes, accounts = plan_fill(_meta(request), state, balances, auth_state, now_us)
            plan = self._plan(legs, balances, now_us, "fill", changes)
            plan.checked = accounts
            return plan
        if kind == TxKind.FUNDING.value:
            legs, changes = self._realise_funding(_meta(request), balances)
        elif kind == TxKind.SETTLEMENT.value:
            legs, changes = plan_settlement(_meta(request), state, balances, now_us)
        elif kind == TxKind.LIQUIDATION.value:
            account = _account(_meta(request).get("account"))
            legs, changes, _ = plan_liquidation(account, state, balances, now_us)
        else:
            return None
        _cover_shortfalls(legs, balances)
        return self._plan(legs, balances, now_us, kind, changes)

    def _checked_transfer(
        self, request: TxRequest, balances: Mapping[tuple[str, str], int], now_us: int
    ) -> Plan | None:
        state = self.state
        debited = sorted(
            {p.account for p in request.postings if p.amount < 0 and not is_system(p.account)}
        )
        risky = [a for a in debited if state.holdings(a) or _holds_spot(state, balances, a)]
        postings = request.postings
        if request.kind == TxKind.WITHDRAWAL.value:
            paid = sum(p.amount for p in postings if p.account == WITHDRAWALS)
            cut = haircut(paid, balances)
            if cut:
                legs = Legs()
                for p in postings:
                    legs.add(p.account, p.asset, p.amount)
                legs.move(WITHDRAWALS, INSURANCE, USDC.code, cut)
                postings = legs.postings()
        if not risky and postings is request.postings:
            return None  # USDC only: the journal's no-negative-balance rule is the check
        plan = Plan(postings, state, balances, now_us, request.kind, self._is_position)
        plan.checked = risky
        return plan

    def _set_mode(
        self, message: Mapping[str, Any], balances: Mapping[tuple[str, str], int], now_us: int
    ) -> Plan:
        account = canonical_account(str(message["account"]))
        mode, leverage = str(message["mode"]), int(message["leverage"])
        if mode not in MODES:
            raise InvalidMarginMode(f"unknown margin mode {mode!r}; use {', '.join(MODES)}")
        if not 1 <= leverage <= MAX_LEVERAGE:
            raise InvalidMarginMode(f"leverage must be 1..{MAX_LEVERAGE}, got {leverage}")
        if mode == ISOLATED:
            if account_kind(account) != AccountKind.SUB:
                raise InvalidMarginMode(
                    f"only sub-accounts OWNER:NAME can be isolated; {account} is a main account"
                )
            if len(self.state.holdings(account)) > 1 or _holds_spot(self.state, balances, account):
                raise InvalidMarginMode(
                    f"{account} holds more than one market: it cannot be isolated"
                )
        plan = Plan(
            (),
            self.state,
            balances,
            now_us,
            "margin mode change",
            self._is_position,
            Changes(modes={account: AccountMode(mode, leverage)}),
        )
        plan.checked = (account,)
        return plan

    def _realise_funding(
        self, meta: Mapping[str, Any], balances: Mapping[tuple[str, str], int]
    ) -> tuple[Legs, Changes]:
        """Post the funding an account's perps accrued (its positions stay as they are)."""
        account = _account(meta.get("account"))
        legs, changes = Legs(), Changes()
        perps = [
            inst
            for inst in (
                listed_instrument(self.state.config_text, n)
                for n in sorted(self.state.holdings(account))
            )
            if inst.kind == "perp"
        ]
        if not perps:
            raise InvalidMarketEvent(f"{account} holds no perp position: no funding to realise")
        for inst in perps:
            name = inst.name
            size = balances.get((account, name), 0)
            position = self.state.positions.get((account, name))
            market = self.state.market(name)
            amount = accrued_funding(size, position, market.funding_index, inst.size_scale)
            legs.move(FUNDING, account, USDC.code, amount)
            if position is not None:
                changes.positions[(account, name)] = position._replace(funding=market.funding_index)
        return legs, changes

    @staticmethod
    def touched(request: TxRequest) -> tuple[set[str], set[str]]:
        """Accounts whose state a request needs beyond its own postings, and the order ids
        it fills (the store loads them before applying the batch)."""
        kind = request.kind
        if kind == TxKind.WITHDRAWAL.value:
            return set(SYSTEM_ACCOUNTS), set()  # the socialised-loss haircut reads them
        if kind == TxKind.ACCOUNT_SETTING.value:
            try:  # the account whose mode changes: its whole book is checked
                return {canonical_account(str(_meta(request)["auth"]["message"]["account"]))}, set()
            except (ValueError, KeyError, TypeError, LedgerError):
                return set(), set()  # malformed: the signature check refuses it
        if kind not in (
            TxKind.FILL.value,
            TxKind.FUNDING.value,
            TxKind.SETTLEMENT.value,
            TxKind.LIQUIDATION.value,
        ):
            return set(), set()
        meta = _meta(request)
        system = {FEES, FUNDING, CLEARING, INSURANCE}
        if kind == TxKind.FILL.value:
            orders = [Order.from_envelope(meta.get(side))[0] for side in ("buy", "sell")]
            return {o.account for o in orders} | system, {o.order_id for o in orders}
        if kind == TxKind.SETTLEMENT.value:
            holders = meta.get("accounts")
            return set(holders if isinstance(holders, list) else ()) | system, set()
        return {_account(meta.get("account"))} | system, set()


def _account(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidMarketEvent("the request names no account")
    return canonical_account(value)


def _holds_spot(state: TradingState, balances: Mapping[tuple[str, str], int], account: str) -> bool:
    config = state.config
    return config is not None and any(balances.get((account, u), 0) for u in config.underlyings)


def _cover_shortfalls(legs: Legs, balances: Mapping[tuple[str, str], int]) -> None:
    """A forced transition never leaves a user account with negative USDC: the insurance
    fund pays what the account cannot (a bankruptcy)."""
    for posting in legs.postings():
        if posting.asset != USDC.code or is_system(posting.account):
            continue
        after = balances.get((posting.account, USDC.code), 0) + posting.amount
        if after < 0:
            legs.move(INSURANCE, posting.account, USDC.code, -after)
