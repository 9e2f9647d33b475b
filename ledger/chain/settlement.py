"""Settlement on the vault: commit sealed blocks in order, pay withdrawals out with their
proofs, and reconcile the vault's USDC with what the ledger owes.

Reconciliation: every USDC the vault holds came in through a deposit the ledger credited
(``system:bridge`` is debited by each) and leaves through a payout the watcher recorded
(the bridge is credited by each). So the vault holds exactly ``-system:bridge``: what the
ledger owes to users, to its own funds, and to withdrawals waiting in
``system:withdrawals``. Any difference is reported.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from ledger.chain.vault import Vault
from ledger.core.accounts import BRIDGE, WITHDRAWALS
from ledger.core.amounts import format_amount
from ledger.core.blocks import BlockHeader
from ledger.core.journal import TxKind
from ledger.errors import NotFound, NothingToSeal
from ledger.ledger import Ledger


def commit_blocks(
    book: Ledger, vault: Vault, operator: LocalAccount
) -> list[tuple[BlockHeader, int]]:
    """Seal what is pending, then commit every sealed block the vault lacks, in order;
    ``(header, gas used)`` per commit."""
    with contextlib.suppress(NothingToSeal):
        book.seal()
    committed = vault.committed_block()
    last = book.store.head_block()
    out = []
    for number in range(committed + 1, last + 1):
        header = book.block(number)
        receipt = vault.commit(operator, header)
        out.append((header, int(receipt["gasUsed"])))
    return out


def pending_withdrawals(book: Ledger) -> dict[int, int]:
    """Withdrawals not yet paid out (no payout recorded): sequence -> amount owed."""
    owed: dict[int, int] = {}
    for tx in book.store.iter_transactions():
        if tx.kind == TxKind.WITHDRAWAL.value:
            owed[tx.seq] = sum(p.amount for p in tx.postings if p.account == WITHDRAWALS)
        elif tx.kind == TxKind.PAYOUT.value:
            owed.pop(int(json.loads(tx.metadata)["withdrawal"]), None)
    return owed


def pay_withdrawals(book: Ledger, vault: Vault, sender: LocalAccount) -> list[tuple[int, int]]:
    """Claim every pending withdrawal of a committed block that the vault has not paid
    yet; ``(seq, gas used)`` per claim. (The watcher then records the payouts.)"""
    paid = {p.seq for p in vault.payouts()}
    committed = vault.committed_block()
    out = []
    for seq in sorted(set(pending_withdrawals(book)) - paid):
        try:
            proof = book.withdrawal_proof(seq)
        except NotFound:
            continue  # not sealed yet
        if proof.block > committed:
            continue
        receipt = vault.claim(sender, proof)
        out.append((seq, int(receipt["gasUsed"])))
    return out


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The vault's USDC against the ledger's liabilities to it."""

    vault_balance: int
    bridged: int  # -system:bridge: deposits credited minus payouts recorded
    pending: int  # system:withdrawals: signed withdrawals not yet paid out

    @property
    def difference(self) -> int:
        return self.vault_balance - self.bridged

    @property
    def ok(self) -> bool:
        return self.difference == 0

    def describe(self) -> str:
        state = "reconciled" if self.ok else f"MISMATCH of {format_amount(self.difference)} USDC"
        return (
            f"{state}: vault holds {format_amount(self.vault_balance)} USDC; the ledger owes "
            f"{format_amount(self.bridged)} (users, fees and funds, of which "
            f"{format_amount(self.pending)} in withdrawals not yet paid out)"
        )


def reconcile(book: Ledger, vault: Vault) -> Reconciliation:
    """Compare the vault's USDC with the ledger's liabilities (see module doc), as the
    ledger stands: run the watcher's ``sync`` first (``ledger reconcile`` does), or payouts
    made on chain but not yet recorded show as a difference."""
    return Reconciliation(
        vault.balance(), -book.balance(BRIDGE).units, book.balance(WITHDRAWALS).units
    )
