"""The trading commands of the ``ledger`` CLI, driven in-process through ``ledger.cli.main``
like ``tests/test_cli.py`` (whose ``Cli`` runner, ``assert_refused`` and cheap keystores are
reused), on SQLite and PostgreSQL.

Covers:

1. the README tour "Trading and unified margin" line by line (``prices``, ``order >
   buy.json``/``sell.json``, ``fill``, ``margin``, ``margin --what-if``, ``set-mode``, a
   transfer into ``ALICE:btc``, ``funding``, ``settle-expiry``, ``liquidate``, ``deposit
   --asset BTC``), with addresses for ``ALICE_ADDRESS``/``BOB_ADDRESS``. The tour runs on
   the wall clock, so its ``settle-expiry`` of 20271231 is refused as too early; an expiry
   is settled by ``test_settle_expiry_after_the_expiry``: positions built through the
   Python API with a clock before the expiry, then ``ledger settle-expiry`` on the wall
   clock, after it. (The tour's option, as in the README, is dated 20271231: after
   2027-12-31 08:00 UTC the README and this test need a later date.)
2. ``margin --json`` of a hand-computed account (0.5 BTC perp long at 70,000 with
   10,000 USDC: IMR 715.75, MMR 365.75) and of its counterparty's short, liquidation
   prices against the closed form;
3. ``--what-if``: nothing written, the changed requirement shown, and equal to what the
   real fill then produces; a malformed trade is one line, exit 2;
4. refusals: one ``error:`` line on stderr, exit 2, nothing written (journal, balances,
   signers, trading state) -- insufficient margin, unknown instruments, off-tick prices,
   off-step sizes, tampered/swapped/foreign orders, set-mode isolated on a main account,
   liquidation of a healthy account, ...; argparse usage errors are one line too;
5. ``fill --json`` receipts: positions and spot in the asset's decimals ("0.50", "0.001"),
   USDC in up to 6 decimals ("-0.0021"), for perps, spot and options;
6. ``ledger prices`` liquidates accounts pushed under their maintenance margin and prints
   the liquidation receipt, unless ``--no-liquidate`` (then ``ledger liquidate`` does);
7. ``ledger audit`` is intact at the end of every test that writes.


Funding is deterministic here: a tick accrues the rate set by the previous tick times the
time between them (wall clock), so a test publishes at most one tick before it reads
values, or makes the previous tick's rate exactly zero (mark = index x (1 - 0.05%)).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from ledger import Ledger
from ledger.cli import main
from tests.conftest import (
    ALICE,
    ALICE_WALLET,
    BOB,
    BOB_WALLET,
    CAROL,
    CAROL_WALLET,
    FIRST_SEQ,
    OPERATOR,
    STORES,
    drop_postgres_database,
    open_book,
)
from tests.test_cli import (
    ENV_VARS,
    FAR_FUTURE,
    PASSWORD,
    Cli,
    _store_url,
    assert_refused,
    write_keystore,
)

PERP = "BTC-USD-PERP"
TOUR_CALL = "BTC-USD-20271231-80000-C"  # the README's option
CALL = "BTC-USD-20301231-80000-C"  # far in the future, for the other tests
PAST_EXPIRY = "20250627"  # before the wall clock: settle-expiry may run on it
PAST_CALL = f"BTC-USD-{PAST_EXPIRY}-80000-C"
PAST_PUT = f"BTC-USD-{PAST_EXPIRY}-75000-P"
SUB = f"{ALICE}:btc"
RECEIPT_LINE = re.compile(r"^seq (\d+) hash 0x[0-9a-f]{64} ([a-z_]+)\n$")
# MMR rate of a BTC perp: IMF_base / 2 + taker fee = 1% + 0.045%.
MMR_RATE = Fraction(1045, 100_000)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Cheap keystores (scrypt n=2) of conftest's operator, alice, bob and carol."""
    folder = tmp_path_factory.mktemp("keys")
    return {
        name: write_keystore(folder / f"{name}.json", name)
        for name in ("operator", "alice", "bob", "carol")
    }


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, keys: dict[str, str]) -> None:
    """No ambient database or keys; the test operator's keystore and the password."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LEDGER_KEYSTORE_PASSWORD", PASSWORD)
    monkeypatch.setenv("LEDGER_OPERATOR_KEYSTORE", keys["operator"])


@pytest.fixture
def cli(db_url: str, capsys: pytest.CaptureFixture[str], keys: dict[str, str]) -> Cli:
    """The CLI on a ledger with genesis, the default listing and ALICE, BOB and CAROL
    onboarded (nothing funded, no prices), on each store."""
    open_book(db_url).close()
    return Cli(db_url, capsys, keys)


# --------------------------------------------------------------------------- helpers
def receipt_line(out: str, kind: str) -> int:
    """The seq of a one-line receipt of ``kind``."""
    match = RECEIPT_LINE.match(out)
    assert match is not None and match.group(2) == kind, out
    return int(match.group(1))


def json_documents(text: str) -> list[Any]:
    """The receipts a command that may write several prints as one JSON array."""
    docs = json.loads(text)
    assert isinstance(docs, list), text
    return docs


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """An argparse refusal (before any database is opened): exit 2, nothing on stdout,
    one ``error:`` line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == "", (info.value.code, out)
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def snapshot(url: str) -> tuple[Any, ...]:
    """Everything a refused command must leave as it was (and the audit still passes)."""
    with Ledger(url) as book:
        assert book.audit().ok
        return (
            book.store.head(),
            book.store.current_balances(),
            book.store.auth_projection(),
            sorted(book.store.trading_state().rows()),
        )


def audit_intact(cli: Cli) -> None:
    out = cli.ok("audit")
    assert out.startswith("intact: ") and f"head seq {cli.head().seq} " in out, out


def order(
    cli: Cli, path: Path, name: str, account: str, side: str, size: str, market: str, limit: str
) -> str:
    """``ledger order ... --keystore NAME.json > PATH``; returns the path."""
    path.write_text(cli.ok("order", account, side, size, market, limit, "--keystore", cli.ks(name)))
    return str(path)


def row(label: str, value: str) -> str:
    """One amount line of the ``ledger margin`` text."""
    return f"  {label:<20}{value:>20} USDC"


