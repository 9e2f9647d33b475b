"""``ledger devnet``: the whole venue on a local EVM devnet, end to end.

Deploys the devnet USDC and the settlement vault, creates and onboards wallets (signed),
deposits their USDC into the vault on L1, ingests the deposits, runs the demo's trading
session (spot, perps, options, funding, an expiry, a liquidation), processes signed
withdrawals, commits the sealed blocks on chain, pays the withdrawals out with Merkle
proofs, reconciles the vault with the ledger, and audits the journal from genesis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ledger.chain.settlement import commit_blocks, pay_withdrawals, reconcile
from ledger.chain.vault import Vault, connect, give_eth, send
from ledger.chain.watcher import sync
from ledger.core.amounts import format_amount
from ledger.demo import EXPIRY_S, SyntheticClock, demo_wallet
from ledger.demo_trading import TRADER_USDC, TradingSession
from ledger.ledger import Ledger
from ledger.wallet import Wallet

DEVNET_OPERATOR = demo_wallet("devnet-operator")
TRADERS = 6
USERS = 4  # besides the traders: they deposit, transfer and withdraw
USER_USDC = 5_000 * 10**6


def run_devnet(
    url: str,
    rpc_url: str | None = None,
    confirmations: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the devnet session on the empty ledger at ``url``; return the summary."""
    started = time.perf_counter()
    clock = SyntheticClock()
    w3 = connect(rpc_url)
    funder = w3.eth.accounts[0]
    wallets = [demo_wallet(f"devnet-{i}") for i in range(TRADERS + USERS)]
    traders, users = wallets[:TRADERS], wallets[TRADERS:]
    operator = DEVNET_OPERATOR.l1_account
    progress(f"chain {w3.eth.chain_id}: deploying the devnet USDC and the settlement vault")
    for wallet in [DEVNET_OPERATOR, *wallets]:
        give_eth(w3, funder, wallet.l1_account.address)
    vault = Vault.deploy(w3, operator, operator.address)
    book = Ledger.init(url, operator=DEVNET_OPERATOR, clock=clock)
    with book:
        progress(f"onboarding {len(wallets)} wallets (EIP-712 + SNIP-12 signatures)")
        for wallet in wallets:
            book.onboard(wallet)
        progress("depositing USDC into the vault on L1 and ingesting the events")
        for wallet in wallets:
            amount = TRADER_USDC if wallet in traders else USER_USDC
            account = wallet.l1_account
            send(w3, account, vault.usdc.functions.mint(account.address, amount))
            vault.deposit(account, amount, wallet.address)
        ingested = sync(book, vault, confirmations)
        progress("trading: prices, funding, spot/perp/option fills, an expiry, a liquidation")
        trading = TradingSession(book, traders, clock.advance, EXPIRY_S).run(funded=True)
        progress("signed transfers and withdrawals")
        withdrawn = _payments(book, users)
        progress("sealing and committing blocks on chain; paying withdrawals with proofs")
        commits = commit_blocks(book, vault, operator)
        claims = pay_withdrawals(book, vault, users[0].l1_account)
        finalised = sync(book, vault, confirmations).payouts
        rec = reconcile(book, vault)
        report = book.audit()
    elapsed = time.perf_counter() - started
    return {
        "chain_id": w3.eth.chain_id,
        "vault": vault.vault.address,
        "wallets": len(wallets),
        "deposits_ingested": ingested.credited,
        "fills": trading.fills,
        "liquidations": trading.liquidations,
        "settlements": trading.settlements,
        "withdrawals_paid": len(claims),
        "withdrawals_finalised": finalised,
        "withdrawn_usdc": format_amount(withdrawn),
        "blocks_committed": len(commits),
        "gas_per_commit": max((gas for _, gas in commits), default=0),
        "gas_per_claim": max((gas for _, gas in claims), default=0),
        "vault_usdc": format_amount(rec.vault_balance),
        "reconciled": rec.ok,
        "reconciliation": rec.describe(),
        "audit_ok": report.ok,
        "audit_message": report.divergence.describe() if report.divergence else "intact",
        "head_seq": report.head_seq,
        "elapsed_s": round(elapsed, 1),
    }


def _payments(book: Ledger, users: list[Wallet]) -> int:
    """Each user transfers to the next and withdraws part of what it holds."""
    withdrawn = 0
    for i, wallet in enumerate(users):
        target = users[(i + 1) % len(users)]
        book.transfer(
            wallet.address, target.address, "250", wallet=wallet, nonce=1, expiry=EXPIRY_S
        )
        amount = (i + 1) * 400 * 10**6
        book.withdraw(wallet.address, amount, wallet=wallet, nonce=2, expiry=EXPIRY_S)
        withdrawn += amount
    return withdrawn
