"""An account's value and margin requirements, from its balances and the trading state.

AV = USDC + sum_perps (size x mark - cost + accrued funding) + sum_options size x mark
     + sum_spot qty x S x (1 - haircut)

Every credit is rounded down per term; requirements come from :mod:`ledger.margin.cross`
(cross and isolated modes) or :mod:`ledger.margin.portfolio` (portfolio mode), rounded up.
A short call covered by spot of its underlying in the same account needs no short-option
margin for the covered part (our choice beyond Paradex; the spot still counts in AV once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

from ledger.core.accounts import AccountKind, account_kind, mirror_account
from ledger.core.amounts import MIRROR_ASSET, USDC
from ledger.errors import MarketDataMissing
from ledger.margin.cross import Requirement, cross_requirement
from ledger.margin.params import UnderlyingParams
from ledger.margin.portfolio import Book, ScanResult, portfolio_requirement, scenario_pnls
from ledger.margin.positions import OptionPosition, PerpPosition
from ledger.trading.state import FUNDING_SCALE, PORTFOLIO, TradingState, listed_instrument

Balance = Callable[[str, str], int]
US_PER_DAY = 86_400_000_000


class PositionView(NamedTuple):
    """One position as the margin check saw it."""

    instrument: str
    kind: str
    size: int
    mark: int
    cost: int
    unrealised: int  # mark-to-market PnL plus accrued funding, USDC base units (floored)
    funding: int  # accrued, not yet realised funding (part of unrealised)


@dataclass(frozen=True, slots=True)
class UnderlyingRisk:
    """Requirement of one underlying, and for portfolio margin its worst scenario."""

    underlying: str
    index: int
    requirement: Requirement
    scan: ScanResult | None = None
    scenario_pnl: tuple[Fraction, ...] = ()


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """AV, IMR and MMR of one account (USDC base units) and what they are made of."""

    account: str
    mode: str
    leverage: int
    usdc: int
    value: int
    im: int
    mm: int
    positions: tuple[PositionView, ...] = ()
    spot: tuple[tuple[str, int], ...] = ()
    risks: tuple[UnderlyingRisk, ...] = field(default_factory=tuple)
    mirrored: int = 0  # mirrored L2 USDC counted in value (mirror_collateral)

    @property
    def free_collateral(self) -> int:
        """min(AV - IMR, USDC): what new positions or withdrawals may use."""
        return min(self.value - self.im, self.usdc)

    @property
    def max_withdrawable(self) -> int:
        return max(0, self.free_collateral)

    @property
    def margin_ratio(self) -> Fraction | None:
        """MMR / AV (>= 1: liquidatable); None without requirements."""
        if self.mm == 0:
            return None
        if self.value <= 0:
            return Fraction(10**9)
        return Fraction(self.mm, self.value)

    @property
    def liquidatable(self) -> bool:
        return self.mm > 0 and (self.value < self.mm or self.value <= 0)

    @property
    def has_risk(self) -> bool:
        return bool(self.positions or self.spot)


def _require(value: int, what: str) -> int:
    if value <= 0:
        raise MarketDataMissing(f"no {what} has been published yet; publish a price update first")
    return value


def mirror_accounts(accounts: Iterable[str]) -> list[str]:
    """The mirror accounts whose balances value ``accounts`` (their owners' main ones)."""
    return [mirror_account(a) for a in accounts if account_kind(a) == AccountKind.USER]


def _mirrored_collateral(account: str, balance: Balance, weight: Fraction) -> int:
    if not weight or account_kind(account) != AccountKind.USER:
        return 0
    return int(balance(mirror_account(account), MIRROR_ASSET.code) * weight)  # floored


def summarize(
    account: str,
    balance: Balance,
    state: TradingState,
    now_us: int,
    *,
    detail: bool = False,
) -> AccountSummary:
    """Value ``account`` from ``balance`` (a lookup of ``(account, asset)``) and ``state``."""
    usdc = balance(account, USDC.code)
    mode = state.mode(account)
    held = state.holdings(account)
    config = state.config
    if config is None:
        return AccountSummary(account, mode.mode, mode.leverage, usdc, usdc, 0, 0)
    mirrored = _mirrored_collateral(account, balance, config.mirror_collateral)
    value = usdc + mirrored
    views: list[PositionView] = []
    perps: dict[str, list[PerpPosition]] = {}
    options: dict[str, list[OptionPosition]] = {}
    for name in sorted(held):
        size = balance(account, name)
        if size == 0:
            continue
        inst = listed_instrument(state.config_text, name)
        market = state.market(name)
        mark = _require(market.mark, f"mark price for {name}")
        scale = inst.size_scale
        position = state.positions.get((account, name))
        cost = position.cost if position is not None else 0
        if inst.kind == "perp":
            snapshot = position.funding if position is not None else market.funding_index
            accrued = -size * (market.funding_index - snapshot) // (scale * FUNDING_SCALE)
            pnl = size * mark // scale - cost + accrued
            value += pnl
            rate = Fraction(market.funding_rate)
            perps.setdefault(inst.underlying, []).append(
                PerpPosition(size, mark, mode.leverage, rate)
            )
        else:
            assert inst.kind == "option" and inst.strike and inst.option_kind and inst.expiry
            accrued = 0
            value += size * mark // scale
            pnl = size * mark // scale - cost
            # Whole seconds: checks within one second reprice alike (and hit the price cache).
            dte = max(0, int(inst.expiry.timestamp()) - now_us // 1_000_000) / 86_400
            iv = float(market.iv) if market.iv else 0.5  # a validated decimal string
            options.setdefault(inst.underlying, []).append(
                OptionPosition(inst.option_kind, inst.strike, size, mark, iv, dte)
            )
        views.append(PositionView(name, inst.kind, size, mark, cost, pnl, accrued))
    spot: list[tuple[str, int]] = []
    for underlying, params in config.underlyings.items():
        qty = balance(account, underlying)
        if qty:
            spot.append((underlying, qty))
            index = _require(state.market(underlying).index, f"index price for {underlying}")
            keep = 1 - params.spot_haircut
            value += qty * index * keep.numerator // (params.size_scale * keep.denominator)
    risks = _requirements(config.underlyings, perps, options, dict(spot), state, mode.mode, detail)
    im = sum(r.requirement.im for r in risks)
    mm = sum(r.requirement.mm for r in risks)
    return AccountSummary(
        account,
        mode.mode,
        mode.leverage,
        usdc,
        value,
        im,
        mm,
        tuple(views),
        tuple(spot),
        risks,
        mirrored,
    )


def _requirements(
    underlyings: Mapping[str, UnderlyingParams],
    perps: dict[str, list[PerpPosition]],
    options: dict[str, list[OptionPosition]],
    spot: dict[str, int],
    state: TradingState,
    mode: str,
    detail: bool,
) -> tuple[UnderlyingRisk, ...]:
    out: list[UnderlyingRisk] = []
    for underlying in sorted(set(perps) | set(options) | set(spot)):
        params = underlyings[underlying]
        book_perps: Sequence[PerpPosition] = perps.get(underlying, ())
        book_options: Sequence[OptionPosition] = options.get(underlying, ())
        if not book_perps and not book_options and mode != PORTFOLIO:
            continue  # spot alone needs no margin in cross mode
        index = state.market(underlying).index
        if book_options or spot.get(underlying) or mode == PORTFOLIO:
            index = _require(index, f"index price for {underlying}")
        if mode == PORTFOLIO:
            book = Book(params, index, book_perps, book_options, spot.get(underlying, 0))
            result = portfolio_requirement(book)
            pnl: tuple[Fraction, ...] = ()
            if detail:
                pnl = tuple(scenario_pnls(book))
            out.append(UnderlyingRisk(underlying, index, result.requirement, result.scan, pnl))
        else:
            result_x = cross_requirement(
                book_perps, book_options, index, params, spot.get(underlying, 0)
            )
            out.append(UnderlyingRisk(underlying, index, result_x.requirement))
    return tuple(out)