def perp_liquidation_index(usdc: str, size: str, entry: str, mark: str, index: str) -> Decimal:
    """The index where AV = MMR for one BTC perp position and USDC (marks move with the
    index by the same factor): usdc + size x (mark x - entry) = |size| x mark x MMR_RATE x."""
    u, q, e, m, i = (Fraction(v) for v in (usdc, size, entry, mark, index))
    root = i * (q * e - u) / (q * m - abs(q) * m * MMR_RATE)
    return Decimal(root.numerator) / Decimal(root.denominator)


def assert_liquidation_price(shown: str, expected: Decimal) -> None:
    assert abs(Decimal(shown) - expected) <= Decimal("0.01"), (shown, expected)


def open_long(cli: Cli, tmp_path: Path, *extra: str) -> str:
    """The hand-computed example: BTC index and perp mark at 70,000; ALICE (10,015.75
    USDC) buys 0.5 BTC-USD-PERP from BOB (10,000 USDC) at 70,000 as the taker (fee 15.75,
    so she is left with exactly 10,000 USDC; BOB pays the maker's 1.05). Returns the fill
    command's output."""
    cli.ok("deposit", ALICE, "10015.75")
    cli.ok("deposit", BOB, "10000")
    cli.ok("prices", "BTC:index=70000", f"{PERP}:mark=70000")
    buy = order(cli, tmp_path / "buy.json", "alice", ALICE, "buy", "0.5", PERP, "70100")
    sell = order(cli, tmp_path / "sell.json", "bob", BOB, "sell", "0.5", PERP, "69900")
    return cli.ok("fill", buy, sell, "--price", "70000", "--size", "0.5", *extra)


# --------------------------------------------------------------------------- 1. the tour
def test_readme_trading_tour(cli: Cli, tmp_path: Path) -> None:
    """README "Trading and unified margin", every line as written (ALICE_ADDRESS and
    BOB_ADDRESS replaced; both funded first, as in the quick start)."""
    cli.ok("deposit", ALICE, "10000")
    cli.ok("deposit", BOB, "10000")
    seq = FIRST_SEQ + 2

    # ledger prices BTC:index=70000 BTC-USD-PERP:mark=70010 BTC-USD-...-C:mark=1500 ...:iv=0.55
    out = cli.ok(
        "prices",
        "BTC:index=70000",
        "BTC-USD-PERP:mark=70010",
        f"{TOUR_CALL}:mark=1500",
        f"{TOUR_CALL}:iv=0.55",
    )
    assert receipt_line(out, "price_update") == seq
    with Ledger(cli.url) as book:
        assert json.loads(book.transaction(seq).metadata)["prices"] == {
            "BTC": {"index": 70_000_000_000},
            "BTC-USD-PERP": {"mark": 70_010_000_000},
            TOUR_CALL: {"mark": 1_500_000_000, "iv": "0.55"},
        }

    # ledger order ALICE buy 0.5 BTC-USD-PERP 70100 --keystore alice.json > buy.json
    buy = order(cli, tmp_path / "buy.json", "alice", ALICE, "buy", "0.5", PERP, "70100")
    sell = order(cli, tmp_path / "sell.json", "bob", BOB, "sell", "0.5", PERP, "69900")
    for path, account, side, limit in ((buy, ALICE, "buy", 70100), (sell, BOB, "sell", 69900)):
        envelope = json.loads(Path(path).read_text())
        assert (envelope["format"], envelope["action"]) == ("ledger.action/1", "order")
        message = envelope["message"]
        assert {k: message[k] for k in ("account", "market", "side", "size", "limit_price")} == {
            "account": account,
            "market": PERP,
            "side": side,
            "size": str(50_000_000),
            "limit_price": str(limit * 10**6),
        }
        assert envelope["signer"]["account"] == account
    assert cli.head().seq == seq  # signing writes nothing

    # ledger fill buy.json sell.json --price 70000 --size 0.5
    seq += 1
    assert receipt_line(cli.ok("fill", buy, sell, "--price", "70000", "--size", "0.5"), "fill")
    assert cli.head().seq == seq
    assert cli.json("balance", ALICE, "--asset", PERP)["balance"] == "0.50"
    assert cli.json("balance", BOB, "--asset", PERP)["balance"] == "-0.50"

    # ledger margin ALICE: AV, IMR, MMR, free collateral, liquidation prices. Mark 70,010:
    # notional 35,005, IMR 2% + 0.045% = 715.85225, MMR 1% + 0.045% = 365.80225;
    # USDC 10,000 - taker fee 15.75; AV adds the uPnL 0.5 x 10 = 5.
    lines = cli.ok("margin", ALICE).splitlines()
    assert lines[:-1] == [
        f"account {ALICE}  mode cross  leverage 100",
        row("USDC balance", "9984.25"),
        row("account value", "9989.25"),
        row("initial margin", "715.85225"),
        row("maintenance margin", "365.80225"),
        row("free collateral", "9273.39775"),
        row("max withdrawable", "9273.39775"),
        f"  {'margin ratio':<20}{'3.66%':>20}",
        f"  {PERP}  size 0.50  mark 70010.00  entry 70000.00  uPnL 5.00  funding 0.00",
    ]
    prefix = "  liquidation price (BTC index): "
    assert lines[-1].startswith(prefix)
    expected = perp_liquidation_index("9984.25", "0.5", "70000", "70010", "70000")
    assert_liquidation_price(lines[-1].removeprefix(prefix), expected)

    # ledger margin ALICE --what-if 'buy 2 BTC-USD-PERP @ 70000': nothing written.
    out = cli.ok("margin", ALICE, "--what-if", "buy 2 BTC-USD-PERP @ 70000")
    assert out.startswith("what if: buy 2 BTC-USD-PERP @ 70000 (nothing written)\n")
    # 2.5 BTC at mark 70,010: IMR 175,025 x 2.045%; the taker fee on 140,000 is 63.
    assert row("initial margin", "3579.26125") in out.splitlines()
    assert row("USDC balance", "9921.25") in out.splitlines()
    assert "liquidation price" not in out
    assert cli.head().seq == seq

    # ledger set-mode ... --sign-only prints the signed action and writes nothing
    signed = json.loads(
        cli.ok("set-mode", ALICE, "portfolio", "--keystore", cli.ks("alice"), "--sign-only")
    )
    assert (signed["action"], signed["message"]["mode"]) == ("set_margin_mode", "portfolio")
    assert cli.head().seq == seq
    # ledger set-mode ALICE portfolio --keystore alice.json
    seq += 1
    out = cli.ok("set-mode", ALICE, "portfolio", "--keystore", cli.ks("alice"))
    assert receipt_line(out, "account_setting") == seq
    summary = cli.json("margin", ALICE)
    assert (summary["mode"], summary["leverage"]) == ("portfolio", 100)
    assert summary["underlyings"][0]["worst_scenario"]["index"] >= 0
    assert len(summary["underlyings"][0]["scenario_pnl"]) == 24

    # ledger transfer ALICE ALICE:btc 2000 --keystore alice.json (fund an isolated one)
    seq += 1
    out = cli.ok("transfer", ALICE, SUB, "2000", "--keystore", cli.ks("alice"))
    assert receipt_line(out, "transfer") == seq
    assert cli.json("balance", SUB)["balance"] == "2000.00"
    seq += 1
    out = cli.ok("set-mode", SUB, "isolated", "--keystore", cli.ks("alice"))
    assert receipt_line(out, "account_setting") == seq
    sub = cli.json("margin", SUB)
    assert (sub["mode"], sub["usdc"], sub["positions"]) == ("isolated", "2000.00", [])

    # ledger funding ALICE: one tick only, so nothing has accrued.
    seq += 1
    funding = cli.json("funding", ALICE)
    assert (funding["seq"], funding["kind"], funding["postings"]) == (seq, "funding", [])

    # ledger settle-expiry --expiry 20271231 --price 71000: refused before the expiry
    # (test_settle_expiry_after_the_expiry settles one).
    assert_refused(
        cli("settle-expiry", "--expiry", "20271231", "--price", "71000"),
        f"{TOUR_CALL} expires at 2027-12-31T08:00:00+00:00: it cannot settle before",
    )

    # ledger liquidate [ACCOUNT]
    assert cli.ok("liquidate") == "no account is under its maintenance margin\n"
    assert_refused(cli("liquidate", ALICE), f"{ALICE} is not liquidatable")
    assert cli.head().seq == seq

    # ledger deposit ALICE 0.5 --asset BTC (bridged spot, operator-signed)
    seq += 1
    deposit = cli.json("deposit", ALICE, "0.5", "--asset", "BTC")
    assert (deposit["seq"], deposit["kind"]) == (seq, "deposit")
    assert [(p["account"], p["asset"], p["amount"]) for p in deposit["postings"]] == [
        ("system:bridge", "BTC", "-0.50"),
        (ALICE, "BTC", "0.50"),
    ]
    assert cli.json("balance", ALICE, "--asset", "BTC")["balance"] == "0.50"
    assert cli.json("margin", ALICE)["spot"] == [{"asset": "BTC", "quantity": "0.50"}]
    assert "  spot BTC  0.50" in cli.ok("margin", ALICE).splitlines()
    audit_intact(cli)


