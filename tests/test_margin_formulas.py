"""Hand-computed worked examples for the pure margin core (ledger.margin).

Units: USDC base units (1 USDC = 10**6); prices per whole BTC; sizes in 1e-8 BTC.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.margin import black76
from ledger.margin.cross import (
    Requirement,
    cross_requirement,
    option_fee_provision,
    option_requirement,
    perp_requirement,
)
from ledger.margin.params import BTC, DEFAULT_SCENARIOS, PortfolioParams
from ledger.margin.portfolio import (
    Book,
    funding_provision,
    min_delta_charge,
    portfolio_requirement,
    scan,
)
from ledger.margin.positions import OptionPosition, PerpPosition

USDC = 10**6
BTC_UNIT = 10**8  # size units per BTC
S = 70_000 * USDC  # index 70,000 USDC/BTC


def usdc(amount: str) -> int:
    """Exact USDC string -> base units (test helper)."""
    value = Fraction(amount) * USDC
    assert value.denominator == 1
    return int(value)


# ---------------------------------------------------------------- params


def test_scenario_table() -> None:
    assert len(DEFAULT_SCENARIOS) == 24
    assert sum(1 for s in DEFAULT_SCENARIOS if s.weight == 1) == 16
    tails = [(s.spot_move, s.weight) for s in DEFAULT_SCENARIOS[16:]]
    assert tails[0] == (Fraction(-66, 100), Fraction(18, 100))
    assert tails[-1] == (Fraction(5), Fraction(24, 1000))
    assert all(s.vol_shock == Fraction(40, 100) for s in DEFAULT_SCENARIOS[16:])


# ---------------------------------------------------------------- perps


def test_perp_leverage_10() -> None:
    # 2 BTC at 70,000: notional 140,000. IMF_eff = max(1/10, 2%) = 10%.
    # IMR = 140,000 x 0.10 + 0.00045 x 140,000 = 14,000 + 63 = 14,063
    # MMR = 140,000 x 0.02 x 0.5 + 63 = 1,400 + 63 = 1,463
    req = perp_requirement(PerpPosition(2 * BTC_UNIT, S, 10), BTC)
    assert req == Requirement(im=usdc("14063"), mm=usdc("1463"))
    # short side is symmetric
    assert perp_requirement(PerpPosition(-2 * BTC_UNIT, S, 10), BTC) == req


def test_perp_leverage_100_imf_base_binds() -> None:
    # IMF_eff = max(1/100, 2%) = 2%: IMR = 140,000 x 0.02 + 63 = 2,863; MMR unchanged 1,463
    req = perp_requirement(PerpPosition(2 * BTC_UNIT, S, 100), BTC)
    assert req == Requirement(im=usdc("2863"), mm=usdc("1463"))


def test_perp_rounds_up() -> None:
    # 1 satoshi at 70,000: notional 0.0007 USDC = 700 base units.
    # IMR = 700 x 0.02 + 700 x 0.00045 = 14 + 0.315 = 14.315 -> 15
    # MMR = 700 x 0.01 + 0.315 = 7.315 -> 8
    assert perp_requirement(PerpPosition(1, S, 100), BTC) == Requirement(15, 8)


# ---------------------------------------------------------------- options

# fee provision per BTC at S = 70,000: min(0.000075 x 70,000 = 5.25, 12.5% x mark)


def test_long_call() -> None:
    # long 2 calls K=75,000, mark 1,500:
    # IM = min(1.00 x 1,500, 0.20 x 70,000) x 2 = 3,000 ; fee min(5.25, 187.5) x 2 = 10.5
    # MM = min(0.50 x 1,500, 0.10 x 70,000) x 2 = 1,500 ; + 10.5
    o = OptionPosition("call", 75_000 * USDC, 2 * BTC_UNIT, 1_500 * USDC)
    assert option_requirement(o, S, BTC) == Requirement(usdc("3010.5"), usdc("1510.5"))


def test_long_put_spot_bound_binds() -> None:
    # long 1 put K=100,000 (deep ITM), mark 30,500:
    # IM = min(30,500, 14,000) = 14,000 + 5.25 ; MM = min(15,250, 7,000) = 7,000 + 5.25
    o = OptionPosition("put", 100_000 * USDC, BTC_UNIT, 30_500 * USDC)
    assert option_requirement(o, S, BTC) == Requirement(usdc("14005.25"), usdc("7005.25"))


def test_short_call_otm_and_itm() -> None:
    # short 1 call K=75,000 (OTM 5,000), mark 1,500:
    # IM = max(0.15 x 70,000 - 5,000 = 5,500, 0.10 x 70,000 = 7,000) = 7,000 + 5.25
    # MM = max(0.075 x 70,000 - 5,000 = 250, 0.05 x 70,000 = 3,500) = 3,500 + 5.25
    otm = OptionPosition("call", 75_000 * USDC, -BTC_UNIT, 1_500 * USDC)
    assert option_requirement(otm, S, BTC) == Requirement(usdc("7005.25"), usdc("3505.25"))
    # short 1 call K=65,000 (ITM, OTM = 0), mark 6,000:
    # IM = max(10,500, 7,000) = 10,500 + 5.25 ; MM = max(5,250, 3,500) = 5,250 + 5.25
    itm = OptionPosition("call", 65_000 * USDC, -BTC_UNIT, 6_000 * USDC)
    assert option_requirement(itm, S, BTC) == Requirement(usdc("10505.25"), usdc("5255.25"))


def test_short_put_atm() -> None:
    # short 1 put K=70,000 (OTM 0), mark 3,000: IM = max(10,500, 7,000) = 10,500, cap
    # 0.5 x 70,000 = 35,000 does not bind; MM = max(5,250, 3,500) = 5,250 (cap 17,500)
    o = OptionPosition("put", 70_000 * USDC, -BTC_UNIT, 3_000 * USDC)
    assert option_requirement(o, S, BTC) == Requirement(usdc("10505.25"), usdc("5255.25"))


def test_short_put_cap_binds() -> None:
    # short 1 put K=10,000 (OTM 60,000), mark 20:
    # IM = max(10,500 - 60,000, 7,000) = 7,000, capped at 0.50 x 10,000 = 5,000
    # MM = max(5,250 - 60,000, 3,500) = 3,500, capped at 0.25 x 10,000 = 2,500
    # fee = min(5.25, 12.5% x 20 = 2.5) = 2.5 (the 12.5% cap binds here too)
    o = OptionPosition("put", 10_000 * USDC, -BTC_UNIT, 20 * USDC)
    assert option_requirement(o, S, BTC) == Requirement(usdc("5002.5"), usdc("2502.5"))


def test_option_fee_provision_cap() -> None:
    # 3 contracts, mark 20: min(5.25, 0.125 x 20 = 2.5) x 3 = 7.5  (12.5% cap binds)
    cheap = OptionPosition("call", 120_000 * USDC, 3 * BTC_UNIT, 20 * USDC)
    assert option_fee_provision(cheap, S, BTC) == usdc("7.5")
    # 3 contracts, mark 1,500: min(5.25, 187.5) x 3 = 15.75  (cap does not bind)
    dear = OptionPosition("call", 75_000 * USDC, -3 * BTC_UNIT, 1_500 * USDC)
    assert option_fee_provision(dear, S, BTC) == usdc("15.75")
    # 1 satoshi: 5.25 USDC x 1e-8 = 0.0525 base units -> rounds up to 1
    tiny = OptionPosition("call", 75_000 * USDC, 1, 1_500 * USDC)
    assert option_fee_provision(tiny, S, BTC) == 1


def test_covered_call_needs_less_than_naked() -> None:
    # short 1 call K=75,000, mark 1,500: naked IM 7,005.25 (see above)
    call = OptionPosition("call", 75_000 * USDC, -BTC_UNIT, 1_500 * USDC)
    naked = cross_requirement([], [call], S, BTC)
    assert naked.requirement == Requirement(usdc("7005.25"), usdc("3505.25"))
    assert naked.spot_used_for_cover == 0
    # fully covered by 1 BTC spot: only the fee provision 5.25 remains
    covered = cross_requirement([], [call], S, BTC, spot_holding=2 * BTC_UNIT)
    assert covered.requirement == Requirement(usdc("5.25"), usdc("5.25"))
    assert covered.spot_used_for_cover == BTC_UNIT
    # half covered: 0.5 x 7,000 + 5.25 = 3,505.25 ; MM 0.5 x 3,500 + 5.25 = 1,755.25
    half = cross_requirement([], [call], S, BTC, spot_holding=BTC_UNIT // 2)
    assert half.requirement == Requirement(usdc("3505.25"), usdc("1755.25"))
    assert covered.requirement.im < half.requirement.im < naked.requirement.im


def test_covered_call_rejects_other_positions() -> None:
    put = OptionPosition("put", 75_000 * USDC, -BTC_UNIT, 1_500 * USDC)
    with pytest.raises(ValueError):
        option_requirement(put, S, BTC, covered=1)


# ---------------------------------------------------------------- Black-76


def test_black76_known_value_and_parity() -> None:
    # F = K = 100, T = 1, sigma = 0.2: d1 = 0.1, d2 = -0.1,
    # C = 100 x (N(0.1) - N(-0.1)) = 100 x (2 x 0.5398278 - 1) = 7.965567
    assert black76.call_price(100, 100, 1, 0.2) == pytest.approx(7.965567455, abs=1e-8)
    for f, k in ((100.0, 100.0), (120.0, 100.0), (80.0, 95.0)):
        c = black76.call_price(f, k, 0.5, 0.6)
        p = black76.put_price(f, k, 0.5, 0.6)
        assert c - p == pytest.approx(f - k, abs=1e-9)  # C - P = F - K at r = 0
        dc = black76.call_delta(f, k, 0.5, 0.6)
        assert dc - black76.put_delta(f, k, 0.5, 0.6) == pytest.approx(1.0)
    assert black76.call_price(120, 100, 0, 0.2) == 20  # intrinsic at expiry


def test_vol_shock_rule() -> None:
    pp = PortfolioParams()
    # DTE 30 -> p = 0.13, (30/30)^p = 1: up +40% -> 0.5 x 1.4 = 0.70; down -22% -> 0.39
    assert black76.shocked_vol(0.5, 0.40, 30, pp) == pytest.approx(0.70)
    assert black76.shocked_vol(0.5, -0.22, 30, pp) == pytest.approx(0.39)
    # DTE 3 -> p = 0.30: shock = 0.4 x 10^0.3 = 0.79811; IV' = 0.5 x 1.79811
    assert black76.shocked_vol(0.5, 0.40, 3, pp) == pytest.approx(0.5 * (1 + 0.4 * 10**0.3))
    # up-shock floor: 0.2 x 1.4 = 0.28 -> 0.40
    assert black76.shocked_vol(0.2, 0.40, 30, pp) == pytest.approx(0.40)
    # DTE below 1 counts as 1: (30/1)^0.3
    assert black76.shocked_vol(0.5, -0.22, 0.1, pp) == pytest.approx(0.5 * (1 - 0.22 * 30**0.3))


# ---------------------------------------------------------------- portfolio


def test_min_delta_reference_example() -> None:
    # long 1 BTC perp (+1), short 5 calls of delta 0.3 (-1.5): net -0.5, gross 2.5,
    # hedged (2.5 - 0.5)/2 = 1.0: (2% x 0.5 + 1% x 1.0) x 70,000 = (0.01 + 0.01) x 70,000 = 1,400
    net = Fraction(1) - 5 * Fraction(3, 10)
    gross = Fraction(1) + 5 * Fraction(3, 10)
    assert min_delta_charge(net, gross, S, BTC) == 1_400_000_000


def test_scan_long_perp_alone() -> None:
    # long 1 BTC perp at mark 70,000: worst weighted loss is the (-16%, +40%) scenario:
    # 0.16 x 70,000 = 11,200 (tail -66% x 18% = 8,316 and -33% x 36% = 8,316 are smaller)
    book = Book(BTC, S, perps=(PerpPosition(BTC_UNIT, S, 10),))
    result = scan(book)
    assert result.loss == usdc("11200")
    assert result.scenario is not None and result.scenario.spot_move == Fraction(-16, 100)
    pm = portfolio_requirement(book)
    # MinDelta = 2% x 1 x 70,000 = 1,400 < SCAN; fee = 0.00045 x 70,000 = 31.5
    # IMR = 11,200 + 31.5 ; MMR = 5,600 + 31.5
    assert pm.requirement == Requirement(usdc("11231.5"), usdc("5631.5"))


def test_hedged_perp_scan_below_cross_margin() -> None:
    # long 1 BTC perp + long 1 ATM put (30 DTE, IV 50%) priced at its Black-76 value
    put_mark = int(black76.put_price(float(S), float(S), 30 / 365, 0.5))
    perp = PerpPosition(BTC_UNIT, S, 10)
    put = OptionPosition("put", S, BTC_UNIT, put_mark, iv=0.5, dte=30.0)
    cross = cross_requirement([perp], [put], S, BTC).requirement
    assert cross == perp_requirement(perp, BTC) + option_requirement(put, S, BTC)
    book = Book(BTC, S, perps=(perp,), options=(put,))
    assert scan(book).loss < cross.im
    # and the perp alone scans worse than the hedged book
    assert scan(book).loss < scan(Book(BTC, S, perps=(perp,))).loss
    pm = portfolio_requirement(book)
    assert pm.requirement.im < cross.im
    assert 0 <= pm.requirement.mm <= pm.requirement.im


# ---------------------------------------------------------------- properties

prices = st.integers(min_value=1, max_value=500_000 * USDC)
sizes = st.integers(min_value=-10 * BTC_UNIT, max_value=10 * BTC_UNIT)
options = st.builds(
    OptionPosition,
    kind=st.sampled_from(["call", "put"]),
    strike=prices,
    size=sizes,
    mark=st.integers(min_value=0, max_value=500_000 * USDC),
    iv=st.floats(min_value=0.01, max_value=3.0),
    dte=st.floats(min_value=0.0, max_value=400.0),
)
perps = st.builds(
    PerpPosition,
    size=sizes,
    mark=prices,
    leverage=st.integers(min_value=1, max_value=200),
)


@settings(max_examples=150, deadline=None)
@given(
    spot=prices,
    perp_list=st.lists(perps, max_size=3),
    option_list=st.lists(options, max_size=3),
    spot_holding=st.integers(min_value=0, max_value=10 * BTC_UNIT),
)
def test_requirements_non_negative_and_mm_le_im(
    spot: int,
    perp_list: list[PerpPosition],
    option_list: list[OptionPosition],
    spot_holding: int,
) -> None:
    for p in perp_list:
        r = perp_requirement(p, BTC)
        assert 0 <= r.mm <= r.im
    for o in option_list:
        r = option_requirement(o, spot, BTC)
        assert 0 <= r.mm <= r.im
    xm = cross_requirement(perp_list, option_list, spot, BTC, spot_holding).requirement
    assert 0 <= xm.mm <= xm.im
    pm = portfolio_requirement(
        Book(BTC, spot, tuple(perp_list), tuple(option_list), spot_holding)
    ).requirement
    assert 0 <= pm.mm <= pm.im


def test_funding_provision_is_the_next_8h_the_book_pays() -> None:
    """max(0, rate x size x S): long 2 BTC at a +0.01% rate owes 0.0001 x 2 x 70,000 = 14 USDC;
    at -0.01% it would receive, so no provision; a short at +0.01% receives too."""
    rate = Fraction(1, 10_000)
    long = PerpPosition(2 * BTC_UNIT, S, 10, rate)
    assert funding_provision(Book(BTC, S, [long])) == usdc("14")
    assert funding_provision(Book(BTC, S, [PerpPosition(2 * BTC_UNIT, S, 10, -rate)])) == 0
    assert funding_provision(Book(BTC, S, [PerpPosition(-2 * BTC_UNIT, S, 10, rate)])) == 0
    # It adds to both requirements of portfolio margin.
    without = portfolio_requirement(Book(BTC, S, [PerpPosition(2 * BTC_UNIT, S, 10)]))
    with_rate = portfolio_requirement(Book(BTC, S, [long]))
    assert with_rate.requirement.im - without.requirement.im == usdc("14")
    assert with_rate.requirement.mm - without.requirement.mm == usdc("14")
