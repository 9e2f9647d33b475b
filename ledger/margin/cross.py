"""Cross-margin (XM) requirements, per position and per account, in integer USDC base units.

Units (see :mod:`ledger.margin.positions`): sizes in size units (``params.size_scale`` per
whole unit of the underlying), prices in USDC base units per whole unit, results in USDC
base units. Intermediate values are exact (integers over the parameters' common
denominator); each requirement is rounded UP (ceil) once, at the end; credits are rounded
DOWN (:func:`floor_units`).

Resting orders (open size and open loss) are not covered yet: positions only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from ledger.margin.params import OptionMarginParams, PerpParams, UnderlyingParams
from ledger.margin.positions import OptionPosition, PerpPosition


@dataclass(frozen=True)
class Requirement:
    """Initial and maintenance requirement, in USDC base units (``mm <= im``)."""

    im: int
    mm: int

    def __add__(self, other: Requirement) -> Requirement:
        return Requirement(self.im + other.im, self.mm + other.mm)


ZERO = Requirement(0, 0)


def ceil_units(amount: Fraction) -> int:
    """Round a requirement UP to whole base units."""
    return math.ceil(amount)


def floor_units(amount: Fraction) -> int:
    """Round a credit DOWN to whole base units."""
    return math.floor(amount)


def notional(size: int, price: int, size_scale: int) -> Fraction:
    """|size| x price in exact base units (size in size units, price per whole unit)."""
    return Fraction(abs(size) * price, size_scale)


# Parameter objects are long-lived and immutable: cache their integer forms by identity
# (hashing a dataclass of Fractions would cost more than the arithmetic it saves).
_PERP_RATES: dict[tuple[int, Fraction | int], tuple[PerpParams, tuple[int, int, int]]] = {}
_OPTION_RATES: dict[int, tuple[OptionMarginParams, _OptionRates]] = {}


def _perp_rates(leverage: Fraction | int, pp: PerpParams) -> tuple[int, int, int]:
    """(IM rate, MM rate, denominator) as integers: the rates include the fee provision."""
    cached = _PERP_RATES.get((id(pp), leverage))
    if cached is not None and cached[0] is pp:
        return cached[1]
    rates = _compute_perp_rates(leverage, pp)
    _PERP_RATES[(id(pp), leverage)] = (pp, rates)
    return rates


def _compute_perp_rates(leverage: Fraction | int, pp: PerpParams) -> tuple[int, int, int]:
    imf_eff = max(Fraction(1) / Fraction(leverage), pp.imf_base)
    im = imf_eff + pp.taker_fee
    mm = pp.imf_base / 2 + pp.taker_fee
    den = math.lcm(im.denominator, mm.denominator)
    return im.numerator * (den // im.denominator), mm.numerator * (den // mm.denominator), den


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def perp_requirement(position: PerpPosition, params: UnderlyingParams) -> Requirement:
    """Perp IMR/MMR.

    IMR = |size| x mark x max(1/leverage, IMF_base) + taker x |size| x mark
    MMR = |size| x mark x IMF_base x 0.5 + taker x |size| x mark

    Integer arithmetic over the rates' common denominator: exact, and fast enough to run
    on every transition.
    """
    if position.leverage <= 0:
        raise ValueError("leverage must be positive")
    im, mm, den = _perp_rates(position.leverage, params.perp)
    n = abs(position.size) * position.mark
    scale = params.size_scale * den
    return Requirement(im=_ceil_div(n * im, scale), mm=_ceil_div(n * mm, scale))


class _OptionRates(NamedTuple):
    """The option parameters as integers over one denominator ``den``."""

    den: int
    long_im_mark: int
    long_mm_mark: int
    long_im_spot: int
    long_mm_spot: int
    short_im_spot: int
    short_mm_spot: int
    short_im_floor: int
    short_mm_floor: int
    short_put_cap_im: int
    short_put_cap_mm: int
    fee_rate: int
    fee_cap: int


def _option_rates(op: OptionMarginParams) -> _OptionRates:
    cached = _OPTION_RATES.get(id(op))
    if cached is not None and cached[0] is op:
        return cached[1]
    rates = _compute_option_rates(op)
    _OPTION_RATES[id(op)] = (op, rates)
    return rates


def _compute_option_rates(op: OptionMarginParams) -> _OptionRates:
    names = _OptionRates._fields[1:]
    values = [getattr(op, name) for name in names]
    den = math.lcm(*(v.denominator for v in values))
    return _OptionRates(den, *(v.numerator * (den // v.denominator) for v in values))


def _fee_per_unit(mark: int, spot: int, r: _OptionRates) -> int:
    """min(fee_rate x S, fee_cap x mark), times ``r.den``."""
    return min(r.fee_rate * spot, r.fee_cap * mark)


def option_fee_provision_exact(
    option: OptionPosition, spot: int, params: UnderlyingParams
) -> Fraction:
    """min(option_fee_rate x S, 12.5% x option_mark) x |q|, exact base units."""
    r = _option_rates(params.option)
    per_unit = _fee_per_unit(option.mark, spot, r)
    return Fraction(per_unit * abs(option.size), params.size_scale * r.den)


def option_fee_provision(option: OptionPosition, spot: int, params: UnderlyingParams) -> int:
    """The option fee provision, rounded up to base units."""
    r = _option_rates(params.option)
    per_unit = _fee_per_unit(option.mark, spot, r)
    return _ceil_div(per_unit * abs(option.size), params.size_scale * r.den)


def _per_unit(option: OptionPosition, spot: int, r: _OptionRates) -> tuple[int, int]:
    """IM and MM per whole unit, times ``r.den`` (long or short, see option_requirement)."""
    if option.size >= 0:
        mark = option.mark
        return (
            min(r.long_im_mark * mark, r.long_im_spot * spot),
            min(r.long_mm_mark * mark, r.long_mm_spot * spot),
        )
    k = option.strike
    otm = (max(0, k - spot) if option.kind == "call" else max(0, spot - k)) * r.den
    im = max(r.short_im_spot * spot - otm, r.short_im_floor * spot)
    mm = max(r.short_mm_spot * spot - otm, r.short_mm_floor * spot)
    if option.kind == "put":
        im = min(im, r.short_put_cap_im * k)
        mm = min(mm, r.short_put_cap_mm * k)
    return im, mm


def option_requirement(
    option: OptionPosition, spot: int, params: UnderlyingParams, covered: int = 0
) -> Requirement:
    """Option IM/MM at index price ``spot`` including the fee provision.

    long:  min(1.00|0.50 x mark, 0.20|0.10 x S) x |q|
    short: max(0.15|0.075 x S - OTM, 0.10|0.05 x S) x |q|, short puts capped at 0.50|0.25 x K x |q|
    both:  + min(option_fee_rate x S, 12.5% x mark) x |q|

    ``covered`` (size units, only for short calls) is the part backed by spot of the same
    underlying: it needs no short-option margin (the fee provision still applies to all |q|).
    """
    q = abs(option.size)
    if covered < 0 or covered > q:
        raise ValueError("covered must be between 0 and |size|")
    if covered and not (option.kind == "call" and option.size < 0):
        raise ValueError("only short calls can be covered")
    r = _option_rates(params.option)
    im_u, mm_u = _per_unit(option, spot, r)
    fee = _fee_per_unit(option.mark, spot, r) * q
    margined = q - covered
    scale = params.size_scale * r.den
    return Requirement(
        im=_ceil_div(im_u * margined + fee, scale), mm=_ceil_div(mm_u * margined + fee, scale)
    )


@dataclass(frozen=True)
class CrossResult:
    """Account-level XM requirement for one underlying, and the spot used to cover calls."""

    requirement: Requirement
    spot_used_for_cover: int


def cross_requirement(
    perps: Iterable[PerpPosition],
    options: Iterable[OptionPosition],
    spot: int,
    params: UnderlyingParams,
    spot_holding: int = 0,
) -> CrossResult:
    """Sum of per-position XM requirements for one underlying.

    ``spot_holding`` (size units) covers short calls, lowest strike first (those carry the
    highest short margin per unit). The spot used this way must not be counted again as
    free collateral: it is returned as ``spot_used_for_cover``. Covering short calls with
    spot is our choice, not Paradex's (which charges spot at 100%).
    """
    im = mm = 0
    for perp in perps:
        req = perp_requirement(perp, params)
        im, mm = im + req.im, mm + req.mm
    available = max(0, spot_holding)
    opts = list(options)
    short_calls = sorted(
        (i for i, o in enumerate(opts) if o.kind == "call" and o.size < 0),
        key=lambda i: opts[i].strike,
    )
    covered_for: dict[int, int] = {}
    for i in short_calls:
        c = min(available, -opts[i].size)
        covered_for[i] = c
        available -= c
    for i, o in enumerate(opts):
        req = option_requirement(o, spot, params, covered_for.get(i, 0))
        im, mm = im + req.im, mm + req.mm
    return CrossResult(Requirement(im, mm), max(0, spot_holding) - available)