def test_settle_expiry_after_the_expiry(
    db_url: str, capsys: pytest.CaptureFixture[str], keys: dict[str, str], tmp_path: Path
) -> None:
    """Options of a past expiry bought through the Python API on a clock before it; the CLI
    (wall clock, after the expiry) refuses to fill them and settles them."""
    clock = [int(datetime(2025, 6, 1, tzinfo=UTC).timestamp()) * 10**6]
    with Ledger.init(db_url, operator=OPERATOR, clock=lambda: clock[0]) as book:
        for wallet in (ALICE_WALLET, BOB_WALLET, CAROL_WALLET):
            book.onboard(wallet)
        book.deposit(ALICE, "10000")
        book.deposit(BOB, "10000")
        book.publish_prices(
            {
                "BTC": {"index": "70000"},
                PAST_CALL: {"mark": "1500", "iv": "0.55"},
                PAST_PUT: {"mark": "2000", "iv": "0.6"},
            }
        )
        expiry = int(FAR_FUTURE)
        for buyer, seller, name, size, price in (
            ((ALICE_WALLET, ALICE), (BOB_WALLET, BOB), PAST_CALL, "1", "1500"),
            ((BOB_WALLET, BOB), (ALICE_WALLET, ALICE), PAST_PUT, "0.5", "2000"),
        ):
            clock[0] += 1_000_000
            nonce = clock[0]
            bid = book.sign_order(*buyer, name, "buy", size, price, nonce=nonce, expiry=expiry)
            ask = book.sign_order(*seller, name, "sell", size, price, nonce=nonce, expiry=expiry)
            book.fill(bid, ask, price, size)
        head = book.store.head().seq
    cli = Cli(db_url, capsys, keys)
    assert [p["instrument"] for p in cli.json("margin", ALICE)["positions"]] == [
        PAST_PUT,
        PAST_CALL,
    ]

    buy = order(cli, tmp_path / "buy.json", "alice", ALICE, "buy", "0.1", PAST_CALL, "1600")
    sell = order(cli, tmp_path / "sell.json", "bob", BOB, "sell", "0.1", PAST_CALL, "1400")
    assert_refused(
        cli("fill", buy, sell, "--price", "1500", "--size", "0.1"),
        f"{PAST_CALL} expired at 2025-06-27T08:00:00+00:00",
    )
    assert_refused(
        cli("settle-expiry", "--expiry", PAST_EXPIRY, "--price", "85000", "--underlying", "ETH"),
        f"no open options expire on {PAST_EXPIRY}",
    )
    assert cli.head().seq == head

    # At 85,000 the 80,000 call pays 5,000 per unit from BOB (short) to ALICE; the 75,000
    # put is worthless. Settlement fee per unit: min(0.0075% x 85,000, 12.5% x payoff),
    # 6.375 on the call from each side, 0 on the put.
    receipts = json_documents(
        cli.ok("settle-expiry", "--expiry", PAST_EXPIRY, "--price", "85000", "--json")
    )
    assert len(receipts) == 1
    settlement = receipts[0]
    assert (settlement["seq"], settlement["kind"]) == (head + 1, "settlement")
    assert settlement["postings"] == [
        {"account": BOB, "asset": PAST_PUT, "amount": "-0.50", "balance_after": "0.00"},
        {"account": ALICE, "asset": PAST_PUT, "amount": "0.50", "balance_after": "0.00"},
        {"account": BOB, "asset": PAST_CALL, "amount": "1.00", "balance_after": "0.00"},
        {"account": "system:fees", "asset": "USDC", "amount": "12.75", "balance_after": "28.50"},
        {"account": BOB, "asset": "USDC", "amount": "-5006.375", "balance_after": "5485.75"},
        {"account": ALICE, "asset": PAST_CALL, "amount": "-1.00", "balance_after": "0.00"},
        {"account": ALICE, "asset": "USDC", "amount": "4993.625", "balance_after": "14485.75"},
    ]
    assert_refused(
        cli("settle-expiry", "--expiry", PAST_EXPIRY, "--price", "85000"),
        f"no open options expire on {PAST_EXPIRY}",
    )
    summary = cli.json("margin", ALICE)
    assert (summary["positions"], summary["usdc"], summary["initial_margin"]) == (
        [],
        "14485.75",
        "0.00",
    )
    audit_intact(cli)


