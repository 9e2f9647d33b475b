"""Instrument names (ledger.margin.instruments) and TOML configuration (ledger.margin.config)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from fractions import Fraction
from importlib import resources
from pathlib import Path

import pytest

from ledger.errors import InvalidConfig, InvalidInstrument, LedgerError, UnknownInstrument
from ledger.margin.config import load_config, load_config_text, load_default_config
from ledger.margin.instruments import Instrument, parse_instrument
from ledger.margin.params import DEFAULT_PARAMS, USDC_SCALE

# --------------------------------------------------------------------------- instrument names


@pytest.mark.parametrize(("name", "underlying"), [("BTC/USDC", "BTC"), ("ETH/USDC", "ETH")])
def test_spot_pairs(name: str, underlying: str) -> None:
    inst = parse_instrument(name)
    assert inst == Instrument(name, "spot", underlying, 10**8, USDC_SCALE)
    assert inst.expiry is None and inst.strike is None and inst.option_kind is None


@pytest.mark.parametrize(("name", "underlying"), [("BTC-USD-PERP", "BTC"), ("ETH-USD-PERP", "ETH")])
def test_perps(name: str, underlying: str) -> None:
    inst = parse_instrument(name)
    assert inst.kind == "perp"
    assert inst.underlying == underlying
    assert inst.size_scale == 10**8
    assert inst.price_scale == USDC_SCALE
    assert not inst.is_option


def test_call_option() -> None:
    inst = parse_instrument("BTC-USD-20250627-70000-C")
    assert inst.kind == "option" and inst.is_option
    assert inst.underlying == "BTC"
    assert inst.option_kind == "call"
    assert inst.strike == 70_000 * USDC_SCALE
    assert inst.expiry == datetime(2025, 6, 27, 8, 0, tzinfo=UTC)
    assert inst.size_scale == 10**8


def test_put_option_and_leap_day() -> None:
    inst = parse_instrument("ETH-USD-20240229-3500-P")
    assert inst.option_kind == "put"
    assert inst.underlying == "ETH"
    assert inst.strike == 3_500_000_000
    assert inst.expiry == datetime(2024, 2, 29, 8, 0, tzinfo=UTC)


def test_option_custom_expiry_time() -> None:
    inst = parse_instrument("BTC-USD-20250627-1-P", expiry_time=time(16, 30))
    assert inst.expiry == datetime(2025, 6, 27, 16, 30, tzinfo=UTC)
    assert inst.strike == USDC_SCALE


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "non-empty"),
        ("btc-usd-perp", "must be upper case: 'BTC-USD-PERP'"),
        ("BTC-USD-PERP ", "must not contain spaces"),
        ("BTC/USDT", "must be written <BASE>/USDC"),
        ("BTC/USDC/X", "must be written <BASE>/USDC"),
        ("/USDC", "is not an upper-case symbol"),
        ("BTC", "is not a known shape"),
        ("BTC-EUR-PERP", "is not a known shape"),
        ("BTC-USD-FUT", "neither <BASE>-USD-PERP nor an option"),
        ("BTC-USD-20250627-70000", "neither <BASE>-USD-PERP nor an option"),
        ("BTC-USD-20250627-70000-X", "must be C (call) or P (put)"),
        ("BTC-USD-2025627-70000-C", "must be a date written YYYYMMDD"),
        ("BTC-USD-20250230-70000-C", "'20250230' is not a real calendar date"),
        ("BTC-USD-20251301-70000-C", "is not a real calendar date"),
        ("BTC-USD-20230229-70000-C", "is not a real calendar date"),
        ("BTC-USD-20250627-0-C", "strike must be > 0 USD, got 0"),
        ("BTC-USD-20250627--5-P", "strike must be > 0 USD, got -5"),
        ("BTC-USD-20250627-70000.5-C", "must be a whole number of USD"),
        ("BTC-USD-20250627-7E4-C", "must be a whole number of USD"),
    ],
)
def test_invalid_names(name: str, message: str) -> None:
    with pytest.raises(InvalidInstrument) as info:
        parse_instrument(name)
    assert message in str(info.value)
    assert isinstance(info.value, LedgerError)


@pytest.mark.parametrize("name", ["SOL/USDC", "SOL-USD-PERP", "SOL-USD-20250627-150-C"])
def test_unknown_underlying(name: str) -> None:
    with pytest.raises(UnknownInstrument) as info:
        parse_instrument(name)
    assert "unknown underlying 'SOL' (configured underlyings: BTC, ETH)" in str(info.value)
    assert isinstance(info.value, LedgerError)


def test_unlisted_market() -> None:
    with pytest.raises(UnknownInstrument, match="perpetual 'ETH-USD-PERP' is not listed"):
        parse_instrument("ETH-USD-PERP", perps=["BTC-USD-PERP"])
    with pytest.raises(UnknownInstrument, match="spot pair 'ETH/USDC' is not listed"):
        parse_instrument("ETH/USDC", spot_pairs=[])


# --------------------------------------------------------------------------- configuration


def test_shipped_defaults_equal_params() -> None:
    config = load_default_config()
    assert dict(config.underlyings) == DEFAULT_PARAMS
    assert config.spot_pairs == ("BTC/USDC", "ETH/USDC")
    assert config.perps == ("BTC-USD-PERP", "ETH-USD-PERP")
    assert config.option_expiry_time == time(8, 0)
    assert set(config.instruments) == {"BTC/USDC", "ETH/USDC", "BTC-USD-PERP", "ETH-USD-PERP"}
    assert config.instrument("ETH-USD-PERP").kind == "perp"
    assert config.instrument("BTC-USD-20250627-70000-C").strike == 70_000 * USDC_SCALE


def test_load_config_from_path(tmp_path: Path) -> None:
    text = resources.files("ledger.margin").joinpath("default_instruments.toml").read_text()
    path = tmp_path / "instruments.toml"
    path.write_text(text)
    assert load_config(path).underlyings == DEFAULT_PARAMS
    with pytest.raises(InvalidConfig, match="cannot read configuration"):
        load_config(tmp_path / "missing.toml")


_UNDERLYING = """
[underlyings.BTC]
size_scale = 100000000
size_step = 100000
price_tick = 10000
spot_haircut = "10%"
[underlyings.BTC.perp]
imf_base = "2%"
taker_fee = "0.045%"
maker_fee = "0.00003"
funding_interest = "0.01%"
funding_clamp = "0.05%"
funding_max = "2%"
[underlyings.BTC.option]
long_im_mark = "1"
long_mm_mark = "0.5"
long_im_spot = "20%"
long_mm_spot = "10%"
short_im_spot = "15%"
short_mm_spot = "7.5%"
short_im_floor = "10%"
short_mm_floor = "5%"
short_put_cap_im = "50%"
short_put_cap_mm = "25%"
fee_rate = "0.0075%"
fee_cap = "12.5%"
[underlyings.BTC.portfolio]
min_delta_net = "2%"
min_delta_hedged = "1%"
mm_factor = "50%"
vol_floor_up = "40%"
dte_threshold = 30
dte_short_power = "0.30"
dte_long_power = "0.13"
settlement_window_minutes = 30
scenarios = [{ spot_move = "-10%", vol_shock = "40%", weight = "100%" }]
"""
_TOP = """
option_expiry_utc = "08:00"
spot_pairs = ["BTC/USDC"]
perps = ["BTC-USD-PERP"]
"""
_MINIMAL = _TOP + _UNDERLYING


def test_minimal_config_parses_exact_fractions() -> None:
    config = load_config_text(_MINIMAL)
    btc = config.underlyings["BTC"]
    assert btc.perp == DEFAULT_PARAMS["BTC"].perp
    assert btc.perp.taker_fee == Fraction(45, 100_000)
    assert btc.option == DEFAULT_PARAMS["BTC"].option
    assert btc.portfolio.scenarios[0].spot_move == Fraction(-1, 10)
    assert btc.portfolio.settlement_window_days == Fraction(30, 1440)


def _edit(old: str, new: str, base: str = _MINIMAL) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x = [", "not valid TOML"),
        ("extra = 1\n" + _MINIMAL, "<top level>: unknown key(s) extra"),
        (
            _edit('imf_base = "2%"', 'imf_base = "2%"\nimf_extra = "1%"'),
            "underlyings.BTC.perp: unknown key(s) imf_extra (allowed: imf_base, taker_fee",
        ),
        (_edit('maker_fee = "0.00003"\n', ""), "underlyings.BTC.perp: missing key(s) maker_fee"),
        (_edit('perps = ["BTC-USD-PERP"]\n', ""), "<top level>: missing key(s) perps"),
        (_edit('spot_haircut = "10%"', 'spot_haircut = "110%"'), "outside [0, 1]"),
        (_edit('fee_cap = "12.5%"', 'fee_cap = "-1%"'), "fee_cap: rate '-1%' is outside [0, 1]"),
        (_edit("size_scale = 100000000", "size_scale = -1"), "size_scale: must be > 0, got -1"),
        (_edit("dte_threshold = 30", "dte_threshold = 0"), "dte_threshold: must be > 0"),
        (_edit('vol_floor_up = "40%"', 'vol_floor_up = "-0.1"'), "must not be negative"),
        (
            _edit('weight = "100%"', 'weight = "-1%"'),
            "scenarios[0].weight: '-1%' must not be negative",
        ),
        (_edit('spot_move = "-10%"', 'spot_move = "-100%"'), "must be above -100%"),
        (
            _edit('taker_fee = "0.045%"', "taker_fee = 0.00045"),
            "taker_fee: TOML float 0.00045 is not exact; quote it as a decimal string, "
            'e.g. "0.00045"',
        ),
        (_edit('long_im_spot = "20%"', 'long_im_spot = "1/5"'), "is not a decimal"),
        (_edit('long_im_spot = "20%"', "long_im_spot = true"), "must be a decimal string"),
        (_edit("size_scale = 100000000", 'size_scale = "1e8"'), "must be a whole number"),
        (
            _edit('spot_pairs = ["BTC/USDC"]', 'spot_pairs = ["BTC/USDC", "ETH/USDC"]'),
            "spot_pairs: instrument 'ETH/USDC': unknown underlying 'ETH' (configured "
            "underlyings: BTC); add an [underlyings.<NAME>] table or remove 'ETH/USDC'",
        ),
        (
            _edit('perps = ["BTC-USD-PERP"]', 'perps = ["SOL-USD-PERP"]'),
            "perps: instrument 'SOL-USD-PERP': unknown underlying 'SOL'",
        ),
        (_edit('perps = ["BTC-USD-PERP"]', 'perps = ["BTC/USDC"]'), "is a spot, not a perp"),
        (
            _edit('perps = ["BTC-USD-PERP"]', 'perps = ["BTC-USD-PERP", "BTC-USD-PERP"]'),
            "lists an instrument twice",
        ),
        (_edit('perps = ["BTC-USD-PERP"]', 'perps = ["BTC-PERP"]'), "is not a known shape"),
        (
            _edit('option_expiry_utc = "08:00"', 'option_expiry_utc = "25:00"'),
            "not a valid time of day",
        ),
        (_edit('option_expiry_utc = "08:00"', "option_expiry_utc = 8"), 'like "08:00"'),
        (_edit("[underlyings.BTC]", "[underlyings.btc]"), "upper-case symbols"),
        (_edit("scenarios = [{", "scenarios = []\nx = [{"), "unknown key(s) x"),
    ],
)
def test_config_validation(text: str, message: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        load_config_text(text, "test.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("test.toml: ")
    assert isinstance(info.value, LedgerError)


def test_empty_scenarios_rejected() -> None:
    text = _edit(
        'scenarios = [{ spot_move = "-10%", vol_shock = "40%", weight = "100%" }]',
        "scenarios = []",
    )
    with pytest.raises(InvalidConfig, match="scenarios: must be a non-empty list"):
        load_config_text(text)
