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

Provisions: the fee provision (the cost of closing) and the funding provision (the next
8 hours of funding the book pays at the current rate). Resting orders are not included: the
ledger sees an order only when it fills. Portfolios of several underlyings are the plain sum
of :func:`portfolio_requirement` per underlying (no cross-asset credit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

from ledger.margin import black76
from ledger.margin.cross import Requirement, ceil_units, option_fee_provision_exact
from ledger.margin.params import Scenario, UnderlyingParams
from ledger.margin.positions import OptionKind, OptionPosition, PerpPosition

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
    """PM requirement and its parts (``scan``, ``min_delta``, ``provisions`` exact)."""

    requirement: Requirement
    scan: ScanResult
    min_delta: Fraction
    provisions: Fraction  # fee and funding provisions


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
    option_deltas = [
        black76.delta(o.kind, float(book.spot), float(o.strike), o.dte / DAYS_PER_YEAR, o.iv)
        * o.size
        / scale
        for o in book.options
    ]
    net = sum(deltas, Fraction(0)) + Fraction(math.fsum(option_deltas))
    gross = sum((abs(d) for d in deltas), Fraction(0))
    return net, gross + Fraction(math.fsum(abs(d) for d in option_deltas))


_SQRT2 = math.sqrt(2.0)


@lru_cache(maxsize=1 << 14)
def _repricing(
    kind: OptionKind,
    spot: float,
    strike: float,
    t: float,
    iv: float,
    shocked: tuple[tuple[float, float], ...],
) -> tuple[float, ...]:
    """p1 - p0 per scenario for one option (``shocked``: moved spot and shocked vol per
    scenario), Black-76 at r = 0 inlined. Cached: the checks of one fill, and fills within
    one second on the same series, reprice the same options in the same scenarios."""
    p0 = black76.price(kind, spot, strike, t, iv)
    if t <= 0.0 or strike <= 0.0:
        return tuple(black76.price(kind, f, strike, t, v) - p0 for f, v in shocked)
    call = kind == "call"
    erf, log, rt = math.erf, math.log, math.sqrt(t)
    out = []
    for f, sigma in shocked:
        if sigma <= 0.0 or f <= 0.0:
            p1 = max(0.0, f - strike) if call else max(0.0, strike - f)
        else:
            sd = sigma * rt
            d1 = (log(f / strike) + 0.5 * sd * sd) / sd
            d2 = d1 - sd
            if call:
                p1 = f * (0.5 * (1.0 + erf(d1 / _SQRT2))) - strike * (
                    0.5 * (1.0 + erf(d2 / _SQRT2))
                )
            else:
                p1 = strike * (0.5 * (1.0 + erf(-d2 / _SQRT2))) - f * (
                    0.5 * (1.0 + erf(-d1 / _SQRT2))
                )
        out.append(p1 - p0)
    return tuple(out)


def _option_totals(book: Book) -> list[float]:
    """Per scenario, the options' PnL in base units (floats, summed exactly rounded)."""
    pp = book.params.portfolio
    scenarios = pp.scenarios
    s0 = float(book.spot)
    moved = [float(book.spot * (1 + sc.spot_move)) for sc in scenarios]
    shocks = [float(sc.vol_shock) for sc in scenarios]
    window = float(pp.settlement_window_days)
    short_power, long_power = float(pp.dte_short_power), float(pp.dte_long_power)
    floor = float(pp.vol_floor_up)
    terms: list[list[float]] = [[] for _ in scenarios]
    for o in book.options:
        weight = min(1.0, max(0.0, o.dte / window)) * o.size / book.params.size_scale
        power = short_power if o.dte < pp.dte_threshold else long_power
        vols = {v: black76.shocked_vol_at(o.iv, v, o.dte, power, floor) for v in set(shocks)}
        shocked = tuple(zip(moved, (vols[v] for v in shocks), strict=True))
        changes = _repricing(o.kind, s0, float(o.strike), o.dte / DAYS_PER_YEAR, o.iv, shocked)
        for column, change in zip(terms, changes, strict=True):
            column.append(change * weight)
    return [math.fsum(column) for column in terms]


def scenario_pnls(book: Book) -> list[Fraction]:
    """Unweighted PnL of the book in each scenario, base units: perps and spot exact, the
    options' Black-76 repricing as one float per scenario."""
    scale = book.params.size_scale
    linear = Fraction(sum(p.size * p.mark for p in book.perps), scale)
    linear += Fraction(book.spot_holding * book.spot, scale)
    options = _option_totals(book) if book.options else [0.0] * len(book.params.portfolio.scenarios)
    return [
        linear * sc.spot_move + Fraction(total)
        for sc, total in zip(book.params.portfolio.scenarios, options, strict=True)
    ]


_WEIGHTS: dict[int, tuple[tuple[Scenario, ...], int, list[int], list[int]]] = {}


def _weights(scenarios: tuple[Scenario, ...]) -> tuple[int, list[int], list[int]]:
    """G, and per scenario w x m x G and w x G as integers (cached per scenario table)."""
    hit = _WEIGHTS.get(id(scenarios))
    if hit is not None and hit[0] is scenarios:
        return hit[1], hit[2], hit[3]
    g = math.lcm(*(sc.weight.denominator * sc.spot_move.denominator for sc in scenarios))
    wm = [int(sc.weight * sc.spot_move * g) for sc in scenarios]
    w = [int(sc.weight * g) for sc in scenarios]
    _WEIGHTS[id(scenarios)] = (scenarios, g, wm, w)
    return g, wm, w


def scan(book: Book) -> ScanResult:
    """SCAN = max(0, max_i(-w_i x PnL_i)), remembering the worst scenario (first on ties).

    Exact, in integers: each loss is scaled by G x size_scale x 2**e (G the scenario
    weights' and moves' common denominator, 2**e the options' float totals' largest
    denominator), so one Fraction is built, for the worst scenario only.
    """
    scenarios = book.params.portfolio.scenarios
    scale = book.params.size_scale
    linear = sum(p.size * p.mark for p in book.perps) + book.spot_holding * book.spot
    totals = _option_totals(book) if book.options else [0.0] * len(scenarios)
    ratios = [total.as_integer_ratio() for total in totals]
    e = max(d.bit_length() - 1 for _, d in ratios)
    g, wm, w = _weights(scenarios)
    worst, index = 0, None
    for i, (n, d) in enumerate(ratios):
        loss = -(wm[i] * linear << e) - w[i] * n * scale * ((1 << e) // d)
        if loss > worst:
            worst, index = loss, i
    return ScanResult(
        Fraction(worst, g * scale << e), index, scenarios[index] if index is not None else None
    )


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
    """IMR = max(SCAN, MinDelta) + provisions; MMR = 0.5 x max(...) + provisions, the
    provisions being the fee provision and the funding provision. Rounded up to USDC base
    units. (Resting orders are not the ledger's: it sees orders only when they fill.)
    """
    sr = scan(book)
    net, gross = book_deltas(book)
    md = min_delta_charge(net, gross, book.spot, book.params)
    core = max(sr.loss, md)
    provisions = fee_provision(book) + funding_provision(book)
    mm_factor = book.params.portfolio.mm_factor
    req = Requirement(
        im=ceil_units(core + provisions), mm=ceil_units(core * mm_factor + provisions)
    )
    return PortfolioResult(req, sr, md, provisions)


def funding_provision(book: Book) -> Fraction:
    """max(0, sum_perps funding_rate_8h x size x S): the next 8 h of funding the book pays."""
    scale = book.params.size_scale
    owed = sum((p.funding_rate * p.size * book.spot / scale for p in book.perps), Fraction(0))
    return max(Fraction(0), owed)


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
    "funding_provision",
    "min_delta_charge",
    "portfolio_requirement",
    "scan",
    "scenario_pnls",
    "total_requirement",
]