# --------------------------------------------------------------------------- 2. margin --json
def test_margin_json_of_a_hand_computed_account(cli: Cli, tmp_path: Path) -> None:
    """0.5 BTC perp long at 70,000 with 10,000 USDC, mark 70,000: notional 35,000,
    IMR = 35,000 x 2% + 35,000 x 0.045% = 715.75, MMR = 35,000 x 1% + 15.75 = 365.75."""
    open_long(cli, tmp_path)
    data = cli.json("margin", ALICE)
    assert list(data) == [
        "account",
        "mode",
        "leverage",
        "usdc",
        "mirrored_collateral",
        "account_value",
        "initial_margin",
        "maintenance_margin",
        "free_collateral",
        "max_withdrawable",
        "margin_ratio",
        "liquidatable",
        "positions",
        "spot",
        "liquidation_prices",
        "underlyings",
    ]
    liquidation = data.pop("liquidation_prices")
    assert data == {
        "account": ALICE,
        "mode": "cross",
        "leverage": 100,
        "usdc": "10000.00",
        "mirrored_collateral": "0.00",
        "account_value": "10000.00",
        "initial_margin": "715.75",
        "maintenance_margin": "365.75",
        "free_collateral": "9284.25",
        "max_withdrawable": "9284.25",
        "margin_ratio": "3.66%",  # 365.75 / 10,000
        "liquidatable": False,
        "positions": [
            {
                "instrument": PERP,
                "kind": "perp",
                "size": "0.50",
                "mark": "70000.00",
                "entry_price": "70000.00",
                "unrealised_pnl": "0.00",
                "accrued_funding": "0.00",
            }
        ],
        "spot": [],
        "underlyings": [
            {
                "underlying": "BTC",
                "index": "70000.00",
                "initial_margin": "715.75",
                "maintenance_margin": "365.75",
            }
        ],
    }
    # AV(P) = 10,000 + 0.5 x (P - 70,000) = MMR(P) = 0.5 x P x 1.045%: P = 50,528.02...
    assert list(liquidation) == ["BTC"] and len(liquidation["BTC"]) == 1
    expected = perp_liquidation_index("10000", "0.5", "70000", "70000", "70000")
    assert abs(expected - Decimal("50528.02")) < Decimal("0.01")
    assert_liquidation_price(liquidation["BTC"][0], expected)

    # The short side: BOB paid the maker fee (0.003% of 35,000 = 1.05).
    bob = cli.json("margin", BOB)
    assert {k: bob[k] for k in ("usdc", "account_value", "initial_margin", "free_collateral")} == {
        "usdc": "9998.95",
        "account_value": "9998.95",
        "initial_margin": "715.75",
        "free_collateral": "9283.20",
    }
    assert bob["maintenance_margin"] == "365.75"
    assert [(p["size"], p["entry_price"], p["unrealised_pnl"]) for p in bob["positions"]] == [
        ("-0.50", "70000.00", "0.00")
    ]
    expected = perp_liquidation_index("9998.95", "-0.5", "70000", "70000", "70000")
    assert abs(expected - Decimal("89067.15")) < Decimal("0.01")
    assert_liquidation_price(bob["liquidation_prices"]["BTC"][0], expected)

    # The text form shows the same numbers.
    lines = cli.ok("margin", ALICE).splitlines()
    assert lines[1:8] == [
        row("USDC balance", "10000.00"),
        row("account value", "10000.00"),
        row("initial margin", "715.75"),
        row("maintenance margin", "365.75"),
        row("free collateral", "9284.25"),
        row("max withdrawable", "9284.25"),
        f"  {'margin ratio':<20}{'3.66%':>20}",
    ]
    audit_intact(cli)


# --------------------------------------------------------------------------- 3. what-if
def test_what_if_writes_nothing_and_matches_the_real_fill(cli: Cli, tmp_path: Path) -> None:
    open_long(cli, tmp_path)
    before = snapshot(cli.url)
    what_if = cli.json("margin", ALICE, "--what-if", "buy 2 BTC-USD-PERP @ 70000")
    assert snapshot(cli.url) == before
    # 2.5 BTC at 70,000: notional 175,000; IMR 2.045%, MMR 1.045%; taker fee 63 on 140,000.
    assert "liquidation_prices" not in what_if
    assert {
        k: what_if[k]
        for k in (
            "usdc",
            "account_value",
            "initial_margin",
            "maintenance_margin",
            "free_collateral",
        )
    } == {
        "usdc": "9937.00",
        "account_value": "9937.00",
        "initial_margin": "3578.75",
        "maintenance_margin": "1828.75",
        "free_collateral": "6358.25",
    }
    assert [(p["size"], p["entry_price"]) for p in what_if["positions"]] == [("2.50", "70000.00")]

    text = cli.ok("margin", ALICE, "--what-if", "buy 2 BTC-USD-PERP @ 70000").splitlines()
    assert text[0] == "what if: buy 2 BTC-USD-PERP @ 70000 (nothing written)"
    assert row("initial margin", "3578.75") in text
    assert not any("liquidation price" in line for line in text)
    # A closing what-if: no requirement left, the taker fee paid.
    close = cli.json("margin", ALICE, "--what-if", " sell 0.5  BTC-USD-PERP@70000 ")
    assert (close["positions"], close["usdc"], close["initial_margin"]) == ([], "9984.25", "0.00")
    assert snapshot(cli.url) == before

    # The real fill (ALICE the taker again) lands exactly where the what-if said.
    cli.ok("deposit", CAROL, "10000")
    buy = order(cli, tmp_path / "b2.json", "alice", ALICE, "buy", "2", PERP, "70000")
    sell = order(cli, tmp_path / "s2.json", "carol", CAROL, "sell", "2", PERP, "70000")
    cli.ok("fill", buy, sell, "--price", "70000", "--size", "2")
    after = cli.json("margin", ALICE)
    assert after.pop("liquidation_prices")["BTC"]
    assert after == what_if
    audit_intact(cli)


