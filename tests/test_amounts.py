from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.core.amounts import MAX_AMOUNT, USDC, Asset, format_amount, parse_amount
from ledger.errors import InvalidAmount


@pytest.mark.parametrize(
    ("text", "units"),
    [("100", 100_000_000), ("100.25", 100_250_000), ("0.000001", 1), ("007.5", 7_500_000)],
)
def test_parse_exact(text: str, units: int) -> None:
    assert parse_amount(text) == units


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1.0000001", "has 6 decimals, got 7"),
        ("-1", "positive decimal"),
        ("0", "must be positive"),
        ("0.000000", "must be positive"),
        ("1e3", "positive decimal"),
        ("", "positive decimal"),
        ("1,000", "positive decimal"),
        ("nan", "positive decimal"),
        ("inf", "positive decimal"),
        (".5", "positive decimal"),
        ("99999999999999.999999", "exceeds the limit"),
    ],
)
def test_parse_rejects(text: str, reason: str) -> None:
    with pytest.raises(InvalidAmount, match=reason):
        parse_amount(text)


def test_format() -> None:
    assert format_amount(60_250_000) == "60.25"
    assert format_amount(100_000_000) == "100.00"
    assert format_amount(1) == "0.000001"
    assert format_amount(-1_500_000) == "-1.50"
    assert format_amount(5, Asset("XYZ", 0)) == "5"


@given(st.integers(min_value=1, max_value=MAX_AMOUNT))
def test_format_parse_roundtrip(units: int) -> None:
    assert parse_amount(format_amount(units, USDC), USDC) == units
