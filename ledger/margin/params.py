"""Default parameters of the margin model (reference: margin-model.md).

Every rate is an exact :class:`fractions.Fraction` so that nothing that becomes money passes
through a float. The values here are *defaults*; callers may build their own instances
(e.g. from a config file) instead of relying on :data:`DEFAULT_PARAMS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

USDC_SCALE = 10**6
"""USDC base units per 1 USDC (6 decimals)."""

DEFAULT_SIZE_SCALE = 10**8
"""Size units per whole unit of the underlying (1 BTC = 10**8 size units)."""


def pct(value: str) -> Fraction:
    """A percentage given as a decimal string, exactly: ``pct("0.045") == Fraction(45, 100000)``."""
    return Fraction(value) / 100


@dataclass(frozen=True)
class PerpParams:
    """Perpetual market parameters (fractions of notional)."""

    imf_base: Fraction = Fraction(1, 50)
    taker_fee: Fraction = Fraction(9, 20000)
    maker_fee: Fraction = Fraction(3, 100000)
    # Funding per 8 h: clip(premium + clip(interest - premium, -clamp, +clamp), -max, +max)
    funding_interest: Fraction = Fraction(1, 10000)
    funding_clamp: Fraction = Fraction(1, 2000)
    funding_max: Fraction = Fraction(1, 50)


@dataclass(frozen=True)
class OptionMarginParams:
    """Cross-margin option fractions, IM and MM (reference defaults for BTC/ETH).

    long:  min(long_*_mark x option_mark, long_*_spot x S) x |q|
    short: max(short_*_spot x S - OTM, short_*_floor x S) x |q|; puts capped at put_cap_* x K x |q|
    fee provision: min(fee_rate x S, fee_cap x option_mark) x |q|
    """

    long_im_mark: Fraction = Fraction(1)
    long_mm_mark: Fraction = Fraction(1, 2)
    long_im_spot: Fraction = Fraction(1, 5)
    long_mm_spot: Fraction = Fraction(1, 10)
    short_im_spot: Fraction = Fraction(3, 20)
    short_mm_spot: Fraction = Fraction(3, 40)
    short_im_floor: Fraction = Fraction(1, 10)
    short_mm_floor: Fraction = Fraction(1, 20)
    short_put_cap_im: Fraction = Fraction(1, 2)
    short_put_cap_mm: Fraction = Fraction(1, 4)
    fee_rate: Fraction = Fraction(3, 40000)
    fee_cap: Fraction = Fraction(1, 8)


@dataclass(frozen=True)
class Scenario:
    """One portfolio-margin scenario: relative spot move, vol shock ``vs`` and weight."""

    spot_move: Fraction
    vol_shock: Fraction
    weight: Fraction


def _standard_scenarios() -> tuple[Scenario, ...]:
    up, down = pct("40"), pct("-22")
    out = [Scenario(pct("16"), up, Fraction(1))]
    for move in (12, 8, 4, 0, -4, -8, -12):
        out.append(Scenario(pct(str(move)), up, Fraction(1)))
        out.append(Scenario(pct(str(move)), down, Fraction(1)))
    out.append(Scenario(pct("-16"), up, Fraction(1)))
    tails = (
        ("-66", "18"),
        ("-33", "36"),
        ("50", "24"),
        ("100", "12"),
        ("200", "6"),
        ("300", "4"),
        ("400", "3"),
        ("500", "2.4"),
    )
    out.extend(Scenario(pct(m), up, pct(w)) for m, w in tails)
    return tuple(out)


DEFAULT_SCENARIOS: tuple[Scenario, ...] = _standard_scenarios()
"""The 24 BTC/ETH scenarios: 16 standard (weight 100%) then 8 tail (vol shock +40%)."""


@dataclass(frozen=True)
class PortfolioParams:
    """Portfolio-margin parameters.

    ``vol_floor_up`` is the level at which up-shocked vols are floored (IV' >= 40%);
    ``dte_short_power`` applies when DTE < ``dte_threshold`` days, ``dte_long_power`` otherwise;
    ``settlement_window_days`` is the TWAP window (30 min) over which an option's scenario PnL
    fades to 0 at expiry.
    """

    scenarios: tuple[Scenario, ...] = DEFAULT_SCENARIOS
    min_delta_net: Fraction = Fraction(1, 50)
    min_delta_hedged: Fraction = Fraction(1, 100)
    mm_factor: Fraction = Fraction(1, 2)
    vol_floor_up: Fraction = Fraction(2, 5)
    dte_threshold: int = 30
    dte_short_power: Fraction = Fraction(30, 100)
    dte_long_power: Fraction = Fraction(13, 100)
    settlement_window_days: Fraction = Fraction(30, 24 * 60)


@dataclass(frozen=True)
class UnderlyingParams:
    """All parameters for one underlying (BTC, ETH, ...)."""

    name: str
    size_scale: int = DEFAULT_SIZE_SCALE
    # Order sizes are multiples of size_step and prices multiples of price_tick (USDC base
    # units); size_step x price_tick is a multiple of size_scale, so every notional is exact.
    size_step: int = 100_000
    price_tick: int = 10_000
    perp: PerpParams = field(default_factory=PerpParams)
    option: OptionMarginParams = field(default_factory=OptionMarginParams)
    spot_haircut: Fraction = Fraction(1, 10)
    portfolio: PortfolioParams = field(default_factory=PortfolioParams)


BTC = UnderlyingParams(name="BTC")
ETH = UnderlyingParams(name="ETH")
DEFAULT_PARAMS: dict[str, UnderlyingParams] = {"BTC": BTC, "ETH": ETH}