# --------------------------------------------------------------------------- 4. refusals
@pytest.fixture(scope="module", params=STORES)
def refusing(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """One database per store shared by the refusals (each checks it wrote nothing), and
    signed order files by name: ALICE (10,000 USDC) holds 0.5 BTC-USD-PERP long from BOB
    (10,000 USDC) at 70,000 (index and mark); CAROL holds 100 USDC."""
    url = _store_url(request.param, tmp_path_factory, "trading-refusals")
    folder = tmp_path_factory.mktemp("orders")
    files: dict[str, str] = {}
    expiry = int(FAR_FUTURE)
    with open_book(url) as book:
        book.deposit(ALICE, "10000")
        book.deposit(BOB, "10000")
        book.deposit(CAROL, "100")
        book.publish_prices({"BTC": {"index": "70000"}, PERP: {"mark": "70000"}})
        buy = book.sign_order(ALICE_WALLET, ALICE, PERP, "buy", "0.5", "70000", nonce=1)
        sell = book.sign_order(BOB_WALLET, BOB, PERP, "sell", "0.5", "70000", nonce=1)
        book.fill(buy, sell, "70000", "0.5")
        orders = {
            "carol_buy": (CAROL_WALLET, CAROL, "buy", "0.5", "70000"),
            "bob_sell": (BOB_WALLET, BOB, "sell", "1", "69000"),
            "bob_buy": (BOB_WALLET, BOB, "buy", "1", "71000"),
            "alice_by_bob": (BOB_WALLET, ALICE, "buy", "0.5", "70000"),
            "alice_buy": (ALICE_WALLET, ALICE, "buy", "0.1", "71000"),
            "alice_sub_sell": (ALICE_WALLET, f"{ALICE}:x", "sell", "0.1", "69000"),
        }
        for nonce, (name, (wallet, account, side, size, limit)) in enumerate(orders.items(), 2):
            envelope = book.sign_order(
                wallet, account, PERP, side, size, limit, nonce=nonce, expiry=expiry
            )
            (folder / f"{name}.json").write_text(json.dumps(envelope))
            files[name] = str(folder / f"{name}.json")
    tampered = json.loads(Path(files["carol_buy"]).read_text())
    tampered["message"]["limit_price"] = str(80_000 * 10**6)  # a better limit, unsigned
    (folder / "tampered.json").write_text(json.dumps(tampered))
    (folder / "list.json").write_text("[]")
    files |= {
        "tampered": str(folder / "tampered.json"),
        "list": str(folder / "list.json"),
        "absent": str(folder / "absent.json"),
    }
    yield url, files
    if request.param != "sqlite":
        drop_postgres_database(url)


FILL = ("fill", "{carol_buy}", "{bob_sell}", "--price", "70000", "--size")
# argv items are formatted with the order files ({carol_buy}, ...) and keystores.
REFUSALS: dict[str, tuple[tuple[str, ...], str]] = {
    "insufficient margin on fill": (
        (*FILL, "0.5"),
        # CAROL: 100 USDC - the taker fee 15.75 = 84.25 against an IMR of 715.75.
        f"insufficient margin: after this fill, account {CAROL} would need 715.75 USDC "
        "initial margin and have 84.25 account value (631.50 short)",
    ),
    "tampered order file": (
        ("fill", "{tampered}", "{bob_sell}", "--price", "70000", "--size", "0.001"),
        "the L2 signature does not verify for the signer's key",
    ),
    "orders swapped": (
        ("fill", "{bob_sell}", "{carol_buy}", "--price", "70000", "--size", "0.001"),
        "is a sell, not a buy",
    ),
    "self-trade": (
        ("fill", "{bob_buy}", "{bob_sell}", "--price", "70000", "--size", "0.001"),
        f"{BOB} cannot trade with itself",
    ),
    "self-trade between a main and a sub-account": (
        ("fill", "{alice_buy}", "{alice_sub_sell}", "--price", "70000", "--size", "0.001"),
        f"{ALICE} cannot trade with itself: {ALICE} and {ALICE}:x have one owner",
    ),
    "order signed by another owner": (
        ("fill", "{alice_by_bob}", "{bob_sell}", "--price", "70000", "--size", "0.001"),
        f"{BOB} cannot trade for {ALICE}: it does not own it",
    ),
    "fill above the buy limit": (
        ("fill", "{carol_buy}", "{bob_sell}", "--price", "70000.01", "--size", "0.001"),
        "above the buy order's limit",
    ),
    "fill beyond the order size": ((*FILL, "0.6"), "exceeds what order"),
    "off-tick fill price": (
        ("fill", "{carol_buy}", "{bob_sell}", "--price", "69999.995", "--size", "0.001"),
        "is not on the price tick",
    ),
    "off-step fill size": ((*FILL, "0.0005"), "is not a multiple of the size step"),
    "zero fill size": ((*FILL, "0"), "amount must be positive"),
    "size beyond the decimals": ((*FILL, "0.000000001"), "SIZE has 8 decimals, got 9"),
    "order file missing": (
        ("fill", "{absent}", "{bob_sell}", "--price", "70000", "--size", "0.001"),
        "cannot read",
    ),
    "order file not an object": (
        ("fill", "{list}", "{bob_sell}", "--price", "70000", "--size", "0.001"),
        "the buy and sell files each hold a signed order (JSON object)",
    ),
    "unknown underlying in prices": (
        ("prices", "SOL:index=1"),
        "instrument 'SOL' is not a known shape",
    ),
    "unknown perp in prices": (("prices", "SOL-USD-PERP:mark=5"), "unknown underlying 'SOL'"),
    "malformed instrument in prices": (
        ("prices", "BTC-USD-20301231-80000-X:mark=1"),
        "last part must be C (call) or P (put), got 'X'",
    ),
    "off-tick index": (("prices", "BTC:index=70000.001"), "is not on the price tick"),
    "off-tick mark": (("prices", f"{PERP}:mark=70000.005"), "is not on the price tick"),
    "negative price": (("prices", "BTC:index=-5"), "invalid amount '-5'"),
    "index on a perp": (("prices", f"{PERP}:index=5"), f"{PERP} takes mark"),
    "mark on a spot pair": (("prices", "BTC/USDC:mark=5"), "BTC/USDC takes mark"),
    "iv without a mark": (("prices", f"{CALL}:iv=0.5"), "takes iv and mark"),
    "iv not a number": (
        ("prices", f"{CALL}:mark=5", f"{CALL}:iv=abc"),
        f"iv of {CALL} must be a decimal string",
    ),
    "set-mode isolated on a main account": (
        ("set-mode", ALICE, "isolated", "--keystore", "{alice}"),
        f"only sub-accounts OWNER:NAME can be isolated; {ALICE} is a main account",
    ),
    "set-mode of another owner's account": (
        ("set-mode", f"{ALICE}:x", "isolated", "--keystore", "{bob}"),
        "does not own it",
    ),
    "liquidate a healthy account": (
        ("liquidate", ALICE),
        f"{ALICE} is not liquidatable: account value 9984.25 USDC, maintenance margin 365.75 USDC",
    ),
    "liquidate a malformed address": (("liquidate", "0x12"), "invalid address '0x12'"),
    "margin of a malformed address": (("margin", "0x12"), "invalid address '0x12'"),
    "settle-expiry without options": (
        ("settle-expiry", "--expiry", "20271231", "--price", "71000"),
        "no open options expire on 20271231",
    ),
    "what-if not a trade": (
        ("margin", ALICE, "--what-if", "buy two BTC"),
        "cannot read the trade 'buy two BTC': write e.g. 'buy 2 BTC-USD-PERP @ 70000'",
    ),
    "what-if side": (
        ("margin", ALICE, "--what-if", "hold 1 BTC-USD-PERP @ 70000"),
        "cannot read the trade",
    ),
    "what-if without a price": (
        ("margin", ALICE, "--what-if", "buy 1 BTC-USD-PERP", "--json"),
        "cannot read the trade",
    ),
    "what-if negative size": (
        ("margin", ALICE, "--what-if", "buy -1 BTC-USD-PERP @ 70000"),
        "cannot read the trade",
    ),
    "what-if unknown market": (
        ("margin", ALICE, "--what-if", "buy 1 DOGE-USD-PERP @ 1"),
        "unknown underlying 'DOGE'",
    ),
    "what-if price decimals": (
        ("margin", ALICE, "--what-if", "buy 1 BTC-USD-PERP @ 1.0000001"),
        "USDC has 6 decimals, got 7",
    ),
    "order on an unknown market": (
        ("order", ALICE, "buy", "0.5", "DOGE-USD-PERP", "1", "--keystore", "{alice}"),
        "unknown underlying 'DOGE'",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_trading_refusals_are_one_line_exit_2_and_write_nothing(
    refusing: tuple[str, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, str],
    case: str,
) -> None:
    url, files = refusing
    cli = Cli(url, capsys, keys)
    before = snapshot(url)
    argv, fragment = REFUSALS[case]
    assert_refused(cli(*(arg.format(**files, **keys) for arg in argv)), fragment)
    assert snapshot(url) == before


def test_margin_of_an_account_without_positions(
    refusing: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str], keys: dict[str, str]
) -> None:
    cli = Cli(refusing[0], capsys, keys)
    data = cli.json("margin", CAROL)
    assert (data["account_value"], data["initial_margin"], data["margin_ratio"]) == (
        "100.00",
        "0.00",
        None,
    )
    assert (data["positions"], data["liquidation_prices"], data["underlyings"]) == ([], {}, [])
    assert f"  {'margin ratio':<20}{'-':>20}" in cli.ok("margin", CAROL).splitlines()


@pytest.mark.parametrize(
    "trade", ["buy 0.0005 BTC-USD-PERP @ 70000", "buy 1 BTC-USD-PERP @ 70000.005"]
)
def test_what_if_refuses_what_a_fill_refuses(
    refusing: tuple[str, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, str],
    trade: str,
) -> None:
    cli = Cli(refusing[0], capsys, keys)
    assert_refused(cli("margin", ALICE, "--what-if", trade), "not")


def test_liquidate_json_with_nothing_to_liquidate_prints_json(
    refusing: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str], keys: dict[str, str]
) -> None:
    assert json.loads(Cli(refusing[0], capsys, keys).ok("liquidate", "--json")) == []


@pytest.mark.parametrize(
    "argv",
    [
        ("prices", "BTC:foo=1"),
        ("prices", "BTC:index"),
        ("prices", "index=1"),
        ("prices",),
        ("fill", "b.json", "s.json", "--size", "1"),
        ("fill", "b.json", "s.json", "--price", "1", "--size", "1", "--maker", "both"),
        ("order", ALICE, "hold", "1", PERP, "1", "--keystore", "k.json"),
        ("order", ALICE, "buy", "1", PERP, "1"),
        ("set-mode", ALICE, "margin", "--keystore", "k.json"),
        ("set-mode", ALICE, "cross", "--leverage", "0", "--keystore", "k.json"),
        ("set-mode", ALICE, "cross", "--leverage", "abc", "--keystore", "k.json"),
        ("settle-expiry", "--price", "1"),
        ("margin",),
    ],
    ids=[
        "prices field",
        "prices no value",
        "prices no name",
        "prices nothing",
        "fill no price",
        "fill maker",
        "order side",
        "order no keystore",
        "set-mode mode",
        "set-mode leverage 0",
        "set-mode leverage abc",
        "settle-expiry no expiry",
        "margin no account",
    ],
)
def test_trading_usage_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    usage_error(capsys, *argv)


def test_prices_usage_error_names_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "prices", "BTC:foo=1")
    assert err == (
        "error: ledger prices: argument price: 'BTC:foo=1': write NAME:index=PRICE, "
        "NAME:mark=PRICE or NAME:iv=0.55 (see --help)\n"
    )
    assert "leverage must be 1..100" in usage_error(
        capsys, "set-mode", ALICE, "cross", "--leverage", "101", "--keystore", "k.json"
    )


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (("prices", "BTC:index=70000.001"), "70000.001"),
        ((*FILL, "0.0005"), "0.0005"),
        (("fill", "{carol_buy}", "{bob_sell}", "--price", "70001", "--size", "0.001"), "70001"),
    ],
    ids=["index tick", "size step", "buy limit"],
)
def test_trading_errors_quote_what_was_typed(
    refusing: tuple[str, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, str],
    argv: tuple[str, ...],
    shown: str,
) -> None:
    url, files = refusing
    err = assert_refused(Cli(url, capsys, keys)(*(a.format(**files) for a in argv)), "")
    assert re.search(rf"\b{re.escape(shown)}\b", err) and not re.search(r"\d{10}", err), err


