"""The chain commands of ``ledger``: deploy a vault, watch its deposits, settle blocks and
withdrawals on it, reconcile it. They talk to a JSON-RPC node (``--rpc-url``; anvil on a
devnet); the operator key (``LEDGER_OPERATOR_KEYSTORE``) signs the chain transactions."""

from __future__ import annotations

import argparse

from ledger.chain.settlement import commit_blocks, pay_withdrawals, reconcile
from ledger.chain.vault import Vault, connect, give_eth
from ledger.chain.watcher import sync
from ledger.cli_support import Command, Flags, open_ledger, print_json


def cmd_vault_deploy(args: argparse.Namespace) -> int:
    with open_ledger(args, operator=True) as book:
        assert book.operator is not None
        operator = book.operator.l1_account
        w3 = connect(args.rpc_url)
        if args.fund_from_node:
            give_eth(w3, w3.eth.accounts[0], operator.address)
        vault = Vault.deploy(w3, operator, operator.address)
    shown = {"chain_id": vault.chain_id, "vault": vault.vault.address, "usdc": vault.usdc.address}
    if args.json:
        print_json(shown)
    else:
        print(f"vault {shown['vault']}  usdc {shown['usdc']}  chain {shown['chain_id']}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    with open_ledger(args, operator=True) as book:
        vault = Vault.at(connect(args.rpc_url), args.vault)
        report = sync(book, vault, args.confirmations)
    print(
        f"blocks {report.from_block}..{report.to_block}: {report.deposits} deposits, "
        f"{report.credited} newly credited; {report.payouts} withdrawals finalised"
    )
    return 0


def cmd_settle(args: argparse.Namespace) -> int:
    with open_ledger(args, operator=True) as book:
        assert book.operator is not None
        operator = book.operator.l1_account
        vault = Vault.at(connect(args.rpc_url), args.vault)
        commits = commit_blocks(book, vault, operator)
        claims = pay_withdrawals(book, vault, operator) if args.pay else []
        finalised = sync(book, vault).payouts
    for header, gas in commits:
        print(f"block {header.number} committed (gas {gas})")
    for seq, gas in claims:
        print(f"withdrawal {seq} paid (gas {gas})")
    if finalised:
        print(f"{finalised} withdrawals finalised in the ledger")
    if not commits and not claims:
        print("nothing to settle: every sealed block is committed")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    with open_ledger(args, operator=True) as book:
        vault = Vault.at(connect(args.rpc_url), args.vault)
        sync(book, vault)  # every payout on chain recorded first
        result = reconcile(book, vault)
    print(result.describe())
    return 0 if result.ok else 1


def register(command: Command, json_flag: Flags) -> None:
    """Add the chain commands to the ``ledger`` parser."""

    def chain(sub: argparse.ArgumentParser, vault: bool = True) -> None:
        sub.add_argument("--rpc-url", required=True, help="JSON-RPC node, e.g. anvil")
        if vault:
            sub.add_argument("--vault", required=True, help="the vault's address")

    sub = command("vault-deploy", cmd_vault_deploy, "deploy a devnet USDC and a settlement vault")
    chain(sub, vault=False)
    sub.add_argument(
        "--fund-from-node", action="store_true", help="send the operator gas from the node"
    )
    json_flag(sub)
    sub = command("watch", cmd_watch, "ingest the vault's deposits (idempotent, resumable)")
    chain(sub)
    sub.add_argument("--confirmations", type=int, default=0)
    sub = command("settle", cmd_settle, "seal, commit blocks on the vault, pay withdrawals")
    chain(sub)
    sub.add_argument("--no-pay", dest="pay", action="store_false", help="commit only")
    sub = command("reconcile", cmd_reconcile, "vault USDC vs ledger liabilities (exit 1 if not)")
    chain(sub)
