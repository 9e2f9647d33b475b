"""Settlement benchmark on the in-process EVM (py-evm): blocks committed per second,
deposits ingested per second, and the gas of a block commit and of a withdrawal claim (the
chain-independent cost). Prints one JSON object.

    python scripts/bench_settlement.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from typing import Any

from ledger import Ledger
from ledger.chain.settlement import commit_blocks, pay_withdrawals, reconcile
from ledger.chain.vault import Vault, connect, give_eth, send
from ledger.chain.watcher import sync
from ledger.demo import demo_wallet

USDC = 10**6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run (CI smoke test)")
    args = parser.parse_args()
    deposits, blocks, claims = (40, 5, 10) if args.quick else (400, 40, 50)
    operator, user = demo_wallet("bench-operator"), demo_wallet("bench-user")
    w3 = connect(None)
    for wallet in (operator, user):
        give_eth(w3, w3.eth.accounts[0], wallet.l1_account.address, 10**21)
    vault = Vault.deploy(w3, operator.l1_account, operator.l1_account.address)
    send(w3, user.l1_account, vault.usdc.functions.mint(user.l1_account.address, 10**15))
    send(w3, user.l1_account, vault.usdc.functions.approve(vault.vault.address, 10**15))
    with tempfile.TemporaryDirectory() as folder:
        book = Ledger.init(f"sqlite:///{folder}/bench.db", operator=operator)
        book.onboard(user)
        for _ in range(deposits):
            deposit = vault.vault.functions.deposit(10 * USDC, user.l1_account.address)
            send(w3, user.l1_account, deposit)
        started = time.perf_counter()
        ingested = sync(book, vault)
        ingest_s = time.perf_counter() - started
        for i in range(claims):
            book.withdraw(user.address, USDC, wallet=user, nonce=i + 1)
        commit_gas: list[int] = []
        started = time.perf_counter()
        for i in range(blocks):
            sub = f"{user.address}:bench"  # something to seal
            book.transfer(user.address, sub, 1, wallet=user, nonce=claims + 1 + i)
            commit_gas += [gas for _, gas in commit_blocks(book, vault, operator.l1_account)]
        commit_s = time.perf_counter() - started
        paid = pay_withdrawals(book, vault, user.l1_account)
        finalised = sync(book, vault).payouts  # the payouts recorded before reconciling
        result: dict[str, Any] = {
            "python": platform.python_version(),
            "chain": "py-evm (eth-tester), in process",
            "deposits_ingested_per_s": round(ingested.credited / ingest_s),
            "deposits": ingested.credited,
            "blocks_committed_per_s": round(len(commit_gas) / commit_s, 1),
            "blocks": len(commit_gas),
            "gas_per_commit": {"min": min(commit_gas), "max": max(commit_gas)},
            "gas_per_claim": {"min": min(g for _, g in paid), "max": max(g for _, g in paid)},
            "claims": len(paid),
            "payouts_finalised": finalised,
            "reconciled": reconcile(book, vault).ok,
        }
        book.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