# --------------------------------------------------------------------------- 5. receipts
def test_fill_json_receipts_use_each_assets_decimals(cli: Cli, tmp_path: Path) -> None:
    perp = json.loads(open_long(cli, tmp_path, "--json"))
    assert (perp["kind"], perp["seq"]) == ("fill", FIRST_SEQ + 3)
    assert perp["postings"] == [
        {"account": ALICE, "asset": PERP, "amount": "0.50", "balance_after": "0.50"},
        {"account": ALICE, "asset": "USDC", "amount": "-15.75", "balance_after": "10000.00"},
        {"account": "system:fees", "asset": "USDC", "amount": "16.80", "balance_after": "16.80"},
        {"account": BOB, "asset": PERP, "amount": "-0.50", "balance_after": "-0.50"},
        {"account": BOB, "asset": "USDC", "amount": "-1.05", "balance_after": "9998.95"},
    ]

    # 0.001 BTC at 70,000 (notional 70) with the buyer as maker: 0.0021 and 0.0315.
    buy = order(cli, tmp_path / "b.json", "alice", ALICE, "buy", "0.001", PERP, "70000")
    sell = order(cli, tmp_path / "s.json", "bob", BOB, "sell", "0.001", PERP, "70000")
    tiny = cli.json("fill", buy, sell, "--price", "70000", "--size", "0.001", "--maker", "buy")
    assert tiny["postings"] == [
        {"account": ALICE, "asset": PERP, "amount": "0.001", "balance_after": "0.501"},
        {"account": ALICE, "asset": "USDC", "amount": "-0.0021", "balance_after": "9999.9979"},
        {
            "account": "system:fees",
            "asset": "USDC",
            "amount": "0.0336",
            "balance_after": "16.8336",
        },
        {"account": BOB, "asset": PERP, "amount": "-0.001", "balance_after": "-0.501"},
        {"account": BOB, "asset": "USDC", "amount": "-0.0315", "balance_after": "9998.9185"},
    ]

    # Spot: CAROL buys 0.25 BTC from BOB's bridged BTC at 70,000 (17,500; taker 7.875,
    # maker 0.525).
    cli.ok("deposit", CAROL, "20000")
    cli.ok("deposit", BOB, "1", "--asset", "BTC")
    buy = order(cli, tmp_path / "b.json", "carol", CAROL, "buy", "0.25", "BTC/USDC", "70000")
    sell = order(cli, tmp_path / "s.json", "bob", BOB, "sell", "0.25", "BTC/USDC", "70000")
    spot = cli.json("fill", buy, sell, "--price", "70000", "--size", "0.25")
    assert sorted(
        (p["account"], p["asset"], p["amount"], p["balance_after"]) for p in spot["postings"]
    ) == sorted(
        [
            (CAROL, "BTC", "0.25", "0.25"),
            (CAROL, "USDC", "-17507.875", "2492.125"),
            ("system:fees", "USDC", "8.40", "25.2336"),
            (BOB, "BTC", "-0.25", "0.75"),
            (BOB, "USDC", "17499.475", "27498.3935"),
        ]
    )

    # Option: ALICE buys 1 call at 1,500 from BOB; fee per side min(0.0075% x 70,000,
    # 12.5% x 1,500) = 5.25.
    cli.ok("prices", f"{CALL}:mark=1500", f"{CALL}:iv=0.55")
    buy = order(cli, tmp_path / "b.json", "alice", ALICE, "buy", "1", CALL, "1500")
    sell = order(cli, tmp_path / "s.json", "bob", BOB, "sell", "1", CALL, "1500")
    option = cli.json("fill", buy, sell, "--price", "1500", "--size", "1")
    assert sorted(
        (p["account"], p["asset"], p["amount"], p["balance_after"]) for p in option["postings"]
    ) == sorted(
        [
            (ALICE, CALL, "1.00", "1.00"),
            (ALICE, "USDC", "-1505.25", "8494.7479"),
            ("system:fees", "USDC", "10.50", "35.7336"),
            (BOB, CALL, "-1.00", "-1.00"),
            (BOB, "USDC", "1494.75", "28993.1435"),
        ]
    )
    # The text receipt, and a retry with the same --key writes nothing.
    buy = order(cli, tmp_path / "b.json", "alice", ALICE, "buy", "0.002", PERP, "70000")
    sell = order(cli, tmp_path / "s.json", "bob", BOB, "sell", "0.002", PERP, "70000")
    fill = ("fill", buy, sell, "--price", "70000", "--size", "0.001", "--key", "f-1")
    seq = receipt_line(cli.ok(*fill), "fill")
    assert cli.ok(*fill).endswith(" fill (already recorded with this key; nothing written)\n")
    assert cli.head().seq == seq
    audit_intact(cli)


