"""Position records of the margin model and their units.

Units:

- ``size``: signed ``int`` in size units (positive long, negative short);
  ``UnderlyingParams.size_scale`` size units make one whole unit of the underlying
  (10**8 for BTC: ``size=150_000_000`` is 1.5 BTC). One option contract is on one whole unit.
- prices (``mark``, ``strike``, index ``S``): ``int`` USDC base units (10**-6 USDC) per one
  whole unit of the underlying (70,000 USDC/BTC is ``70_000_000_000``).
- money results: ``int`` USDC base units, requirements rounded up.
- ``iv``: annualised implied volatility as a float (0.5 = 50%); ``dte``: days to expiry as
  a float. They only feed the float Black-76 repricing of the portfolio SCAN.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal, NamedTuple

OptionKind = Literal["call", "put"]


class PerpPosition(NamedTuple):
    """A perpetual position: ``size`` in size units, ``mark`` in base units per whole unit,
    ``leverage`` chosen by the user (IMF_eff = max(1/leverage, IMF_base)), and the market's
    current 8-hour funding rate."""

    size: int
    mark: int
    leverage: Fraction | int = 1
    funding_rate: Fraction = Fraction(0)  # per 8 h; the portfolio funding provision uses it


class OptionPosition(NamedTuple):
    """A European cash-settled option position (see module docstring for units)."""

    kind: OptionKind
    strike: int
    size: int
    mark: int
    iv: float = 0.5
    dte: float = 30.0
