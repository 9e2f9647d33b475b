"""Portfolio margin (PM) for one underlying: min-delta and the scenario SCAN.

Units as in :mod:`ledger.margin.positions`. Perp and spot scenario PnL are exact
``Fraction``; option repricing uses float Black-76 and enters as ``Fraction(float)``; the
final requirements are rounded UP to integer USDC base units once, at the end.

Repricing in scenario i (spot move m_i, vol shock vs_i, weight w_i), S' = S x (1 + m_i):

- perps at S' x (1 + basis), basis = mark / S - 1, so PnL = q x mark x m_i;
- spot at S', PnL = qty x S x m_i (our choice: Paradex leaves spot out of the scan);
- options with Black-76 (r = 0) at S' and the shocked vol, against the Black-76 value at
  (S, IV) so that model error does not count as a scenario loss; within the last 30 minutes
  before expiry the option PnL is scaled by the share of the settlement window still to run.

SCAN = max(0, max_i(-w_i x sum PnL_i)).
IMR = max(SCAN, MinDelta) + provisions; MMR = 0.5 x max(SCAN, MinDelta) + provisions.

Not covered yet: the funding provision (max(0, sum funding_rate_8h x size x S)) is omitted,
and resting orders are not included (positions only). Portfolios of several underlyings
are the plain sum of :func:`portfolio_requirement` per underlying (no cross-asset credit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from ledger.margin import black76
from ledger.margin.cross import Requirement, ceil_units, option_fee_provision_exact
from ledger.margin.params import Scenario, UnderlyingParams
from ledger.margin.positions import OptionPosition, PerpPosition

DAYS_PER_YEAR = 365.0


@dataclass(frozen=True)
class Book:
    """All positions of one account on one underlying, with index price ``spot`` (S).

    ``spot_holding`` is the spot balance of the underlying, in size units.
    """

    params: UnderlyingParams
    spot: int
    perps: Sequence[PerpPosition] = field(default_factory=tuple)
    options: Sequence[OptionPosition] = field(default_factory=tuple)
    spot_holding: int = 0


@dataclass(frozen=True)
class ScanResult:
    """Worst weighted loss (exact base units, >= 0) and the index of its scenario
    (``None`` when no scenario loses)."""

    loss: Fraction
    scenario_index: int | None
    scenario: Scenario | None


@dataclass(frozen=True)
class PortfolioResult:
    """PM requirement and its parts (``scan``, ``min_delta``, ``fee_provision`` exact)."""

    requirement: Requirement
    scan: ScanResult
    min_delta: Fraction
    fee_provision: Fraction


def min_delta_charge(
    net_delta: Fraction, gross_delta: Fraction, spot: int, params: UnderlyingParams
) -> Fraction:
    """MinDelta = (2% x |net| + 1% x (gross - |net|) / 2) x S, exact base units.

    Deltas are in whole units of the underlying; ``spot`` in base units per whole unit.
    """
    pp = params.portfolio
    net = abs(net_delta)
    hedged = (gross_delta - net) / 2
    return (pp.min_delta_net * net + pp.min_delta_hedged * hedged) * spot


def book_deltas(book: Book) -> tuple[Fraction, Fraction]:
    """(net delta, gross delta) of a book in whole units of the underlying.

    Perps and spot count delta 1 per unit; options their Black-76 delta at (S, IV).
    """
    scale = book.params.size_scale
    deltas: list[Fraction] = [Fraction(p.size, scale) for p in book.perps]
    if book.spot_holding:
        deltas.append(Fraction(book.spot_holding, scale))
    t_years = (o.dte / DAYS_PER_YEAR for o in book.options)
    for o, t in zip(book.options, t_years, strict=True):
        d = black76.delta(o.kind, float(book.spot), float(o.strike), t, o.iv)
        deltas.append(Fraction(d) * Fraction(o.size, scale))
    return sum(deltas, Fraction(0)), sum((abs(d) for d in deltas), Fraction(0))


def _option_pnl(o: OptionPosition, book: Book, scenario: Scenario) -> Fraction:
    pp = book.params.portfolio
    s0 = float(book.spot)
    s1 = float(book.spot * (1 + scenario.spot_move))
    t = o.dte / DAYS_PER_YEAR
    iv1 = black76.shocked_vol(o.iv, float(scenario.vol_shock), o.dte, pp)
    p0 = black76.price(o.kind, s0, float(o.strike), t, o.iv)
    p1 = black76.price(o.kind, s1, float(o.strike), t, iv1)
    fade = min(1.0, max(0.0, o.dte / float(pp.settlement_window_days)))
    return Fraction((p1 - p0) * fade) * Fraction(o.size, book.params.size_scale)


def scenario_pnl(book: Book, scenario: Scenario) -> Fraction:
    """Unweighted PnL of the book in one scenario, base units (float only for options)."""
    scale = book.params.size_scale
    m = scenario.spot_move
    pnl = sum((Fraction(p.size * p.mark, scale) * m for p in book.perps), Fraction(0))
    pnl += Fraction(book.spot_holding * book.spot, scale) * m
    for o in book.options:
        pnl += _option_pnl(o, book, scenario)
    return pnl


def scan(book: Book) -> ScanResult:
    """SCAN = max(0, max_i(-w_i x PnL_i)), remembering the worst scenario (first on ties)."""
    worst = Fraction(0)
    index: int | None = None
    scenarios = book.params.portfolio.scenarios
    for i, sc in enumerate(scenarios):
        loss = -sc.weight * scenario_pnl(book, sc)
        if loss > worst:
            worst, index = loss, i
    return ScanResult(worst, index, scenarios[index] if index is not None else None)


def fee_provision(book: Book) -> Fraction:
    """Sum_perps taker x |size| x mark + Sum_options min(fee_rate x S, 12.5% x mark) x |q|."""
    scale = book.params.size_scale
    taker = book.params.perp.taker_fee
    perps = sum((taker * Fraction(abs(p.size) * p.mark, scale) for p in book.perps), Fraction(0))
    opts = sum(
        (option_fee_provision_exact(o, book.spot, book.params) for o in book.options), Fraction(0)
    )
    return perps + opts


def portfolio_requirement(book: Book) -> PortfolioResult:
    """IMR = max(SCAN, MinDelta) + fee provision; MMR = 0.5 x max(...) + fee provision.

    Rounded up to USDC base units. The funding provision is omitted for now.
    """
    sr = scan(book)
    net, gross = book_deltas(book)
    md = min_delta_charge(net, gross, book.spot, book.params)
    core = max(sr.loss, md)
    fees = fee_provision(book)
    mm_factor = book.params.portfolio.mm_factor
    req = Requirement(im=ceil_units(core + fees), mm=ceil_units(core * mm_factor + fees))
    return PortfolioResult(req, sr, md, fees)


def total_requirement(books: Sequence[Book]) -> Requirement:
    """Sum of PM requirements across underlyings (no cross-asset credit)."""
    total = Requirement(0, 0)
    for b in books:
        total = total + portfolio_requirement(b).requirement
    return total


__all__ = [
    "Book",
    "PortfolioResult",
    "ScanResult",
    "book_deltas",
    "fee_provision",
    "min_delta_charge",
    "portfolio_requirement",
    "scan",
    "scenario_pnl",
    "total_requirement",
]
