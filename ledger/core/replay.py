"""Replay from genesis: recompute everything a store claims and name the first divergence.

:class:`Replayer` is fed stored transactions in sequence order and stored block
headers; it recomputes every balance, balance-after, account version, hash and state
root from the postings alone and reports what differs from the stored values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ledger.core.accounts import is_system
from ledger.core.blocks import BlockHeader, make_block
from ledger.core.encoding import ZERO_HASH, chain_hash
from ledger.core.journal import ChainHead, TxRecord


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where replay first disagreed with the store, and how."""

    seq: int | None
    block: int | None
    problems: tuple[str, ...]

    def describe(self) -> str:
        """One line for humans."""
        where = f"seq {self.seq}" if self.seq is not None else "final state"
        if self.block is not None:
            where = f"block {self.block}"
        return f"divergence at {where}: " + "; ".join(self.problems)


@dataclass(slots=True)
class Replayer:
    """Recomputes state from postings; each ``check_*`` returns the problems it found."""

    head: ChainHead = field(default_factory=ChainHead)
    balances: dict[tuple[str, str], int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    last_block: BlockHeader | None = None

    def check_tx(self, tx: TxRecord) -> list[str]:
        """Verify one stored transaction against the replayed state, then apply it."""
        problems: list[str] = []
        expected_seq = self.head.seq + 1
        if tx.seq != expected_seq:
            problems.append(
                f"expected sequence {expected_seq}, found {tx.seq} (missing or reordered row)"
            )
        if tx.prev_hash != self.head.hash:
            problems.append(f"prev_hash does not match the hash of sequence {self.head.seq}")
        if tx.recorded_at <= self.head.recorded_at:
            problems.append("recorded_at does not increase strictly")
        if chain_hash(self.head.hash, tx.encode()) != tx.hash:
            problems.append("stored hash does not match the transaction's contents")
        sums: dict[str, int] = {}
        balances, versions = self.balances, self.versions
        for p in tx.postings:
            sums[p.asset] = sums.get(p.asset, 0) + p.amount
            after = balances.get((p.account, p.asset), 0) + p.amount
            balances[(p.account, p.asset)] = after
            version = versions.get(p.account, 0) + 1
            versions[p.account] = version
            if p.balance_after != after:
                problems.append(
                    f"{p.account} {p.asset}: stored balance_after {p.balance_after}, replay {after}"
                )
            if p.version != version:
                problems.append(f"{p.account}: stored version {p.version}, replay {version}")
            if after < 0 and not is_system(p.account):
                problems.append(f"{p.account} {p.asset} goes negative ({after})")
        unbalanced = {asset: total for asset, total in sums.items() if total}
        if unbalanced:
            problems.append(f"postings do not sum to zero: {unbalanced}")
        self.head = ChainHead(tx.seq, tx.hash, tx.recorded_at)
        return problems

    def check_block(self, stored: BlockHeader, stored_hash: bytes) -> list[str]:
        """Verify a stored header once replay has reached its last sequence."""
        assert self.head.seq == stored.last_seq, (self.head.seq, stored.last_seq)
        expected = make_block(
            self.last_block,
            stored.last_seq,
            self.head.hash,
            ((acc, asset, bal) for (acc, asset), bal in self.balances.items()),
            stored.sealed_at,
        )
        problems = [
            f"{name}: stored {_show(getattr(stored, name))}, "
            f"replay {_show(getattr(expected, name))}"
            for name in (
                "number",
                "first_seq",
                "prev_block_hash",
                "tx_head_hash",
                "state_root",
                "leaf_count",
                "sealed_at",
                "withdrawal_root",
            )
            if getattr(stored, name) != getattr(expected, name)
        ]
        if stored.hash != stored_hash:
            problems.append("stored block hash does not match the header fields")
        self.last_block = stored
        return problems

    def check_final(
        self,
        balances: Mapping[tuple[str, str], int],
        versions: Mapping[str, int],
        head: ChainHead,
        head_block: int,
    ) -> list[str]:
        """Compare the store's current balances, versions, chain head and newest block
        number with replay."""
        problems: list[str] = []
        replayed_block = self.last_block.number if self.last_block else 0
        if head_block != replayed_block:
            problems.append(
                f"chain head names block {head_block}, the stored blocks end at {replayed_block}"
            )
        for key in sorted(set(balances) | set(self.balances)):
            stored, replayed = balances.get(key), self.balances.get(key)
            if stored != replayed:
                problems.append(f"balance of {key[0]} {key[1]}: stored {stored}, replay {replayed}")
        for account in sorted(set(versions) | set(self.versions)):
            if versions.get(account) != self.versions.get(account):
                problems.append(
                    f"version of {account}: stored {versions.get(account)}, "
                    f"replay {self.versions.get(account)}"
                )
        if head != self.head:
            problems.append(f"chain head: stored seq {head.seq}, replay seq {self.head.seq}")
        totals: dict[str, int] = {}
        for (_, asset), balance in self.balances.items():
            totals[asset] = totals.get(asset, 0) + balance
        problems += [
            f"asset {asset} does not sum to zero overall ({total})"
            for asset, total in totals.items()
            if total
        ]
        return problems


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()[:16] + ("…" if value != ZERO_HASH else "")
    return str(value)
