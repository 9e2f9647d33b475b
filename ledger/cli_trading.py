"""The trading commands of ``ledger``: prices, orders, fills, margin modes, funding,
expiry settlement, liquidation, and the margin view with what-if."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ledger.cli_support import (
    Command,
    Flags,
    open_ledger,
    print_json,
    read_json,
    show_receipt,
    show_receipts,
    sign_or_submit,
)
from ledger.core.amounts import USDC, Asset, format_amount
from ledger.errors import InvalidMarketEvent, MalformedEnvelope
from ledger.ledger import Ledger
from ledger.trading.state import MAX_LEVERAGE, MODES
from ledger.trading.valuation import AccountSummary
from ledger.wallet import files


def _usdc(units: int) -> str:
    return format_amount(units, USDC)


def _scaled(units: int, scale: int) -> str:
    return format_amount(units, Asset("SIZE", len(str(scale)) - 1))


def summary_json(
    book: Ledger, summary: AccountSummary, liquidation: dict[str, list[int]] | None
) -> dict[str, Any]:
    """The JSON form of a margin summary (``ledger margin --json``)."""
    assets = book.assets()
    ratio = summary.margin_ratio
    out: dict[str, Any] = {
        "account": summary.account,
        "mode": summary.mode,
        "leverage": summary.leverage,
        "usdc": _usdc(summary.usdc),
        "mirrored_collateral": _usdc(summary.mirrored),
        "account_value": _usdc(summary.value),
        "initial_margin": _usdc(summary.im),
        "maintenance_margin": _usdc(summary.mm),
        "free_collateral": _usdc(summary.free_collateral),
        "max_withdrawable": _usdc(summary.max_withdrawable),
        "margin_ratio": None
        if ratio is None
        else ("inf" if summary.value <= 0 else f"{float(ratio) * 100:.2f}%"),
        "liquidatable": summary.liquidatable,
        "positions": [
            {
                "instrument": p.instrument,
                "kind": p.kind,
                "size": format_amount(p.size, assets[p.instrument]),
                "mark": _usdc(p.mark),
                "entry_price": _usdc(p.cost * 10 ** assets[p.instrument].scale // p.size),
                "unrealised_pnl": _usdc(p.unrealised),
                "accrued_funding": _usdc(p.funding),
            }
            for p in summary.positions
        ],
        "spot": [
            {"asset": code, "quantity": format_amount(qty, assets[code])}
            for code, qty in summary.spot
        ],
    }
    if liquidation is not None:
        out["liquidation_prices"] = {u: [_usdc(p) for p in ps] for u, ps in liquidation.items()}
    risks = []
    for risk in summary.risks:
        item: dict[str, Any] = {
            "underlying": risk.underlying,
            "index": _usdc(risk.index),
            "initial_margin": _usdc(risk.requirement.im),
            "maintenance_margin": _usdc(risk.requirement.mm),
        }
        if risk.scan is not None and risk.scan.scenario is not None:
            sc = risk.scan.scenario
            item["worst_scenario"] = {
                "index": risk.scan.scenario_index,
                "spot_move": f"{float(sc.spot_move) * 100:+g}%",
                "vol_shock": f"{float(sc.vol_shock) * 100:+g}%",
                "weighted_loss": _usdc(int(risk.scan.loss)),
            }
        if risk.scenario_pnl:
            item["scenario_pnl"] = [_usdc(int(pnl)) for pnl in risk.scenario_pnl]
        risks.append(item)
    out["underlyings"] = risks
    return out


def _print_summary(data: dict[str, Any]) -> None:
    print(f"account {data['account']}  mode {data['mode']}  leverage {data['leverage']}")
    for label, key in (
        ("USDC balance", "usdc"),
        *(
            [("mirrored L2 USDC", "mirrored_collateral")]
            if data["mirrored_collateral"] != "0.00"
            else []
        ),
        ("account value", "account_value"),
        ("initial margin", "initial_margin"),
        ("maintenance margin", "maintenance_margin"),
        ("free collateral", "free_collateral"),
        ("max withdrawable", "max_withdrawable"),
    ):
        print(f"  {label:<20}{data[key]:>20} USDC")
    ratio = data["margin_ratio"] or "-"
    flag = "  LIQUIDATABLE" if data["liquidatable"] else ""
    print(f"  {'margin ratio':<20}{ratio:>20}{flag}")
    for p in data["positions"]:
        print(
            f"  {p['instrument']}  size {p['size']}  mark {p['mark']}  entry {p['entry_price']}"
            f"  uPnL {p['unrealised_pnl']}  funding {p['accrued_funding']}"
        )
    for s in data["spot"]:
        print(f"  spot {s['asset']}  {s['quantity']}")
    for underlying, prices in data.get("liquidation_prices", {}).items():
        shown = ", ".join(prices) if prices else "none between 5% and 500% of the index"
        print(f"  liquidation price ({underlying} index): {shown}")
    for risk in data["underlyings"]:
        worst = risk.get("worst_scenario")
        if worst:
            print(
                f"  {risk['underlying']} worst scenario #{worst['index']}: spot "
                f"{worst['spot_move']}, vol {worst['vol_shock']}, loss {worst['weighted_loss']}"
            )
        if "scenario_pnl" in risk:
            print(f"  {risk['underlying']} scenario PnL: " + " ".join(risk["scenario_pnl"]))


def cmd_margin(args: argparse.Namespace) -> int:
    with open_ledger(args) as book:
        summary = book.margin(args.account, args.what_if)
        liquidation = None if args.what_if else book.liquidation_prices(args.account)
        data = summary_json(book, summary, liquidation)
    if args.json:
        print_json(data)
    else:
        if args.what_if:
            print(f"what if: {args.what_if} (nothing written)")
        _print_summary(data)
    return 0


def _price_arg(text: str) -> tuple[str, str, str]:
    name, _, rest = text.partition(":")
    field, _, value = rest.partition("=")
    if not name or field not in ("index", "mark", "iv") or not value:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write NAME:index=PRICE, NAME:mark=PRICE or NAME:iv=0.55"
        )
    return name, field, value


def cmd_prices(args: argparse.Namespace) -> int:
    prices: dict[str, dict[str, int | str]] = {}
    for name, field, value in args.price:
        if field in prices.setdefault(name, {}):
            raise InvalidMarketEvent(f"{name}:{field} is given twice")
        prices[name][field] = value
    with open_ledger(args, operator=True) as book:
        receipts = [book.publish_prices(prices, key=args.key)]
        if not args.no_liquidate:
            receipts += book.liquidate_all()
        show_receipts(receipts, args.json, book.assets())
    return 0


def cmd_order(args: argparse.Namespace) -> int:
    with open_ledger(args) as book:
        wallet = files.open_wallet(Path(args.keystore), book.l1_chain_id)
        envelope = book.sign_order(
            wallet,
            args.account,
            args.market,
            args.side,
            args.size,
            args.limit_price,
            nonce=args.nonce,
            expiry=args.expiry,
        )
    print_json(envelope)
    return 0


def cmd_fill(args: argparse.Namespace) -> int:
    buy, sell = read_json(args.buy), read_json(args.sell)
    if not isinstance(buy, dict) or not isinstance(sell, dict):
        raise MalformedEnvelope("the buy and sell files each hold a signed order (JSON object)")
    with open_ledger(args, operator=True) as book:
        receipt = book.fill(buy, sell, args.price, args.size, maker=args.maker, key=args.key)
        show_receipt(receipt, args.json, book.assets())
    return 0


def cmd_set_mode(args: argparse.Namespace) -> int:
    return sign_or_submit(
        args,
        lambda book, wallet: wallet.set_margin_mode(
            args.account, args.mode, args.leverage, book.domain, args.nonce, args.expiry
        ),
    )


def cmd_funding(args: argparse.Namespace) -> int:
    with open_ledger(args, operator=True) as book:
        show_receipt(book.realise_funding(args.account), args.json)
    return 0


def cmd_settle_expiry(args: argparse.Namespace) -> int:
    with open_ledger(args, operator=True) as book:
        receipts = book.settle_expiry(args.expiry, args.price, args.underlying)
        show_receipts(receipts, args.json, book.assets())
    return 0


def cmd_liquidate(args: argparse.Namespace) -> int:
    with open_ledger(args, operator=True) as book:
        receipts = [book.liquidate(args.account)] if args.account else book.liquidate_all()
        show_receipts(receipts, args.json, book.assets())
        if not receipts and not args.json:
            print("no account is under its maintenance margin")
    return 0


def _leverage(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_LEVERAGE:
        raise argparse.ArgumentTypeError(f"leverage must be 1..{MAX_LEVERAGE}")
    return value


def register(command: Command, json_flag: Flags, write_flags: Flags, signed_flags: Flags) -> None:
    """Add the trading commands to the ``ledger`` parser."""
    sub = command("margin", cmd_margin, "account value, margin, liquidation prices, what-if")
    sub.add_argument("account")
    sub.add_argument(
        "--what-if", help="a hypothetical fill, e.g. 'buy 2 BTC-USD-PERP @ 70000' (no write)"
    )
    json_flag(sub)
    sub = command("prices", cmd_prices, "publish index, mark and iv prices (operator-signed)")
    sub.add_argument(
        "price", nargs="+", type=_price_arg, help="NAME:index=P | NAME:mark=P | NAME:iv=0.55"
    )
    sub.add_argument(
        "--no-liquidate", action="store_true", help="do not liquidate accounts afterwards"
    )
    write_flags(sub)
    sub = command("order", cmd_order, "sign an order and print it (a fill carries two)")
    sub.add_argument("account")
    sub.add_argument("side", choices=("buy", "sell"))
    sub.add_argument("size", help="decimal size of the underlying, e.g. 0.5")
    sub.add_argument("market", help="e.g. BTC-USD-PERP, BTC/USDC, BTC-USD-20261225-80000-C")
    sub.add_argument("limit_price", metavar="limit-price", help="decimal USDC")
    sub.add_argument("--keystore", required=True)
    sub.add_argument("--nonce", type=int)
    sub.add_argument("--expiry", type=int, help="unix seconds; default: in one hour")
    sub = command("fill", cmd_fill, "match a signed buy and sell order (operator-signed)")
    sub.add_argument("buy", help="signed buy order (JSON file)")
    sub.add_argument("sell", help="signed sell order (JSON file)")
    sub.add_argument("--price", required=True, help="decimal USDC")
    sub.add_argument("--size", required=True, help="decimal size of the underlying")
    sub.add_argument("--maker", choices=("buy", "sell"), default="sell")
    write_flags(sub)
    sub = command("set-mode", cmd_set_mode, "set an account's margin mode (owner-signed)")
    sub.add_argument("account")
    sub.add_argument("mode", choices=MODES)
    sub.add_argument("--leverage", type=_leverage, default=MAX_LEVERAGE)
    signed_flags(sub)
    sub = command("funding", cmd_funding, "realise an account's accrued perp funding")
    sub.add_argument("account")
    json_flag(sub)
    sub = command("settle-expiry", cmd_settle_expiry, "cash-settle the options of an expiry")
    sub.add_argument("--expiry", required=True, help="YYYYMMDD")
    sub.add_argument("--price", required=True, help="settlement price, decimal USDC")
    sub.add_argument("--underlying", help="default: every underlying with that expiry")
    json_flag(sub)
    sub = command("liquidate", cmd_liquidate, "liquidate one account, or every one under MMR")
    sub.add_argument("account", nargs="?")
    json_flag(sub)
