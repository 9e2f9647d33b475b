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
from pathlib import Path
from typing import NoReturn

from sqlalchemy.exc import DBAPIError

from ledger.chain.devnet import run_devnet
from ledger.cli_chain import register as register_chain
from ledger.cli_mirror import register as register_mirror
from ledger.cli_support import (
    iso,
    open_ledger,
    print_json,
    read_json,
    receipt_json,
    show_header,
    show_receipt,
    sign_or_submit,
)
from ledger.cli_trading import register as register_trading
from ledger.core import envelopes, genesis
from ledger.core.amounts import USDC, format_amount
from ledger.core.proofs import AccountProof
from ledger.demo import DEMO_OPERATOR, DemoConfig, SyntheticClock, run_demo
from ledger.errors import (
    InvalidConfig,
    InvalidProof,
    LedgerError,
    MalformedEnvelope,
    StoreNotInitialised,
)
from ledger.ledger import Ledger
from ledger.store.database import DEFAULT_URL, database_url
from ledger.store.sql import Receipt
from ledger.wallet import files
from ledger.wallet.actions import sign_action_file

DEMO_URL = "sqlite:///ledger-demo.db"
DEVNET_URL = "sqlite:///ledger-devnet.db"

Handler = Callable[[argparse.Namespace], int]


def cmd_init(args: argparse.Namespace) -> int:
    operator = files.open_operator(args.l1_chain_id, create=True)
    listing = None
    if args.instruments:
        try:
            listing = Path(args.instruments).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidConfig(f"{args.instruments}: cannot read: {exc.strerror}") from exc
    with Ledger.init(
        args.db, operator=operator, l2_chain_id=args.l2_chain_id, instruments=listing
    ) as book:
        print(
            f"ledger ready at {database_url(args.db)} (head seq {book.store.head().seq}); "
            f"operator {operator.address} ({files.operator_path()})"
        )
    return 0


def cmd_deposit(args: argparse.Namespace) -> int:
    with open_ledger(args, operator=True) as book:
        receipt = book.deposit(args.account, args.amount, key=args.key, asset=args.asset)
        show_receipt(receipt, args.json, book.assets())
    return 0


def cmd_withdraw(args: argparse.Namespace) -> int:
    return sign_or_submit(
        args,
        lambda book, wallet: wallet.withdraw(
            args.account, args.amount, book.domain, args.nonce, args.expiry
        ),
    )


def cmd_transfer(args: argparse.Namespace) -> int:
    return sign_or_submit(
        args,
        lambda book, wallet: wallet.transfer(
            args.source, args.target, args.amount, book.domain, args.nonce, args.expiry
        ),
    )


def cmd_onboard(args: argparse.Namespace) -> int:
    return sign_or_submit(args, lambda book, wallet: wallet.onboarding(book.domain))


def cmd_reverse(args: argparse.Namespace) -> int:
    with open_ledger(args, operator=True) as book:
        show_receipt(book.reverse(args.seq, reason=args.reason, key=args.key), args.json)
    return 0


def cmd_operator_add(args: argparse.Namespace) -> int:
    with open_ledger(args, operator=True) as book:
        show_receipt(book.add_operator(args.address), args.json)
    return 0


def cmd_wallet_new(args: argparse.Namespace) -> int:
    address = files.new_wallet_file(Path(args.out))
    print(f"{address.lower()}  (encrypted keystore {args.out})")
    return 0


