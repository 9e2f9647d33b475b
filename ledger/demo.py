"""``ledger demo``: a deterministic synthetic workload, sealed into blocks, then audited.

The clock is synthetic too (one millisecond per transaction from 2026-01-01), so two runs
produce the same hashes, state roots and final chain head.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger.core import operations
from ledger.core.amounts import USDC, format_amount
from ledger.core.encoding import sha256
from ledger.core.journal import TxRequest
from ledger.demo_trading import TradingSession
from ledger.demo_trading import summary as trading_summary
from ledger.errors import InsufficientFunds, UnknownAccount
from ledger.ledger import Ledger
from ledger.wallet import Wallet

EPOCH_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
EXPIRY_S = EPOCH_US // 1_000_000 + 365 * 86_400  # actions stay valid for the whole demo
BATCH = 100
BLOCK_EVERY = 500
TRADERS = 6


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Size of the synthetic workload."""

    accounts: int = 100
    transactions: int = 2_000
    seed: int = 42


@dataclass(slots=True)
class DemoStats:
    """What the workload did, for the summary."""

    committed: int = 0
    rejected: int = 0
    duplicates: int = 0
    deposited: int = 0
    withdrawn: int = 0
    blocks: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


class SyntheticClock:
    """Deterministic microsecond clock: one millisecond per reading, plus any jumps."""

    def __init__(self) -> None:
        self.ticks = 0
        self.offset_us = 0

    def __call__(self) -> int:
        self.ticks += 1
        return EPOCH_US + self.ticks * 1_000 + self.offset_us

    def advance(self, us: int) -> None:
        """Jump ahead (price ticks 10 s apart, an option expiry the next day)."""
        self.offset_us += us


def demo_wallet(name: str) -> Wallet:
    """A deterministic wallet (its key derives from ``name``): demo data only."""
    return Wallet(sha256(f"ledger-demo-{name}".encode()).digest())


DEMO_OPERATOR = demo_wallet("operator")


