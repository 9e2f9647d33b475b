"""Instrument definitions and parsing of instrument names (reference: margin-model.md).

Three kinds of instrument, all quoted in USDC:

- spot pairs ``<BASE>/USDC`` (``BTC/USDC``);
- perpetuals ``<BASE>-USD-PERP`` (``BTC-USD-PERP``);
- European cash-settled options ``<BASE>-USD-<YYYYMMDD>-<strike>-C|P``
  (``BTC-USD-20250627-70000-C``), the strike an integer number of USD, expiring at 08:00 UTC
  on that date by default.

Units follow :mod:`ledger.margin.positions`: ``size_scale`` size units make one whole unit of
the underlying; prices (and the strike) are USDC base units per whole unit, ``price_scale``
(:data:`~ledger.margin.params.USDC_SCALE`) of them per USDC.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Literal

from ledger.errors import InvalidInstrument, UnknownInstrument
from ledger.margin.params import DEFAULT_PARAMS, USDC_SCALE, UnderlyingParams
from ledger.margin.positions import OptionKind

InstrumentKind = Literal["spot", "perp", "option"]

QUOTE_ASSET = "USDC"
"""Every instrument is quoted and settled in USDC."""

DEFAULT_EXPIRY_TIME = time(8, 0)
"""Options expire at 08:00 UTC on their expiry date unless configured otherwise."""

_EXAMPLES = "e.g. BTC/USDC, BTC-USD-PERP or BTC-USD-20250627-70000-C"
_UNDERLYING_RE = re.compile(r"[A-Z][A-Z0-9]*")
_DATE_RE = re.compile(r"\d{8}")
_STRIKE_RE = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Instrument:
    """One tradable instrument.

    ``expiry``, ``strike`` (USDC base units per whole unit) and ``option_kind`` are set for
    options only and ``None`` otherwise.
    """

    name: str
    kind: InstrumentKind
    underlying: str
    size_scale: int
    price_scale: int = USDC_SCALE
    expiry: datetime | None = None
    strike: int | None = None
    option_kind: OptionKind | None = None

    @property
    def is_option(self) -> bool:
        return self.kind == "option"


def _underlying(
    name: str, base: str, underlyings: Mapping[str, UnderlyingParams]
) -> UnderlyingParams:
    if not _UNDERLYING_RE.fullmatch(base):
        raise InvalidInstrument(
            f"instrument {name!r}: underlying {base!r} is not an upper-case symbol ({_EXAMPLES})"
        )
    params = underlyings.get(base)
    if params is None:
        known = ", ".join(sorted(underlyings)) or "none"
        raise UnknownInstrument(
            f"instrument {name!r}: unknown underlying {base!r} (configured underlyings: {known})"
        )
    return params


def _check_listed(name: str, listed: Collection[str] | None, what: str) -> None:
    if listed is not None and name not in listed:
        known = ", ".join(sorted(listed)) or "none"
        raise UnknownInstrument(f"{what} {name!r} is not listed (listed: {known})")


def _expiry(name: str, text: str, at: time) -> datetime:
    if not _DATE_RE.fullmatch(text):
        raise InvalidInstrument(
            f"option {name!r}: expiry {text!r} must be a date written YYYYMMDD, e.g. 20250627"
        )
    try:
        day = date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise InvalidInstrument(
            f"option {name!r}: expiry {text!r} is not a real calendar date (YYYYMMDD)"
        ) from None
    return datetime.combine(day, at, tzinfo=UTC)


def _strike(name: str, text: str) -> int:
    if not _STRIKE_RE.fullmatch(text):
        raise InvalidInstrument(
            f"option {name!r}: strike {text!r} must be a whole number of USD, e.g. 70000"
        )
    value = int(text)
    if value <= 0:
        raise InvalidInstrument(f"option {name!r}: strike must be > 0 USD, got {value}")
    return value * USDC_SCALE


def parse_instrument(
    name: str,
    underlyings: Mapping[str, UnderlyingParams] = DEFAULT_PARAMS,
    *,
    spot_pairs: Collection[str] | None = None,
    perps: Collection[str] | None = None,
    expiry_time: time = DEFAULT_EXPIRY_TIME,
) -> Instrument:
    """Parse an instrument name into an :class:`Instrument`.

    ``underlyings`` are the configured underlyings; ``spot_pairs`` / ``perps``, when given, are
    the listed markets (a well-formed name that is not listed raises
    :class:`~ledger.errors.UnknownInstrument`). Options are accepted on every configured
    underlying. Malformed names raise :class:`~ledger.errors.InvalidInstrument`.
    """
    if not isinstance(name, str) or not name:
        raise InvalidInstrument(f"instrument name must be a non-empty string ({_EXAMPLES})")
    if name != name.strip() or any(c.isspace() for c in name):
        raise InvalidInstrument(f"instrument {name!r} must not contain spaces ({_EXAMPLES})")
    if name != name.upper():
        raise InvalidInstrument(
            f"instrument {name!r} must be upper case: {name.upper()!r} ({_EXAMPLES})"
        )

    if "/" in name:
        parts = name.split("/")
        if len(parts) != 2 or parts[1] != QUOTE_ASSET:
            raise InvalidInstrument(
                f"spot pair {name!r} must be written <BASE>/{QUOTE_ASSET}, e.g. BTC/USDC"
            )
        params = _underlying(name, parts[0], underlyings)
        _check_listed(name, spot_pairs, "spot pair")
        return Instrument(name, "spot", params.name, params.size_scale)

    # The strike may carry a minus sign: split the underlying and quote off the front and the
    # call/put flag off the end, so that "BTC-USD-20250627--5-C" reports the bad strike.
    head = name.split("-", 2)
    if len(head) < 3 or head[1] != "USD":
        raise InvalidInstrument(f"instrument {name!r} is not a known shape ({_EXAMPLES})")
    base, rest = head[0], head[2]
    if rest == "PERP":
        params = _underlying(name, base, underlyings)
        _check_listed(name, perps, "perpetual")
        return Instrument(name, "perp", params.name, params.size_scale)

    date_text, sep, tail = rest.partition("-")
    strike_text, sep2, flag = tail.rpartition("-")
    if not sep or not sep2 or not date_text or not strike_text:
        raise InvalidInstrument(
            f"instrument {name!r} is neither <BASE>-USD-PERP nor an option "
            f"<BASE>-USD-<YYYYMMDD>-<strike>-C|P ({_EXAMPLES})"
        )
    if flag not in ("C", "P"):
        raise InvalidInstrument(
            f"option {name!r}: last part must be C (call) or P (put), got {flag!r}"
        )
    params = _underlying(name, base, underlyings)
    expiry = _expiry(name, date_text, expiry_time)
    strike = _strike(name, strike_text)
    return Instrument(
        name,
        "option",
        params.name,
        params.size_scale,
        expiry=expiry,
        strike=strike,
        option_kind="call" if flag == "C" else "put",
    )
