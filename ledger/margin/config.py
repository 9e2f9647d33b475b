"""Load the instrument and parameter configuration from TOML.

The file maps onto the dataclasses of :mod:`ledger.margin.params`; the shipped
``default_instruments.toml`` reproduces :data:`~ledger.margin.params.DEFAULT_PARAMS` exactly.
Layout (every key is required, unknown keys are refused)::

    option_expiry_utc = "08:00"
    spot_pairs = ["BTC/USDC", "ETH/USDC"]
    perps = ["BTC-USD-PERP", "ETH-USD-PERP"]

    [underlyings.BTC]
    size_scale = 100000000
    spot_haircut = "10%"
    [underlyings.BTC.perp]        # imf_base, taker_fee, maker_fee
    [underlyings.BTC.option]      # the fields of OptionMarginParams
    [underlyings.BTC.portfolio]   # the fields of PortfolioParams, with
                                  # settlement_window_minutes instead of settlement_window_days
                                  # and scenarios = [{spot_move, vol_shock, weight}, ...]

Rates and other fractions are exact decimals written as strings, either plain (``"0.00045"``)
or as a percentage (``"0.045%"``); they become :class:`fractions.Fraction` without passing
through a float. TOML floats are refused (``0.045`` is not exact in binary): quote them.
Every problem raises :class:`~ledger.errors.InvalidConfig` naming the key and the fix.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ledger.errors import InvalidConfig, InvalidInstrument, UnknownInstrument
from ledger.margin.instruments import DEFAULT_EXPIRY_TIME, Instrument, parse_instrument
from ledger.margin.params import (
    OptionMarginParams,
    PerpParams,
    PortfolioParams,
    Scenario,
    UnderlyingParams,
)

DEFAULT_CONFIG_RESOURCE = "default_instruments.toml"

_DECIMAL_RE = re.compile(r"-?\d+(\.\d+)?%?")
_TIME_RE = re.compile(r"(\d{2}):(\d{2})")
_NAME_RE = re.compile(r"[A-Z][A-Z0-9]*")

# How a fraction is constrained: a rate in [0, 1], any value >= 0, or any value > -1
# (a relative spot move cannot take the price below zero).
_Range = Literal["rate", "nonneg", "move", "any"]

_PERP_FIELDS: dict[str, _Range] = {
    name: "rate"
    for name in (
        "imf_base",
        "taker_fee",
        "maker_fee",
        "funding_interest",
        "funding_clamp",
        "funding_max",
    )
}
_OPTION_FIELDS: dict[str, _Range] = {
    name: "rate"
    for name in (
        "long_im_mark",
        "long_mm_mark",
        "long_im_spot",
        "long_mm_spot",
        "short_im_spot",
        "short_mm_spot",
        "short_im_floor",
        "short_mm_floor",
        "short_put_cap_im",
        "short_put_cap_mm",
        "fee_rate",
        "fee_cap",
    )
}
_PORTFOLIO_FRACTIONS: dict[str, _Range] = {
    "min_delta_net": "rate",
    "min_delta_hedged": "rate",
    "mm_factor": "rate",
    "vol_floor_up": "nonneg",
    "dte_short_power": "nonneg",
    "dte_long_power": "nonneg",
}
_PORTFOLIO_INTS = ("dte_threshold", "settlement_window_minutes")
_SCENARIO_FIELDS: dict[str, _Range] = {"spot_move": "move", "vol_shock": "move", "weight": "nonneg"}
_UNDERLYING_KEYS = (
    "size_scale",
    "size_step",
    "price_tick",
    "spot_haircut",
    "perp",
    "option",
    "portfolio",
)
_TOP_KEYS = ("option_expiry_utc", "spot_pairs", "perps", "underlyings")
_OPTIONAL_TOP_KEYS = ("mirror_collateral",)


@dataclass(frozen=True)
class MarginConfig:
    """The configured underlyings, listed markets and option expiry time."""

    underlyings: Mapping[str, UnderlyingParams]
    spot_pairs: tuple[str, ...]
    perps: tuple[str, ...]
    option_expiry_time: time = DEFAULT_EXPIRY_TIME
    instruments: Mapping[str, Instrument] = field(default_factory=dict, compare=False)
    # The share of an owner's mirrored StarkNet USDC (``mirror:OWNER``) that counts in its
    # main account's value. 0, the default: mirrored value is evidence only. Above 0 the
    # venue lends against L2 funds it cannot seize (never withdrawable: free collateral
    # stays capped by USDC held here).
    mirror_collateral: Fraction = Fraction(0)

    def instrument(self, name: str) -> Instrument:
        """Parse ``name`` against this configuration (listed spot pairs and perps only)."""
        return parse_instrument(
            name,
            self.underlyings,
            spot_pairs=self.spot_pairs,
            perps=self.perps,
            expiry_time=self.option_expiry_time,
        )


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> InvalidConfig:
        return InvalidConfig(f"{self.source}: {key}: {message}")

    def table(
        self, value: object, key: str, allowed: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {type(value).__name__}")
        unknown = sorted(set(value) - set(allowed) - set(optional))
        if unknown:
            raise self.fail(
                key,
                f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})",
            )
        missing = [k for k in allowed if k not in value]
        if missing:
            raise self.fail(key, f"missing key(s) {', '.join(missing)}")
        return value

    def fraction(self, value: object, key: str, kind: _Range) -> Fraction:
        if isinstance(value, float):
            raise self.fail(
                key,
                f"TOML float {value!r} is not exact; quote it as a decimal string, "
                f'e.g. "{value!r}" or a percentage like "4.5%"',
            )
        if isinstance(value, bool):
            raise self.fail(key, f'must be a decimal string like "0.045%", got {value!r}')
        if isinstance(value, int):
            result = Fraction(value)
        elif isinstance(value, str):
            text = value.strip()
            if not _DECIMAL_RE.fullmatch(text):
                raise self.fail(
                    key,
                    f'{value!r} is not a decimal; write e.g. "0.00045" or "0.045%"',
                )
            result = Fraction(text[:-1]) / 100 if text.endswith("%") else Fraction(text)
        else:
            raise self.fail(key, f'must be a decimal string like "0.045%", got {value!r}')
        if kind == "rate" and not 0 <= result <= 1:
            raise self.fail(key, f"rate {value!r} is outside [0, 1] (0% to 100%)")
        if kind == "nonneg" and result < 0:
            raise self.fail(key, f"{value!r} must not be negative")
        if kind == "move" and result <= -1:
            raise self.fail(key, f"{value!r} must be above -100%")
        return result

    def positive_int(self, value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, got {value!r}")
        if value <= 0:
            raise self.fail(key, f"must be > 0, got {value}")
        return value

    def names(self, value: object, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of instrument names (strings)")
        if len(set(value)) != len(value):
            raise self.fail(key, "lists an instrument twice")
        return tuple(value)

    def expiry_time(self, value: object, key: str) -> time:
        match = _TIME_RE.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise self.fail(key, f'must be a UTC time "HH:MM" like "08:00", got {value!r}')
        try:
            return time(int(match[1]), int(match[2]))
        except ValueError:
            raise self.fail(key, f"{value!r} is not a valid time of day") from None

    def fractions(self, value: object, key: str, spec: dict[str, _Range]) -> dict[str, Fraction]:
        table = self.table(value, key, tuple(spec))
        return {k: self.fraction(table[k], f"{key}.{k}", kind) for k, kind in spec.items()}

    def portfolio(self, value: object, key: str) -> PortfolioParams:
        allowed = (*_PORTFOLIO_FRACTIONS, *_PORTFOLIO_INTS, "scenarios")
        table = self.table(value, key, allowed)
        fracs = {
            k: self.fraction(table[k], f"{key}.{k}", kind)
            for k, kind in _PORTFOLIO_FRACTIONS.items()
        }
        threshold = self.positive_int(table["dte_threshold"], f"{key}.dte_threshold")
        minutes = self.positive_int(
            table["settlement_window_minutes"], f"{key}.settlement_window_minutes"
        )
        raw = table["scenarios"]
        if not isinstance(raw, list) or not raw:
            raise self.fail(f"{key}.scenarios", "must be a non-empty list of tables")
        scenarios = tuple(
            Scenario(**self.fractions(s, f"{key}.scenarios[{i}]", _SCENARIO_FIELDS))
            for i, s in enumerate(raw)
        )
        return PortfolioParams(
            scenarios=scenarios,
            dte_threshold=threshold,
            settlement_window_days=Fraction(minutes, 24 * 60),
            **fracs,
        )

    def underlying(self, name: str, value: object) -> UnderlyingParams:
        key = f"underlyings.{name}"
        if not _NAME_RE.fullmatch(name):
            raise self.fail(key, "underlying names are upper-case symbols like BTC")
        table = self.table(value, key, _UNDERLYING_KEYS)
        size_scale = self.positive_int(table["size_scale"], f"{key}.size_scale")
        if 10 ** (len(str(size_scale)) - 1) != size_scale:
            raise self.fail(f"{key}.size_scale", f"must be a power of ten, got {size_scale}")
        size_step = self.positive_int(table["size_step"], f"{key}.size_step")
        price_tick = self.positive_int(table["price_tick"], f"{key}.price_tick")
        if size_step * price_tick % size_scale:
            raise self.fail(
                key,
                f"size_step x price_tick ({size_step} x {price_tick}) must be a multiple of "
                f"size_scale ({size_scale}) so that every notional is a whole USDC base unit",
            )
        return UnderlyingParams(
            name=name,
            size_scale=size_scale,
            size_step=size_step,
            price_tick=price_tick,
            perp=PerpParams(**self.fractions(table["perp"], f"{key}.perp", _PERP_FIELDS)),
            option=OptionMarginParams(
                **self.fractions(table["option"], f"{key}.option", _OPTION_FIELDS)
            ),
            spot_haircut=self.fraction(table["spot_haircut"], f"{key}.spot_haircut", "rate"),
            portfolio=self.portfolio(table["portfolio"], f"{key}.portfolio"),
        )

    def markets(
        self,
        names: tuple[str, ...],
        key: str,
        kind: str,
        underlyings: Mapping[str, UnderlyingParams],
    ) -> dict[str, Instrument]:
        out: dict[str, Instrument] = {}
        for name in names:
            try:
                inst = parse_instrument(name, underlyings)
            except UnknownInstrument as exc:
                raise self.fail(
                    key, f"{exc}; add an [underlyings.<NAME>] table or remove {name!r}"
                ) from None
            except InvalidInstrument as exc:
                raise self.fail(key, str(exc)) from None
            if inst.kind != kind:
                raise self.fail(key, f"{name!r} is a {inst.kind}, not a {kind}")
            out[name] = inst
        return out


def load_config_text(text: str, source: str = "<config>") -> MarginConfig:
    """Parse and validate a TOML configuration given as text."""
    reader = _Reader(source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(f"{source}: not valid TOML: {exc}") from None
    top = reader.table(doc, "<top level>", _TOP_KEYS, _OPTIONAL_TOP_KEYS)
    raw_underlyings = top["underlyings"]
    if not isinstance(raw_underlyings, dict) or not raw_underlyings:
        raise reader.fail("underlyings", "must be a table with at least one [underlyings.<NAME>]")
    underlyings = {name: reader.underlying(name, v) for name, v in raw_underlyings.items()}
    spot_pairs = reader.names(top["spot_pairs"], "spot_pairs")
    perps = reader.names(top["perps"], "perps")
    instruments = {
        **reader.markets(spot_pairs, "spot_pairs", "spot", underlyings),
        **reader.markets(perps, "perps", "perp", underlyings),
    }
    return MarginConfig(
        underlyings=underlyings,
        spot_pairs=spot_pairs,
        perps=perps,
        option_expiry_time=reader.expiry_time(top["option_expiry_utc"], "option_expiry_utc"),
        instruments=instruments,
        mirror_collateral=reader.fraction(
            top.get("mirror_collateral", 0), "mirror_collateral", "rate"
        ),
    )


def load_config(path: str | Path) -> MarginConfig:
    """Load and validate a TOML configuration file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidConfig(f"{p}: cannot read configuration: {exc.strerror or exc}") from None
    return load_config_text(text, str(p))


def default_config_text() -> str:
    """The text of the shipped ``default_instruments.toml``."""
    resource = resources.files("ledger.margin").joinpath(DEFAULT_CONFIG_RESOURCE)
    return resource.read_text(encoding="utf-8")


def load_default_config() -> MarginConfig:
    """The shipped ``default_instruments.toml`` (equal to :data:`DEFAULT_PARAMS`)."""
    return load_config_text(default_config_text(), DEFAULT_CONFIG_RESOURCE)