def cmd_wallet_show(args: argparse.Namespace) -> int:
    wallet = files.open_wallet(Path(args.file), args.l1_chain_id)
    shown = {
        "l1_address": wallet.address,
        "stark_public_key": f"{wallet.stark_public_key:#x}",
        "l2_address": f"{wallet.stark_account:#x}",
        "l1_chain_id": wallet.l1_chain_id,
    }
    if args.json:
        print_json(shown)
    else:
        for name, value in shown.items():
            print(f"{name:>17}  {value}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    action = read_json(args.file)
    wallet = files.open_wallet(Path(args.keystore), args.l1_chain_id)
    print_json(sign_action_file(action, wallet, genesis.l2_domain(args.l2_chain_id)))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    envelope = read_json(args.file)
    domain = genesis.l2_domain(args.l2_chain_id)
    try:
        if isinstance(envelope, dict) and envelope.get("format") == envelopes.ONBOARDING_FORMAT:
            auth, _ = envelopes.verify_onboarding(envelope, domain, args.l1_chain_id)
            what = f"onboarding of {auth.signer}"
        else:
            verified = envelopes.verify_action(envelope, domain)
            # Offline, the L2 key's binding to the owner cannot be checked: submit does.
            what = (
                f"{verified.action} by {verified.owner} (nonce {verified.auth.nonce}, "
                f"L2 key {verified.auth.stark_key:#x})"
            )
    except LedgerError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    print(f"valid: {what}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    envelope = read_json(args.file)
    if not isinstance(envelope, dict):
        raise MalformedEnvelope(f"{args.file} does not hold a JSON object")
    with open_ledger(args) as book:
        show_receipt(book.submit_signed(envelope), args.json)
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    with open_ledger(args) as book:
        balance = book.balance(args.account, args.asset, args.at_seq)
    if args.json:
        print_json(balance.to_json())
    else:
        print(
            f"{balance.account}  {format_amount(balance.units, balance.asset)} "
            f"{balance.asset.code}  (as of seq {balance.seq})"
        )
    return 0


HISTORY_COLUMNS = ("seq", "recorded_at", "kind", "amount", "balance", "counterparty", "key")


def cmd_history(args: argparse.Namespace) -> int:
    with open_ledger(args) as book:
        lines = book.history(args.account, args.asset)
        balance = book.balance(args.account, args.asset)
        account, asset = balance.account, balance.asset
    rows = [
        {
            "seq": line.seq,
            "recorded_at": iso(line.recorded_at),
            "kind": line.kind,
            "amount": format_amount(line.amount, asset),
            "balance": format_amount(line.balance_after, asset),
            "counterparty": " ".join(line.counterparties),
            "key": line.key,
        }
        for line in lines
    ]
    if args.json:
        print_json({"account": account, "asset": args.asset, "lines": rows})
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
    with open_ledger(args) as book:
        receipt = Receipt(book.transaction(args.seq))
        shown = receipt_json(receipt, book.assets())
    print_json(shown | {"prev_hash": "0x" + receipt.tx.prev_hash.hex()})
    return 0


def cmd_seal(args: argparse.Namespace) -> int:
    with open_ledger(args, operator=True) as book:
        show_header(book.seal(), args.json)
    return 0


def cmd_block(args: argparse.Namespace) -> int:
    with open_ledger(args) as book:
        show_header(book.block(args.number), args.json)
    return 0


def cmd_proof(args: argparse.Namespace) -> int:
    with open_ledger(args) as book:
        print_json(book.proof(args.account, args.asset, args.block).to_json())
    return 0


def cmd_withdrawal_proof(args: argparse.Namespace) -> int:
    with open_ledger(args) as book:
        print_json(book.withdrawal_proof(args.seq).to_json())
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
    with open_ledger(args) as book:
        progress = _progress_bar if sys.stderr.isatty() and not args.json else None
        report = book.audit(progress)
    if args.json:
        print_json(report.to_json())
    elif report.ok:
        print(
            f"intact: {report.transactions} transactions and {report.blocks} blocks replayed "
            f"from genesis; head seq {report.head_seq} hash 0x{report.head_hash.hex()}"
        )
    if report.divergence is not None:
        print(report.divergence.describe(), file=sys.stderr)
        return 1
    return 0


def _refuse_non_empty(url: str, job: str = "demo", default: str = DEMO_URL) -> None:
    try:
        with Ledger(url) as book:
            if book.store.head().seq:
                raise LedgerError(
                    f"the {job} needs an empty ledger, and {url} has transactions; "
                    f"omit --db to use a fresh {default.removeprefix('sqlite:///')}"
                )
    except StoreNotInitialised:
        return


def cmd_demo(args: argparse.Namespace) -> int:
    explicit = args.db or os.environ.get("LEDGER_DB_URL")
    url = explicit or DEMO_URL
    if not explicit:
        Path("ledger-demo.db").unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path("ledger-demo.db" + suffix).unlink(missing_ok=True)
    else:
        _refuse_non_empty(url)
    clock = SyntheticClock()
    book = Ledger.init(url, operator=DEMO_OPERATOR, clock=clock)
    with book:
        summary = run_demo(
            book,
            DemoConfig(args.accounts, args.transactions, args.seed),
            lambda message: print(message, file=sys.stderr),
            clock.advance,
        )
    if args.json:
        print_json(summary)
    else:
        print(f"demo ledger: {database_url(url)}")
        for name, value in summary.items():
            print(f"{name:>22}  {value}")
    return 0 if summary["audit_ok"] and summary["proof_valid"] else 1


def cmd_devnet(args: argparse.Namespace) -> int:
    explicit = args.db or os.environ.get("LEDGER_DB_URL")
    url = explicit or DEVNET_URL
    path = Path(DEVNET_URL.removeprefix("sqlite:///"))
    if explicit:
        _refuse_non_empty(url, "devnet", DEVNET_URL)
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    summary = run_devnet(
        url, args.rpc_url, args.confirmations, lambda message: print(message, file=sys.stderr)
    )
    if args.json:
        print_json(summary)
    else:
        print(
            f"devnet ledger: {database_url(url)}" + ("" if args.keep or explicit else " (removed)")
        )
        for name, value in summary.items():
            print(f"{name:>18}  {value}")
    if not (args.keep or explicit):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return 0 if summary["audit_ok"] and summary["reconciled"] else 1


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

    def chain_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--l1-chain-id",
            type=int,
            default=genesis.DEFAULT_L1_CHAIN_ID,
            help="chain id of the EIP-712 domain (L1)",
        )
        sub.add_argument(
            "--l2-chain-id",
            default=genesis.DEFAULT_L2_CHAIN_ID,
            help="chainId of the SNIP-12 domain (L2)",
        )

    def signed_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--keystore", required=True, help="the owner's wallet keystore")
        sub.add_argument(
            "--sign-only",
            action="store_true",
            help="print the signed envelope instead of submitting it",
        )
        sub.add_argument("--nonce", type=int, help="default: milliseconds since the epoch")
        sub.add_argument("--expiry", type=int, help="unix seconds; default: in one hour")
        json_flag(sub)

    sub = command("init", cmd_init, "create the schema and genesis (operator key, chain ids)")
    chain_flags(sub)
    sub.add_argument(
        "--instruments", help="instrument configuration (TOML); default: the shipped one"
    )
    sub = command("deposit", cmd_deposit, "credit USDC arriving from outside (operator-signed)")
    sub.add_argument("account")
    sub.add_argument("amount", help="decimal USDC, e.g. 100.25")
    sub.add_argument("--asset", default=USDC.code, help="USDC, or a spot base asset (BTC)")
    write_flags(sub)
    sub = command("withdraw", cmd_withdraw, "debit USDC leaving the venue (owner-signed)")
    sub.add_argument("account")
    sub.add_argument("amount", help="decimal USDC")
    signed_flags(sub)
    sub = command("transfer", cmd_transfer, "move USDC between accounts (owner-signed)")
    sub.add_argument("source")
    sub.add_argument("target")
    sub.add_argument("amount", help="decimal USDC")
    signed_flags(sub)
    sub = command("onboard", cmd_onboard, "bind a wallet's L1 address to its L2 key")
    signed_flags(sub)
    wallet = commands.add_parser("wallet", help="create or show a wallet keystore")
    wallet_commands = wallet.add_subparsers(dest="wallet_command", required=True, metavar="COMMAND")
    sub = wallet_commands.add_parser("new", help="create an encrypted keystore", parents=[common])
    sub.add_argument("--out", default="wallet.json")
    sub.set_defaults(handler=cmd_wallet_new)
    sub = wallet_commands.add_parser(
        "show", help="L1 address, L2 key and address", parents=[common]
    )
    sub.add_argument("file")
    sub.add_argument("--l1-chain-id", type=int, default=genesis.DEFAULT_L1_CHAIN_ID)
    json_flag(sub)
    sub.set_defaults(handler=cmd_wallet_show)
    sub = command("operator-add", cmd_operator_add, "register another operator key (signed)")
    sub.add_argument("address")
    json_flag(sub)
    sub = command("sign", cmd_sign, "sign an action file (JSON) and print the envelope")
    sub.add_argument("file")
    sub.add_argument("--keystore", required=True)
    chain_flags(sub)
    sub = command("verify", cmd_verify, "verify a signed envelope offline (exit 0 valid, 1 not)")
    sub.add_argument("file")
    chain_flags(sub)
    sub = command("submit", cmd_submit, "verify a signed envelope and apply it")
    sub.add_argument("file")
    json_flag(sub)
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
    sub = command(
        "withdrawal-proof", cmd_withdrawal_proof, "the vault claim proof of a sealed withdrawal"
    )
    sub.add_argument("seq", type=int)
    sub = command("verify-proof", cmd_verify_proof, "verify a proof file offline")
    sub.add_argument("file")
    json_flag(command("audit", cmd_audit, "replay from genesis and verify everything"))
    register_trading(command, json_flag, write_flags, signed_flags)
    register_chain(command, json_flag)
    mirror_parser = commands.add_parser(
        "mirror", help="the StarkNet balance mirror: authorize, revoke, sync, status"
    )
    mirror_commands = mirror_parser.add_subparsers(
        dest="mirror_command", required=True, metavar="COMMAND"
    )

    def mirror_command(name: str, help_text: str) -> argparse.ArgumentParser:
        return mirror_commands.add_parser(
            name, help=help_text, description=help_text, parents=[common]
        )

    register_mirror(mirror_command, signed_flags, json_flag)
    sub = command(
        "devnet", cmd_devnet, "the venue end to end on a local EVM devnet: settle and reconcile"
    )
    sub.add_argument("--rpc-url", help="a JSON-RPC node (e.g. anvil); default: in-process py-evm")
    sub.add_argument("--confirmations", type=int, default=0, help="deposit depth to wait for")
    sub.add_argument("--keep", action="store_true", help=f"keep {DEVNET_URL} afterwards")
    json_flag(sub)
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