def test_tx_of_a_fill_shows_the_receipts_amounts(cli: Cli, tmp_path: Path) -> None:
    receipt = json.loads(open_long(cli, tmp_path, "--json"))
    tx = json.loads(cli.ok("tx", str(receipt["seq"])))
    assert tx["postings"] == receipt["postings"]


def test_history_of_other_assets_uses_their_decimals(cli: Cli, tmp_path: Path) -> None:
    open_long(cli, tmp_path)
    cli.ok("deposit", ALICE, "0.5", "--asset", "BTC")
    for asset in (PERP, "BTC"):
        lines = cli.json("history", ALICE, "--asset", asset)["lines"]
        assert [(line["amount"], line["balance"]) for line in lines] == [("0.50", "0.50")]


def test_history_of_a_fill_names_each_counterparty_once(cli: Cli, tmp_path: Path) -> None:
    open_long(cli, tmp_path)
    (line,) = cli.json("history", ALICE, "--asset", PERP)["lines"]
    assert line["counterparty"].split() == ["system:fees", BOB]


# --------------------------------------------------------------------------- 6. liquidation
def crash_setup(cli: Cli, tmp_path: Path) -> None:
    """ALICE (1,000 USDC) buys 0.5 BTC-USD-PERP from BOB at 69,965, the mark, with the
    index at 70,000: a premium of exactly -0.05%, so the funding rate is 0 and the next
    tick accrues nothing. ALICE: USDC 1000 - 15.742125 = 984.257875, MMR 365.567125."""
    cli.ok("deposit", ALICE, "1000")
    cli.ok("deposit", BOB, "10000")
    cli.ok("prices", "BTC:index=70000", f"{PERP}:mark=69965")
    buy = order(cli, tmp_path / "buy.json", "alice", ALICE, "buy", "0.5", PERP, "70000")
    sell = order(cli, tmp_path / "sell.json", "bob", BOB, "sell", "0.5", PERP, "69900")
    cli.ok("fill", buy, sell, "--price", "69965", "--size", "0.5")
    margin = cli.json("margin", ALICE)
    assert (margin["usdc"], margin["maintenance_margin"]) == ("984.257875", "365.567125")


