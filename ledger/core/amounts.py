"""Assets and exact integer amounts.

Money is a Python ``int`` in base units (USDC has 6 decimals: 1 USDC = 1_000_000).
Decimal strings are parsed exactly; more decimals than the asset has is an error,
never a rounding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.errors import InvalidAmount

# Balances and amounts are stored as signed 64-bit integers (BIGINT) in both stores.
MAX_AMOUNT = 2**63 - 1

_DECIMAL = re.compile(r"^(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]+))?$")
_CODE = re.compile(r"^[A-Z0-9][A-Z0-9/_.-]{0,31}$")


@dataclass(frozen=True, slots=True)
class Asset:
    """An asset with a fixed number of decimals (its scale). ``signed`` assets (perp and
    option positions) may be negative on user accounts: a short is a negative balance."""

    code: str
    scale: int
    signed: bool = False

    def __post_init__(self) -> None:
        assert _CODE.match(self.code), f"asset code {self.code!r} is not canonical"
        assert 0 <= self.scale <= 18, f"asset scale {self.scale} is outside 0..18"


USDC = Asset("USDC", 6)
# USDC held on StarkNet, as the balance mirror observed it: evidence, not collateral.
MIRROR_ASSET = Asset("L2USDC", 6)


def parse_amount(text: str, asset: Asset = USDC) -> int:
    """Parse a positive decimal string such as ``"100.25"`` into base units."""
    match = _DECIMAL.match(text.strip())
    if match is None:
        raise InvalidAmount(
            f"invalid amount {text!r}: write a positive decimal such as 100 or 100.25"
        )
    frac = match.group("frac") or ""
    if len(frac) > asset.scale:
        raise InvalidAmount(
            f"invalid amount {text!r}: {asset.code} has {asset.scale} decimals, got {len(frac)}"
        )
    units = int(match.group("int")) * 10**asset.scale + int(frac.ljust(asset.scale, "0") or 0)
    return check_amount(units, asset)


def check_amount(units: int, asset: Asset = USDC) -> int:
    """Return ``units`` if it is a valid positive amount, else raise InvalidAmount."""
    if type(units) is not int:
        raise InvalidAmount(f"amount must be an integer number of base units, got {units!r}")
    if units <= 0:
        raise InvalidAmount(
            f"amount must be positive, got {format_amount(units, asset)} {asset.code}"
        )
    if units > MAX_AMOUNT:
        raise InvalidAmount(
            f"amount {format_amount(units, asset)} {asset.code} exceeds the limit of "
            f"{format_amount(MAX_AMOUNT, asset)}"
        )
    return units


def format_amount(units: int, asset: Asset = USDC) -> str:
    """Format base units as a decimal string: at least two decimals, no trailing zeros beyond."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**asset.scale)
    if asset.scale == 0:
        return f"{sign}{whole}"
    digits = str(frac).rjust(asset.scale, "0").rstrip("0")
    digits = digits.ljust(min(2, asset.scale), "0")
    return f"{sign}{whole}.{digits}"
