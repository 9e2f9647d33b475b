"""The chain watcher: ingests the vault's events into the ledger.

Each ``Deposit`` becomes one operator-signed journal deposit whose idempotency key is
``l1/CHAIN_ID/TX_HASH/LOG_INDEX``, so delivering an event twice writes it once. Each
``WithdrawalPaid`` becomes the withdrawal's payout (``system:withdrawals`` to
``system:bridge``), keyed ``payout/SEQ``: a withdrawal is finalised once. Only blocks
at least ``confirmations`` deep are read. The cursor (last block number and hash) is stored
after each sync; the next sync first checks that the chain still has that block, so a reorg
below the confirmation depth is detected and reported, never silently absorbed. A sync
killed anywhere resumes from the stored cursor: anything ingested after it is recognised by
its key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from web3.exceptions import BlockNotFound

from ledger.chain.vault import ChainError, Deposit, Payout, Vault, hex_hash
from ledger.core import operations
from ledger.core.journal import MAX_BATCH, TxKind
from ledger.core.withdrawals import Withdrawal, check_payout, withdrawal_of
from ledger.errors import NotFound
from ledger.ledger import Ledger
from ledger.store.sql import Receipt


class ReorgDetected(ChainError):
    """A block the watcher had ingested is no longer on the chain."""


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one sync read and wrote."""

    from_block: int
    to_block: int
    deposits: int
    credited: int  # new deposits (the rest were already ingested)
    payouts: int  # withdrawals newly finalised


def sync(book: Ledger, vault: Vault, confirmations: int = 0) -> SyncReport:
    """Ingest the deposits and payouts of every block up to ``confirmations`` below the
    head, from the stored cursor on."""
    w3, address = vault.w3, vault.vault.address
    cursor = book.store.chain_cursor(vault.chain, address)
    head = w3.eth.block_number
    if cursor is not None:
        number, block_hash = cursor
        now = _block_hash(vault, number, head)
        if now != block_hash:
            raise ReorgDetected(
                f"block {number} changed from {block_hash} to {now} although it was "
                f"{confirmations} confirmations deep: deposits after it need an operator's review"
            )
    start = cursor[0] + 1 if cursor is not None else 0
    safe = head - confirmations
    if safe < start:
        return SyncReport(start, safe, 0, 0, 0)
    # The safe block's hash is read before the logs and checked after: a reorg while they
    # are read would otherwise credit the old chain's deposits under the new chain's hash.
    safe_hash = _block_hash(vault, safe, head)
    deposits, payouts = vault.deposits(start, safe), vault.payouts(start, safe)
    now = _block_hash(vault, safe, head)
    if now != safe_hash:
        raise ReorgDetected(
            f"block {safe} changed from {safe_hash} to {now} while its events were read: "
            "nothing was written; sync again"
        )
    receipts = credit(book, deposits)
    paid = finalise(book, payouts)
    book.store.set_chain_cursor(vault.chain, address, safe, safe_hash)
    credited = sum(not r.duplicate for r in receipts)
    return SyncReport(start, safe, len(deposits), credited, sum(not r.duplicate for r in paid))


def _block_hash(vault: Vault, number: int, head: int) -> str:
    """The hash of block ``number``; a block the node no longer has (a reorg onto a shorter
    chain, or a node behind) is reported as a reorg, never a crash."""
    try:
        return hex_hash(vault.w3.eth.get_block(number)["hash"])
    except BlockNotFound as exc:
        raise ReorgDetected(
            f"block {number} is gone: the node's head is {head} (a reorg onto a shorter "
            "chain, or a node behind); nothing was written"
        ) from exc


def finalise(book: Ledger, payouts: Sequence[Payout]) -> list[Receipt]:
    """Record each payout once: the withdrawal's USDC leaves ``system:withdrawals``. A
    payout must match its withdrawal's claim (recipient and amount); one that does not is
    refused before anything is written (:class:`PayoutMismatch`)."""
    for p in payouts:
        check_payout(_claim(book, p.seq), p.seq, p.recipient, p.amount)
    requests = [
        book.operator_signed(
            operations.payout(
                p.seq,
                p.amount,
                {
                    "chain_id": p.chain_id,
                    "tx_hash": p.tx_hash,
                    "log_index": p.log_index,
                    "block": p.block_number,
                    "ledger_block": p.block,
                    "recipient": p.recipient,
                },
            )
        )
        for p in payouts
    ]
    return book.submit(requests) if requests else []


def _claim(book: Ledger, seq: int) -> Withdrawal | None:
    try:
        tx = book.store.transaction(seq)
    except NotFound:
        return None
    if tx.kind != TxKind.WITHDRAWAL.value:
        return None
    return withdrawal_of(seq, [(p.account, p.asset, p.amount) for p in tx.postings])


def credit(book: Ledger, deposits: Sequence[Deposit]) -> list[Receipt]:
    """Credit each deposit once (operator-signed, keyed by where it was observed)."""
    receipts: list[Receipt] = []
    for i in range(0, len(deposits), MAX_BATCH):
        requests = [
            book.operator_signed(
                operations.deposit(
                    d.account,
                    d.amount,
                    d.key,
                    {
                        "chain_id": d.chain_id,
                        "tx_hash": d.tx_hash,
                        "log_index": d.log_index,
                        "block": d.block_number,
                        "block_hash": d.block_hash,
                        "deposit_id": d.deposit_id,
                        "from": d.sender,
                    },
                )
            )
            for d in deposits[i : i + MAX_BATCH]
        ]
        receipts += book.submit(requests)
    return receipts
