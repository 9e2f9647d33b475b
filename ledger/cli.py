"""``ledger`` command line. Every error is one line on stderr and a non-zero exit.

Exit codes: 0 success; 1 a check failed (audit divergence, invalid proof);
2 the command was refused (bad input, insufficient funds, conflict, ...).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.exc import DBAPIError

from ledger.core.amounts import USDC, format_amount
from ledger.core.blocks import BlockHeader
from ledger.core.proofs import AccountProof
from ledger.demo import DemoConfig, SyntheticClock, run_demo
from ledger.errors import InvalidProof, LedgerError
from ledger.ledger import Ledger
from ledger.store.database import DEFAULT_URL, database_url
from ledger.store.sql import Receipt

DEMO_URL = "sqlite:///ledger-demo.db"

Handler = Callable[[argparse.Namespace], int]


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc).isoformat(
        timespec="milliseconds"
    )


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    """JSON form of a receipt (``--json`` on write commands)."""
    tx = receipt.tx
    return {
        "seq": tx.seq,
        "hash": "0x" + tx.hash.hex(),
        "kind": tx.kind,
        "key": tx.key,
        "duplicate": receipt.duplicate,
        "recorded_at": _iso(tx.recorded_at),
        "postings": [
            {
                "account": p.account,
                "asset": p.asset,
                "amount": format_amount(p.amount),
                "balance_after": format_amount(p.balance_after),
            }
            for p in tx.postings
        ],
    }


def _show_receipt(receipt: Receipt, as_json: bool) -> None:
    if as_json:
        _print_json(receipt_json(receipt))
        return
    note = " (already recorded with this key; nothing written)" if receipt.duplicate else ""
    print(f"seq {receipt.seq} hash 0x{receipt.hash.hex()} {receipt.tx.kind}{note}")


def _show_header(header: BlockHeader, as_json: bool) -> None:
    if as_json:
        _print_json(header.to_json())
        return
    for name, value in header.to_json().items():
        print(f"{name:>16}  {value}")


def _open(args: argparse.Namespace) -> Ledger:
    return Ledger(args.db)


def cmd_init(args: argparse.Namespace) -> int:
    with Ledger.init(args.db) as book:
        print(f"ledger ready at {database_url(args.db)} (head seq {book.store.head().seq})")
    return 0


def cmd_deposit(args: argparse.Namespace) -> int:
    with _open(args) as book:
        _show_receipt(book.deposit(args.account, args.amount, key=args.key), args.json)
    return 0


def cmd_withdraw(args: argparse.Namespace) -> int:
    with _open(args) as book:
        _show_receipt(book.withdraw(args.account, args.amount, key=args.key), args.json)
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    with _open(args) as book:
        receipt = book.transfer(args.source, args.target, args.amount, key=args.key)
        _show_receipt(receipt, args.json)
    return 0


def cmd_reverse(args: argparse.Namespace) -> int:
    with _open(args) as book:
        _show_receipt(book.reverse(args.seq, reason=args.reason, key=args.key), args.json)
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    with _open(args) as book:
        balance = book.balance(args.account, args.asset, args.at_seq)
    if args.json:
        _print_json(balance.to_json())
    else:
        print(
            f"{balance.account}  {format_amount(balance.units, balance.asset)} "
            f"{balance.asset.code}  (as of seq {balance.seq})"
        )
    return 0


HISTORY_COLUMNS = ("seq", "recorded_at", "kind", "amount", "balance", "counterparty", "key")


def cmd_history(args: argparse.Namespace) -> int:
    with _open(args) as book:
        lines = book.history(args.account, args.asset)
        account = book.balance(args.account, args.asset).account
    rows = [
        {
            "seq": line.seq,
            "recorded_at": _iso(line.recorded_at),
            "kind": line.kind,
            "amount": format_amount(line.amount),
            "balance": format_amount(line.balance_after),
            "counterparty": " ".join(line.counterparties),
            "key": line.key,
        }
        for line in lines
    ]
    if args.json:
        _print_json({"account": account, "asset": args.asset, "lines": rows})
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(f"statement of {account} ({args.asset})")
        print(
            f"{'seq':>8}  {'recorded (UTC)':<29} {'kind':<11} {'amount':>18} {'balance':>18}  "
            "counterparty"
        )
        for row in rows:
            print(
                f"{row['seq']:>8}  {row['recorded_at']:<29} {row['kind']:<11} "
                f"{row['amount']:>18} {row['balance']:>18}  {row['counterparty']}"
            )
    return 0


def cmd_tx(args: argparse.Namespace) -> int:
    with _open(args) as book:
        receipt = Receipt(book.transaction(args.seq))
    _print_json(receipt_json(receipt) | {"prev_hash": "0x" + receipt.tx.prev_hash.hex()})
    return 0


def cmd_seal(args: argparse.Namespace) -> int:
    with _open(args) as book:
        _show_header(book.seal(), args.json)
    return 0


def cmd_block(args: argparse.Namespace) -> int:
    with _open(args) as book:
        _show_header(book.block(args.number), args.json)
    return 0


def cmd_proof(args: argparse.Namespace) -> int:
    with _open(args) as book:
        _print_json(book.proof(args.account, args.asset, args.block).to_json())
    return 0


def cmd_verify_proof(args: argparse.Namespace) -> int:
    try:
        data = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidProof(f"cannot read proof {args.file}: {exc}") from exc
    proof = AccountProof.from_json(data)
    valid, reason = proof.verify()
    if not valid:
        print(f"invalid: {reason}", file=sys.stderr)
        return 1
    print(
        f"valid: {proof.account} holds {format_amount(proof.balance, proof.asset)} "
        f"{proof.asset.code} in block {proof.block.number} "
        f"(state root 0x{proof.block.state_root.hex()})"
    )
    return 0


def _progress_bar(done: int, total: int) -> None:
    width = 40
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\raudit [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def cmd_audit(args: argparse.Namespace) -> int:
    with _open(args) as book:
        progress = _progress_bar if sys.stderr.isatty() and not args.json else None
        report = book.audit(progress)
    if args.json:
        _print_json(report.to_json())
    elif report.ok:
        print(
            f"intact: {report.transactions} transactions and {report.blocks} blocks replayed "
            f"from genesis; head seq {report.head_seq} hash 0x{report.head_hash.hex()}"
        )
    if report.divergence is not None:
        print(report.divergence.describe(), file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    explicit = args.db or os.environ.get("LEDGER_DB_URL")
    url = explicit or DEMO_URL
    if not explicit:
        Path("ledger-demo.db").unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path("ledger-demo.db" + suffix).unlink(missing_ok=True)
    book = Ledger.init(url, clock=SyntheticClock())
    with book:
        if book.store.head().seq != 0:
            raise LedgerError(
                f"the demo needs an empty ledger, and {url} has transactions; "
                "omit --db to use a fresh ledger-demo.db"
            )
        summary = run_demo(
            book,
            DemoConfig(args.accounts, args.transactions, args.seed),
            lambda message: print(message, file=sys.stderr),
        )
    if args.json:
        _print_json(summary)
    else:
        print(f"demo ledger: {database_url(url)}")
        for name, value in summary.items():
            print(f"{name:>22}  {value}")
    return 0 if summary["audit_ok"] and summary["proof_valid"] else 1


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``ledger`` argument parser."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        help=f"database URL (env LEDGER_DB_URL; default {DEFAULT_URL})",
    )
    parser = _Parser(
        prog="ledger", description="Hash-chained double-entry USDC ledger.", parents=[common]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=[common])
        sub.set_defaults(handler=handler)
        return sub

    def json_flag(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--json", action="store_true", help="print JSON")

    def write_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--key", help="idempotency key (a retry with it writes nothing)")
        json_flag(sub)

    command("init", cmd_init, "create or upgrade the database schema (runs the migrations)")
    sub = command("deposit", cmd_deposit, "credit USDC arriving from outside")
    sub.add_argument("account")
    sub.add_argument("amount", help="decimal USDC, e.g. 100.25")
    write_flags(sub)
    sub = command("withdraw", cmd_withdraw, "debit USDC leaving the venue")
    sub.add_argument("account")
    sub.add_argument("amount", help="decimal USDC")
    write_flags(sub)
    sub = command("transfer", cmd_transfer, "move USDC between accounts")
    sub.add_argument("source")
    sub.add_argument("target")
    sub.add_argument("amount", help="decimal USDC")
    write_flags(sub)
    sub = command("reverse", cmd_reverse, "post the exact opposite of a transaction")
    sub.add_argument("seq", type=int)
    sub.add_argument("--reason", required=True)
    write_flags(sub)
    sub = command("balance", cmd_balance, "an account's balance, now or at a sequence")
    sub.add_argument("account")
    sub.add_argument("--asset", default=USDC.code)
    sub.add_argument("--at-seq", type=int, dest="at_seq")
    json_flag(sub)
    sub = command("history", cmd_history, "an account statement with running balance")
    sub.add_argument("account")
    sub.add_argument("--asset", default=USDC.code)
    fmt = sub.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print CSV")
    sub = command("tx", cmd_tx, "one transaction as JSON")
    sub.add_argument("seq", type=int)
    json_flag(command("seal", cmd_seal, "seal pending transactions into a block"))
    sub = command("block", cmd_block, "show a block header (default: the newest)")
    sub.add_argument("number", type=int, nargs="?")
    json_flag(sub)
    sub = command("proof", cmd_proof, "Merkle inclusion proof of a balance (JSON)")
    sub.add_argument("account")
    sub.add_argument("--asset", default=USDC.code)
    sub.add_argument("--block", type=int)
    sub = command("verify-proof", cmd_verify_proof, "verify a proof file offline")
    sub.add_argument("file")
    json_flag(command("audit", cmd_audit, "replay from genesis and verify everything"))
    sub = command("demo", cmd_demo, "run a deterministic synthetic workload and audit it")
    sub.add_argument("--accounts", type=int, default=DemoConfig().accounts)
    sub.add_argument("--transactions", type=int, default=DemoConfig().transactions)
    sub.add_argument("--seed", type=int, default=DemoConfig().seed)
    json_flag(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ledger`` console script."""
    args = build_parser().parse_args(argv)
    if not hasattr(args, "db"):
        args.db = None
    try:
        code: int = args.handler(args)
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        print(f"error: database: {detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
