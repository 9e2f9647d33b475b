"""Withdrawal claims: the leaves of a block's withdrawal tree, which the settlement vault
on L1 pays out against (contracts/SettlementVault.sol checks the same bytes).

Leaf of a withdrawal recorded at sequence ``seq`` paying ``amount`` USDC base units to the
L1 address ``recipient``::

    leaf = sha256(0x02 || uint64(seq) || bytes20(recipient) || uint128(amount))

(45 bytes, big-endian; the 0x02 prefix keeps it apart from state leaves (0x00) and inner
nodes (0x01)). A block's withdrawal tree has one leaf per withdrawal it seals, in sequence
order, with the state tree's inner nodes and odd-node promotion; no withdrawals, zero root.
The sequence number makes every leaf unique, so the vault can refuse a second claim by the
leaf alone. ``amount`` is what the vault pays: the USDC the withdrawal moved to
``system:withdrawals``, net of any socialised-loss haircut. ``recipient`` is the owner of
the debited account (a sub-account's owner).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.core.accounts import WITHDRAWALS, is_system, owner_of
from ledger.core.amounts import USDC
from ledger.core.encoding import sha256
from ledger.core.merkle import merkle_proof, merkle_root, verify_proof
from ledger.errors import PayoutMismatch, UnbalancedTransaction

LEAF_PREFIX = b"\x02"
MAX_CLAIM = 2**128 - 1


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """One claim leaf: who is paid how much, by which withdrawal."""

    seq: int
    recipient: str
    amount: int

    def leaf(self) -> bytes:
        assert 0 < self.amount <= MAX_CLAIM and 0 < self.seq < 2**64
        return sha256(
            LEAF_PREFIX
            + self.seq.to_bytes(8, "big")
            + bytes.fromhex(self.recipient.removeprefix("0x"))
            + self.amount.to_bytes(16, "big")
        ).digest()


def withdrawal_of(seq: int, postings: Sequence[tuple[str, str, int]]) -> Withdrawal:
    """The claim a withdrawal transaction's postings make: the bridge's USDC credit, paid
    to the owner of the debited user account."""
    amount = sum(
        a for account, asset, a in postings if account == WITHDRAWALS and asset == USDC.code
    )
    debited = [
        account
        for account, asset, a in postings
        if a < 0 and asset == USDC.code and not is_system(account)
    ]
    if len(debited) != 1 or not 0 < amount <= MAX_CLAIM:
        raise UnbalancedTransaction(
            f"withdrawal {seq} does not move one account's USDC to {WITHDRAWALS}: {list(postings)}"
        )
    return Withdrawal(seq, owner_of(debited[0]), amount)


def check_payout(pending: Withdrawal | None, seq: int, recipient: str, amount: int) -> None:
    """Refuse a payout of withdrawal ``seq`` unless it pays exactly the pending claim:
    the same recipient and amount (``pending`` is None when ``seq`` is no withdrawal, or
    one already paid)."""
    if pending is None:
        raise PayoutMismatch(
            f"a payout names withdrawal {seq}, but no unpaid withdrawal has that sequence"
        )
    if (pending.recipient, pending.amount) != (recipient.lower(), amount):
        raise PayoutMismatch(
            f"the payout of withdrawal {seq} sends {amount} base units to {recipient}, but the "
            f"claim is {pending.amount} to {pending.recipient}: the vault and the ledger disagree"
        )


def withdrawal_root(withdrawals: Sequence[Withdrawal]) -> bytes:
    """Root of a block's withdrawal tree (32 zero bytes without withdrawals)."""
    return merkle_root([w.leaf() for w in withdrawals])


@dataclass(frozen=True, slots=True)
class WithdrawalProof:
    """Everything the vault's ``claim`` takes, and offline verification against a root."""

    block: int
    withdrawal: Withdrawal
    index: int
    count: int
    siblings: tuple[bytes, ...]
    root: bytes

    def verify(self) -> bool:
        leaf = self.withdrawal.leaf()
        return verify_proof(leaf, self.index, self.count, self.siblings, self.root)

    def to_json(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "seq": self.withdrawal.seq,
            "recipient": self.withdrawal.recipient,
            "amount": str(self.withdrawal.amount),
            "index": self.index,
            "count": self.count,
            "siblings": ["0x" + s.hex() for s in self.siblings],
            "withdrawal_root": "0x" + self.root.hex(),
        }


def prove(block: int, withdrawals: Sequence[Withdrawal], seq: int) -> WithdrawalProof:
    """The proof for the withdrawal at ``seq`` among a block's ``withdrawals``."""
    index = next(i for i, w in enumerate(withdrawals) if w.seq == seq)
    leaves = [w.leaf() for w in withdrawals]
    return WithdrawalProof(
        block,
        withdrawals[index],
        index,
        len(leaves),
        tuple(merkle_proof(leaves, index)),
        merkle_root(leaves),
    )
