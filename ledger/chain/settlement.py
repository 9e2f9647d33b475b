"""Settlement on the vault: commit sealed blocks in order, pay withdrawals out with their
proofs, and reconcile the vault's USDC with what the ledger owes.

Reconciliation: every USDC the vault holds came in through a deposit the ledger credited
(``system:bridge`` is debited by each) and leaves through a paid withdrawal (the bridge is
credited when the user withdraws, the vault pays when the claim arrives). So the vault must
hold exactly ``-bridge + withdrawals not yet paid``; any difference is reported.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from ledger.chain.vault import Vault
from ledger.core.accounts import BRIDGE
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


def withdrawals(book: Ledger) -> dict[int, int]:
    """Every withdrawal in the journal: sequence -> amount the bridge owes."""
    out = {}
    for tx in book.store.iter_transactions():
        if tx.kind == TxKind.WITHDRAWAL.value:
            out[tx.seq] = sum(p.amount for p in tx.postings if p.account == BRIDGE)
    return out


def pay_withdrawals(book: Ledger, vault: Vault, sender: LocalAccount) -> list[tuple[int, int]]:
    """Claim every committed, unpaid withdrawal; ``(seq, gas used)`` per claim."""
    paid = vault.paid()
    committed = vault.committed_block()
    out = []
    for seq in sorted(set(withdrawals(book)) - set(paid)):
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
    bridged: int  # -system:bridge: deposits credited minus withdrawals debited
    unpaid_withdrawals: int

    @property
    def expected(self) -> int:
        return self.bridged + self.unpaid_withdrawals

    @property
    def difference(self) -> int:
        return self.vault_balance - self.expected

    @property
    def ok(self) -> bool:
        return self.difference == 0

    def describe(self) -> str:
        state = "reconciled" if self.ok else f"MISMATCH of {format_amount(self.difference)} USDC"
        return (
            f"{state}: vault holds {format_amount(self.vault_balance)} USDC; ledger owes "
            f"{format_amount(self.bridged)} bridged + {format_amount(self.unpaid_withdrawals)} "
            "in withdrawals not yet paid"
        )


def reconcile(book: Ledger, vault: Vault) -> Reconciliation:
    """Compare the vault's USDC with the ledger's liabilities (see module doc)."""
    owed = withdrawals(book)
    paid = vault.paid()
    unpaid = sum(amount for seq, amount in owed.items() if seq not in paid)
    return Reconciliation(vault.balance(), -book.balance(BRIDGE).units, unpaid)
