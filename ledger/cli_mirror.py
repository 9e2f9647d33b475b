"""``ledger mirror``: opt in to (and out of) the StarkNet balance mirror with a signed
authorisation, sync it from a node, and show where each account stands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ledger.chain import mirror
from ledger.cli_support import Flags, open_ledger, print_json, sign_or_submit
from ledger.core.amounts import MIRROR_ASSET, format_amount


def cmd_authorize(args: argparse.Namespace) -> int:
    return sign_or_submit(
        args,
        lambda book, wallet: wallet.mirror(
            args.token, book.domain, revoke=False, nonce=args.nonce, expiry=args.expiry
        ),
    )


def cmd_revoke(args: argparse.Namespace) -> int:
    return sign_or_submit(
        args,
        lambda book, wallet: wallet.mirror(
            args.token, book.domain, revoke=True, nonce=args.nonce, expiry=args.expiry
        ),
    )


def cmd_sync(args: argparse.Namespace) -> int:
    with open_ledger(args, operator=True) as book:
        report = mirror.sync(
            book,
            args.rpc_url,
            args.token,
            from_block=args.from_block,
            confirmations=args.confirmations,
            chunk_size=args.chunk_size,
            log=lambda line: print(line, file=sys.stderr),
        )
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        reorg = report.reorg
        print_json(
            {
                "chain": report.chain,
                "token": report.token,
                "from_block": report.from_block,
                "to_block": report.to_block,
                "head": report.head,
                "opened": report.opened,
                "closed": report.closed,
                "events": report.events,
                "entries": report.entries,
                "reorg": None if reorg is None else _reorg(reorg),
            }
        )
    else:
        print(
            f"L2 blocks {report.from_block}..{report.to_block} (head {report.head}): "
            f"{report.opened} opened, {report.closed} closed, {report.events} transfers, "
            f"{report.entries} new entries"
        )
    return 0


def _reorg(reorg: mirror.Reorg) -> dict[str, int]:
    return {
        "detected_at": reorg.detected_at,
        "fork_block": reorg.fork_block,
        "rolled_back": reorg.rolled_back,
    }


def cmd_status(args: argparse.Namespace) -> int:
    with open_ledger(args) as book:
        rows = mirror.status(book, args.rpc_url, args.token)
    drifting = [r for r in rows if r.drift]
    if args.json:
        print_json([_status_json(r) for r in rows])
    else:
        for r in rows:
            print(_status_line(r))
        if not rows:
            print("no account has authorised the mirror")
    for r in drifting:
        assert r.drift is not None
        print(
            f"DRIFT: {r.account} mirrors {_units(r.balance)} but balance_of({r.l2_address}) "
            f"at block {r.as_of} is {_units(r.fresh or 0)} ({r.drift:+d} base units); "
            "not corrected: review the entries with `ledger history ACCOUNT --asset L2USDC`",
            file=sys.stderr,
        )
    return 1 if drifting else 0


def _units(amount: int) -> str:
    return f"{format_amount(amount, MIRROR_ASSET)} {MIRROR_ASSET.code}"


def _status_json(r: mirror.AccountStatus) -> dict[str, object]:
    return {
        "owner": r.owner,
        "account": r.account,
        "l2_address": r.l2_address,
        "authorized": r.authorized,
        "balance": str(r.balance),
        "as_of_block": r.as_of,
        "head": r.head,
        "behind": r.behind,
        "balance_of": None if r.fresh is None else str(r.fresh),
        "drift": None if r.drift is None else str(r.drift),
    }


def _status_line(r: mirror.AccountStatus) -> str:
    state = "authorised" if r.authorized else "revoked"
    where = "not yet synced" if r.as_of is None else f"as of L2 block {r.as_of}"
    if r.behind is not None:
        where += f" ({r.behind} behind head {r.head})"
    drift = "" if r.drift is None else f", drift {r.drift:+d}"
    return f"{r.account}  {_units(r.balance)}  {state}, {where}{drift}  (L2 {r.l2_address})"


def register(
    add: Callable[[str, str], argparse.ArgumentParser], signed_flags: Flags, json_flag: Flags
) -> None:
    """Add ``mirror authorize|revoke|sync|status`` (``add`` creates a sub-command)."""

    def token(sub: argparse.ArgumentParser, required: bool = True) -> None:
        sub.add_argument(
            "--token",
            required=required,
            help="the USDC token's StarkNet address (configuration: Sepolia has more than one)",
        )

    sub = add("authorize", "let the ledger mirror your L2 account's token balance (signed)")
    token(sub)
    signed_flags(sub)
    sub.set_defaults(handler=cmd_authorize)
    sub = add("revoke", "stop the mirror of your L2 account (signed)")
    token(sub)
    signed_flags(sub)
    sub.set_defaults(handler=cmd_revoke)
    sub = add("sync", "read authorised accounts' balances and transfers from a StarkNet node")
    sub.add_argument("--rpc-url", required=True, help="StarkNet JSON-RPC 0.10 node")
    token(sub)
    sub.add_argument("--from-block", type=int, help="first sync only; default: the head")
    sub.add_argument("--confirmations", type=int, default=mirror.DEFAULT_CONFIRMATIONS)
    sub.add_argument(
        "--chunk-size", type=int, default=mirror.DEFAULT_CHUNK_SIZE, help="events per page"
    )
    json_flag(sub)
    sub.set_defaults(handler=cmd_sync)
    sub = add("status", "mirrored balances, how far behind, and drift from balance_of")
    sub.add_argument("--rpc-url", help="a node to compare with (head, fresh balance_of)")
    token(sub, required=False)
    json_flag(sub)
    sub.set_defaults(handler=cmd_status)
