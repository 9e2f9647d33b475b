"""Black-76 option prices and deltas at r = 0, and the DTE vol-shock rule.

Floats are fine here: these numbers feed the portfolio SCAN, which converts to integer
base units (rounding up) only at the very end. ``forward`` and ``strike`` share one unit
(any); ``t`` is in years, ``sigma`` annualised. At r = 0 the discount factor is 1, so the
forward is the spot/index price.
"""

from __future__ import annotations

import math

from ledger.margin.params import PortfolioParams
from ledger.margin.positions import OptionKind


def norm_cdf(x: float) -> float:
    """Standard normal CDF via :func:`math.erf`."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _d1_d2(forward: float, strike: float, t: float, sigma: float) -> tuple[float, float]:
    sd = sigma * math.sqrt(t)
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    return d1, d1 - sd


def _degenerate(forward: float, strike: float, t: float, sigma: float) -> bool:
    return t <= 0.0 or sigma <= 0.0 or forward <= 0.0 or strike <= 0.0


def call_price(forward: float, strike: float, t: float, sigma: float) -> float:
    """Black-76 call price, r = 0 (intrinsic value when t or sigma is not positive)."""
    if _degenerate(forward, strike, t, sigma):
        return max(0.0, forward - strike)
    d1, d2 = _d1_d2(forward, strike, t, sigma)
    return forward * norm_cdf(d1) - strike * norm_cdf(d2)


def put_price(forward: float, strike: float, t: float, sigma: float) -> float:
    """Black-76 put price, r = 0 (intrinsic value when t or sigma is not positive)."""
    if _degenerate(forward, strike, t, sigma):
        return max(0.0, strike - forward)
    d1, d2 = _d1_d2(forward, strike, t, sigma)
    return strike * norm_cdf(-d2) - forward * norm_cdf(-d1)


def call_delta(forward: float, strike: float, t: float, sigma: float) -> float:
    """dC/dF = N(d1) (at expiry: 1 if in the money, else 0)."""
    if _degenerate(forward, strike, t, sigma):
        return 1.0 if forward > strike else 0.0
    return norm_cdf(_d1_d2(forward, strike, t, sigma)[0])


def put_delta(forward: float, strike: float, t: float, sigma: float) -> float:
    """dP/dF = N(d1) - 1 (at expiry: -1 if in the money, else 0)."""
    if _degenerate(forward, strike, t, sigma):
        return -1.0 if forward < strike else 0.0
    return norm_cdf(_d1_d2(forward, strike, t, sigma)[0]) - 1.0


def price(kind: OptionKind, forward: float, strike: float, t: float, sigma: float) -> float:
    """Call or put price."""
    if kind == "call":
        return call_price(forward, strike, t, sigma)
    return put_price(forward, strike, t, sigma)


def delta(kind: OptionKind, forward: float, strike: float, t: float, sigma: float) -> float:
    """Call or put delta."""
    if kind == "call":
        return call_delta(forward, strike, t, sigma)
    return put_delta(forward, strike, t, sigma)


def shocked_vol(
    iv: float, vol_shock: float, dte: float, params: PortfolioParams | None = None
) -> float:
    """IV' = IV x (1 + shock), shock = vs x (30 / max(1, DTE))^p.

    p = 0.30 if DTE < 30 days else 0.13. In up-shock scenarios (vs > 0) the result is
    floored at the level 40%: IV' = max(IV x (1 + shock), 0.40). Down-shocks are floored at 0.
    """
    p = params if params is not None else PortfolioParams()
    power = p.dte_short_power if dte < p.dte_threshold else p.dte_long_power
    return shocked_vol_at(iv, vol_shock, dte, float(power), float(p.vol_floor_up))


def shocked_vol_at(iv: float, vol_shock: float, dte: float, power: float, floor: float) -> float:
    """:func:`shocked_vol` with the power for this DTE and the up-shock floor as floats
    (the hot loop of the portfolio SCAN converts them once per book)."""
    shock = vol_shock * math.pow(30.0 / max(1.0, dte), power)
    shocked = iv * (1.0 + shock)
    if vol_shock > 0:
        return max(shocked, floor)
    return max(shocked, 0.0)
