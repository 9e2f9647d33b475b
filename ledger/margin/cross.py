"""Cross-margin (XM) requirements, per position and per account, in integer USDC base units.

Units (see :mod:`ledger.margin.positions`): sizes in size units (``params.size_scale`` per
whole unit of the underlying), prices in USDC base units per whole unit, results in USDC
base units. Intermediate values are exact ``Fraction``; each requirement is rounded UP
(ceil) once, at the end; credits are rounded DOWN (:func:`floor_units`).

Resting orders (open size and open loss) are not covered yet: positions only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from ledger.margin.params import OptionMarginParams, UnderlyingParams
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


def perp_requirement(position: PerpPosition, params: UnderlyingParams) -> Requirement:
    """Perp IMR/MMR.

    IMR = |size| x mark x max(1/leverage, IMF_base) + taker x |size| x mark
    MMR = |size| x mark x IMF_base x 0.5 + taker x |size| x mark
    """
    if position.leverage <= 0:
        raise ValueError("leverage must be positive")
    n = notional(position.size, position.mark, params.size_scale)
    pp = params.perp
    imf_eff = max(Fraction(1) / Fraction(position.leverage), pp.imf_base)
    fee = pp.taker_fee * n
    return Requirement(
        im=ceil_units(n * imf_eff + fee),
        mm=ceil_units(n * pp.imf_base / 2 + fee),
    )


def option_fee_provision_exact(
    option: OptionPosition, spot: int, params: UnderlyingParams
) -> Fraction:
    """min(option_fee_rate x S, 12.5% x option_mark) x |q|, exact base units."""
    op = params.option
    per_unit = min(op.fee_rate * spot, op.fee_cap * option.mark)
    return per_unit * Fraction(abs(option.size), params.size_scale)


def option_fee_provision(option: OptionPosition, spot: int, params: UnderlyingParams) -> int:
    """The option fee provision, rounded up to base units."""
    return ceil_units(option_fee_provision_exact(option, spot, params))


def _long_per_unit(mark: int, spot: int, op: OptionMarginParams) -> tuple[Fraction, Fraction]:
    im = min(op.long_im_mark * mark, op.long_im_spot * spot)
    mm = min(op.long_mm_mark * mark, op.long_mm_spot * spot)
    return im, mm


def _short_per_unit(
    option: OptionPosition, spot: int, op: OptionMarginParams
) -> tuple[Fraction, Fraction]:
    k = option.strike
    otm = max(0, k - spot) if option.kind == "call" else max(0, spot - k)
    im = max(op.short_im_spot * spot - otm, op.short_im_floor * spot)
    mm = max(op.short_mm_spot * spot - otm, op.short_mm_floor * spot)
    if option.kind == "put":
        im = min(im, op.short_put_cap_im * k)
        mm = min(mm, op.short_put_cap_mm * k)
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
    op = params.option
    q = abs(option.size)
    if covered < 0 or covered > q:
        raise ValueError("covered must be between 0 and |size|")
    if covered and not (option.kind == "call" and option.size < 0):
        raise ValueError("only short calls can be covered")
    if option.size >= 0:
        im_u, mm_u = _long_per_unit(option.mark, spot, op)
    else:
        im_u, mm_u = _short_per_unit(option, spot, op)
    margined = Fraction(q - covered, params.size_scale)
    fee = option_fee_provision_exact(option, spot, params)
    return Requirement(im=ceil_units(im_u * margined + fee), mm=ceil_units(mm_u * margined + fee))


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
    total = ZERO
    for perp in perps:
        total = total + perp_requirement(perp, params)
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
        total = total + option_requirement(o, spot, params, covered_for.get(i, 0))
    return CrossResult(total, max(0, spot_holding) - available)