# After the crash to 68,500: ALICE's AV = 984.257875 - 0.5 x 1,465 = 251.757875 against an
# MMR of 0.5 x 68,500 x 1.045% = 357.9125. Taking 80% leaves MMR 71.5825 and AV
# 251.757875 - 0.8 x 70% x 357.9125 = 51.32, still over 90%: the whole position goes to
# system:insurance at the mark, ALICE realises -732.50 against system:clearing and pays
# the penalty 70% x 357.9125 = 250.53875 to the insurance fund.
LIQUIDATION_POSTINGS = [
    {"account": "system:insurance", "asset": PERP, "amount": "0.50", "balance_after": "0.50"},
    {"account": "system:clearing", "asset": "USDC", "amount": "732.50", "balance_after": "732.50"},
    {"account": ALICE, "asset": "USDC", "amount": "-983.03875", "balance_after": "1.219125"},
    {"account": ALICE, "asset": PERP, "amount": "-0.50", "balance_after": "0.00"},
    {
        "account": "system:insurance",
        "asset": "USDC",
        "amount": "250.53875",
        "balance_after": "250.53875",
    },
]


def assert_liquidation_receipt(receipt: dict[str, Any], seq: int) -> None:
    assert (receipt["seq"], receipt["kind"], receipt["duplicate"]) == (seq, "liquidation", False)
    assert receipt["postings"] == LIQUIDATION_POSTINGS


def assert_liquidated(cli: Cli) -> None:
    """ALICE's position is gone, BOB's untouched, nobody is left to liquidate."""
    after = cli.json("margin", ALICE)
    assert (after["positions"], after["usdc"], after["liquidatable"]) == ([], "1.219125", False)
    bob = cli.json("margin", BOB)  # the winning short is left alone
    assert [(p["size"], p["unrealised_pnl"]) for p in bob["positions"]] == [("-0.50", "732.50")]
    assert cli.ok("liquidate") == "no account is under its maintenance margin\n"


def test_prices_liquidate_accounts_under_maintenance_margin(cli: Cli, tmp_path: Path) -> None:
    crash_setup(cli, tmp_path)
    seq = cli.head().seq
    out = cli.ok("prices", "BTC:index=68500", f"{PERP}:mark=68500")
    price_update, liquidation = out.splitlines(keepends=True)
    assert receipt_line(price_update, "price_update") == seq + 1
    assert receipt_line(liquidation, "liquidation") == seq + 2
    with Ledger(cli.url) as book:
        tx = book.transaction(seq + 2)
    assert json.loads(tx.metadata)["account"] == ALICE
    assert [(p.account, p.asset, p.amount) for p in tx.postings] == [
        ("system:insurance", PERP, 50_000_000),
        ("system:clearing", "USDC", 732_500_000),
        (ALICE, "USDC", -983_038_750),
        (ALICE, PERP, -50_000_000),
        ("system:insurance", "USDC", 250_538_750),
    ]
    assert_liquidated(cli)
    audit_intact(cli)


def test_prices_json_prints_the_liquidation_receipt(cli: Cli, tmp_path: Path) -> None:
    crash_setup(cli, tmp_path)
    seq = cli.head().seq
    docs = json_documents(cli.ok("prices", "BTC:index=68500", f"{PERP}:mark=68500", "--json"))
    assert [(d["seq"], d["kind"]) for d in docs] == [
        (seq + 1, "price_update"),
        (seq + 2, "liquidation"),
    ]
    assert docs[0]["postings"] == []
    assert_liquidation_receipt(docs[1], seq + 2)
    assert_liquidated(cli)
    audit_intact(cli)


def test_no_liquidate_leaves_it_to_ledger_liquidate(cli: Cli, tmp_path: Path) -> None:
    crash_setup(cli, tmp_path)
    seq = cli.head().seq
    out = cli.ok("prices", "BTC:index=68500", f"{PERP}:mark=68500", "--no-liquidate")
    assert receipt_line(out, "price_update") == seq + 1
    margin = cli.json("margin", ALICE)
    assert (margin["account_value"], margin["maintenance_margin"], margin["liquidatable"]) == (
        "251.757875",
        "357.9125",
        True,
    )
    assert margin["margin_ratio"] == "142.17%"
    assert (
        f"  {'margin ratio':<20}{'142.17%':>20}  LIQUIDATABLE"
        in cli.ok("margin", ALICE).splitlines()
    )
    assert_refused(cli("liquidate", BOB), f"{BOB} is not liquidatable")
    docs = json_documents(cli.ok("liquidate", "--json"))
    assert len(docs) == 1
    assert_liquidation_receipt(docs[0], seq + 2)
    assert_liquidated(cli)
    assert_refused(cli("liquidate", ALICE), f"{ALICE} is not liquidatable")
    audit_intact(cli)


def test_liquidate_one_account(cli: Cli, tmp_path: Path) -> None:
    crash_setup(cli, tmp_path)
    seq = cli.head().seq
    cli.ok("prices", "BTC:index=68500", f"{PERP}:mark=68500", "--no-liquidate")
    assert receipt_line(cli.ok("liquidate", ALICE), "liquidation") == seq + 2
    assert cli.json("margin", ALICE)["positions"] == []
    audit_intact(cli)


def test_prices_json_with_a_liquidation_is_one_json_document(cli: Cli, tmp_path: Path) -> None:
    crash_setup(cli, tmp_path)
    shown = json.loads(cli.ok("prices", "BTC:index=68500", f"{PERP}:mark=68500", "--json"))
    assert [r["kind"] for r in shown] == ["price_update", "liquidation"]


def test_funding_without_perp_positions_writes_nothing(cli: Cli) -> None:
    cli.ok("deposit", CAROL, "100")
    head = cli.head()
    for account in (CAROL, "0x" + "d4" * 20, "system:fees"):
        cli("funding", account)  # refused, or a message: either way no transaction
        assert cli.head() == head, account