class _Workload:
    def __init__(self, book: Ledger, config: DemoConfig, stats: DemoStats) -> None:
        self.book, self.config, self.stats = book, config, stats
        self.rng = random.Random(config.seed)
        self.wallets = {w.address: w for w in (demo_wallet(str(i)) for i in range(config.accounts))}
        self.users = list(self.wallets)
        self.nonces = dict.fromkeys(self.users, 0)
        self.model: dict[str, int] = {}
        self.pending: list[TxRequest] = []
        self.since_seal = 0
        self.n = 0

    def onboard(self) -> None:
        book = self.book
        book.submit([book.request_for(w.onboarding(book.domain)) for w in self.wallets.values()])

    def nonce(self, owner: str) -> int:
        self.nonces[owner] += 1
        return self.nonces[owner]

    def signed(self, envelope: dict[str, Any]) -> TxRequest:
        return self.book.request_for(envelope)

    def key(self) -> str:
        self.n += 1
        return f"demo-{self.config.seed}-{self.n}"

    def queue(self, request: TxRequest, moves: dict[str, int]) -> None:
        for account, delta in moves.items():
            self.model[account] = self.model.get(account, 0) + delta
        self.pending.append(request)
        if len(self.pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        for receipt in self.book.submit(self.pending):
            self.stats.committed += 1
            self.stats.kinds[receipt.tx.kind] = self.stats.kinds.get(receipt.tx.kind, 0) + 1
        self.since_seal += len(self.pending)
        self.pending = []
        if self.since_seal >= BLOCK_EVERY:
            self.book.seal()
            self.stats.blocks += 1
            self.since_seal = 0

    def funded(self) -> str | None:
        candidates = [a for a in self.rng.sample(self.users, 8) if self.model.get(a, 0) > 0]
        return candidates[0] if candidates else None

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.2 or not self.model:
            account = self.rng.choice(self.users)
            amount = self.rng.randint(100, 10_000) * 10**USDC.scale
            self.stats.deposited += amount
            deposit = operations.deposit(account, amount, self.key())
            self.queue(self.book.operator_signed(deposit), {account: amount})
            return
        source = self.funded()
        if source is None:
            return
        amount = self.rng.randint(1, self.model[source])
        wallet, domain = self.wallets[source], self.book.domain
        if roll < 0.35:
            self.stats.withdrawn += amount
            envelope = wallet.withdraw(source, amount, domain, self.nonce(source), EXPIRY_S)
            self.queue(self.signed(envelope), {source: -amount})
        elif roll < 0.97:
            target = self.rng.choice(self.users)
            if self.rng.random() < 0.1:
                target = f"{source}:isolated-{self.rng.randint(1, 3)}"
            if target == source:
                return
            envelope = wallet.transfer(source, target, amount, domain, self.nonce(source), EXPIRY_S)
            self.queue(self.signed(envelope), {source: -amount, target: amount})
        else:
            self.reject_overdraft(source)

    def reject_overdraft(self, source: str) -> None:
        """An overdraft, submitted alone: it must fail and write nothing."""
        self.flush()
        too_much = self.model[source] + 1
        wallet = self.wallets[source]
        try:
            # A refused action does not use up its nonce.
            self.book.withdraw(
                source, too_much, wallet=wallet, nonce=self.nonces[source] + 1, expiry=EXPIRY_S
            )
        except (InsufficientFunds, UnknownAccount):
            self.stats.rejected += 1
        else:  # pragma: no cover - would be a ledger bug
            raise AssertionError("an overdraft was accepted")

    def retry_one(self) -> None:
        """Resubmit the first deposit with its key: an idempotent no-op."""
        first = next(tx for tx in self.book.store.iter_transactions() if tx.kind == "deposit")
        deposit = operations.deposit(first.postings[1].account, first.postings[1].amount, first.key)
        receipt = self.book.system(deposit)
        assert receipt.duplicate and receipt.seq == first.seq
        self.stats.duplicates += 1


def run_demo(
    book: Ledger,
    config: DemoConfig,
    progress: Callable[[str], None] = lambda _: None,
    advance: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run the workload on an empty ledger; return the summary (audit included).
    ``advance`` jumps the ledger's clock (the trading session needs time to pass); without
    it the trading session is skipped."""
    stats = DemoStats()
    work = _Workload(book, config, stats)
    started = time.perf_counter()
    progress(f"onboarding {config.accounts} wallets")
    work.onboard()
    progress(f"writing {config.transactions} signed transactions over {config.accounts} accounts")
    while stats.committed + len(work.pending) + stats.rejected < config.transactions:
        work.step()
    work.flush()
    work.retry_one()
    trading = None
    if advance is not None and config.accounts >= TRADERS:
        progress("trading: prices, funding, spot/perp/option fills, an expiry, a liquidation")
        traders = [work.wallets[a] for a in work.users[:TRADERS]]
        trading = TradingSession(book, traders, advance, EXPIRY_S).run()
    if work.since_seal:
        book.seal()
        stats.blocks += 1
    write_s = time.perf_counter() - started
    progress(f"sealed {stats.blocks} blocks; auditing")
    report = book.audit()
    sample = max(work.model, key=lambda a: (work.model[a], a))
    proof = book.proof(sample)
    valid, _ = proof.verify()
    header = book.block()
    return {
        **(trading_summary(trading) if trading is not None else {}),
        "transactions": stats.committed,
        "by_kind": dict(sorted(stats.kinds.items())),
        "rejected_as_expected": stats.rejected,
        "idempotent_retries": stats.duplicates,
        "accounts": len(book.store.current_versions()),
        "blocks": stats.blocks,
        "deposited_usdc": format_amount(stats.deposited),
        "withdrawn_usdc": format_amount(stats.withdrawn),
        "write_tx_per_s": round(stats.committed / write_s),
        "audit_ok": report.ok,
        "audit_tx_per_s": round(report.transactions / max(report.elapsed_s, 1e-9)),
        "audit_message": report.divergence.describe() if report.divergence else "intact",
        "head_seq": report.head_seq,
        "head_hash": "0x" + report.head_hash.hex(),
        "last_block": header.number,
        "state_root": "0x" + header.state_root.hex(),
        "proof_account": sample,
        "proof_balance_usdc": format_amount(proof.balance),
        "proof_valid": valid,
    }
