"""Output and plumbing shared by the ``ledger`` commands."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.core.amounts import USDC, Asset, format_amount
from ledger.core.blocks import BlockHeader
from ledger.errors import MalformedEnvelope
from ledger.ledger import Ledger
from ledger.store.sql import Receipt
from ledger.wallet import files
from ledger.wallet.signer import Wallet

# How the command modules register their sub-commands on the ``ledger`` parser.
Command = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]
Flags = Callable[[argparse.ArgumentParser], None]


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC).isoformat(timespec="milliseconds")


def receipt_json(receipt: Receipt, assets: Mapping[str, Asset] | None = None) -> dict[str, Any]:
    """JSON form of a receipt (``--json`` on write commands); amounts in each asset's
    decimals (``assets``; default USDC's)."""
    tx = receipt.tx

    def amount(units: int, code: str) -> str:
        return format_amount(units, assets[code] if assets and code in assets else USDC)

    return {
        "seq": tx.seq,
        "hash": "0x" + tx.hash.hex(),
        "kind": tx.kind,
        "key": tx.key,
        "duplicate": receipt.duplicate,
        "recorded_at": iso(tx.recorded_at),
        "postings": [
            {
                "account": p.account,
                "asset": p.asset,
                "amount": amount(p.amount, p.asset),
                "balance_after": amount(p.balance_after, p.asset),
            }
            for p in tx.postings
        ],
    }


def show_receipt(
    receipt: Receipt, as_json: bool, assets: Mapping[str, Asset] | None = None
) -> None:
    if as_json:
        print_json(receipt_json(receipt, assets))
        return
    note = " (already recorded with this key; nothing written)" if receipt.duplicate else ""
    print(f"seq {receipt.seq} hash 0x{receipt.hash.hex()} {receipt.tx.kind}{note}")


def show_receipts(
    receipts: list[Receipt], as_json: bool, assets: Mapping[str, Asset] | None = None
) -> None:
    """Several receipts: one JSON array (possibly empty), or one line each."""
    if as_json:
        print_json([receipt_json(receipt, assets) for receipt in receipts])
        return
    for receipt in receipts:
        show_receipt(receipt, False)


def show_header(header: BlockHeader, as_json: bool) -> None:
    if as_json:
        print_json(header.to_json())
        return
    for name, value in header.to_json().items():
        print(f"{name:>16}  {value}")


def open_ledger(args: argparse.Namespace, operator: bool = False) -> Ledger:
    """The ledger at ``--db``, with the operator key when the command writes system events."""
    book = Ledger(args.db)
    if operator:
        book.operator = files.open_operator(book.l1_chain_id)
    return book


def read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise MalformedEnvelope(f"cannot read {path}: {exc}") from exc


def sign_or_submit(
    args: argparse.Namespace, sign: Callable[[Ledger, Wallet], dict[str, Any]]
) -> int:
    """Sign an owner's action with ``--keystore``; print it (``--sign-only``) or apply it."""
    with open_ledger(args) as book:
        wallet = files.open_wallet(Path(args.keystore), book.l1_chain_id)
        envelope = sign(book, wallet)
        if args.sign_only:
            print_json(envelope)
        else:
            show_receipt(book.submit_signed(envelope), args.json)
    return 0
