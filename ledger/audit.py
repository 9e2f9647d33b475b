"""``ledger audit``: replay the stored journal from genesis and compare everything."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from multiprocessing import get_context
from typing import Any

from ledger.core.authorization import Auth
from ledger.core.journal import TxRecord
from ledger.core.replay import Divergence, Replayer, chain_ids, verify_signature
from ledger.store.sql import SqlStore

Progress = Callable[[int, int], None]
PROGRESS_EVERY = 10_000
# Below this many transactions, starting worker processes costs more than it saves.
PARALLEL_FROM = 2_000
CHUNK = 256
Verified = Auth | str | None


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What the audit checked and the first divergence it found, if any."""

    transactions: int
    blocks: int
    head_seq: int
    head_hash: bytes
    elapsed_s: float
    divergence: Divergence | None

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def to_json(self) -> dict[str, Any]:
        """JSON form (``ledger audit --json``)."""
        report: dict[str, Any] = {
            "ok": self.ok,
            "transactions": self.transactions,
            "blocks": self.blocks,
            "head_seq": self.head_seq,
            "head_hash": "0x" + self.head_hash.hex(),
            "elapsed_s": round(self.elapsed_s, 3),
        }
        if self.divergence is not None:
            report["divergence"] = {
                "seq": self.divergence.seq,
                "block": self.divergence.block,
                "problems": list(self.divergence.problems),
                "message": self.divergence.describe(),
            }
        return report


def _verify_chunk(chunk: list[TxRecord], l1_chain_id: int, l2_chain_id: str) -> list[Auth | str]:
    return [verify_signature(tx, l1_chain_id, l2_chain_id) for tx in chunk]


def _with_signatures(
    store: SqlStore, transactions: Iterator[TxRecord], workers: int
) -> Iterator[tuple[TxRecord, Verified]]:
    """Transactions in order, each with its signature check done ahead in worker
    processes (signature checks are stateless; everything else stays sequential)."""
    if workers <= 1:
        yield from ((tx, None) for tx in transactions)
        return
    l1_chain_id, l2_chain_id = chain_ids(store.transaction(1))
    pending: deque[tuple[list[TxRecord], Future[list[Auth | str]]]] = deque()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        while chunk := list(islice(transactions, CHUNK)):
            pending.append((chunk, pool.submit(_verify_chunk, chunk, l1_chain_id, l2_chain_id)))
            if len(pending) > 2 * workers:
                done, future = pending.popleft()
                yield from zip(done, future.result(), strict=True)
        while pending:
            done, future = pending.popleft()
            yield from zip(done, future.result(), strict=True)


def audit(
    store: SqlStore, progress: Progress | None = None, workers: int | None = None
) -> AuditReport:
    """Replay every transaction and block; stop at the first divergence. Signature checks
    run in ``workers`` processes (default: one per CPU on large ledgers)."""
    started = time.perf_counter()
    replayer = Replayer()
    blocks = list(store.iter_blocks())
    total = store.head().seq
    if workers is None:
        workers = os.cpu_count() or 1 if total >= PARALLEL_FROM else 1
    checked_tx = checked_blocks = 0

    def report(divergence: Divergence | None) -> AuditReport:
        return AuditReport(
            checked_tx,
            checked_blocks,
            replayer.head.seq,
            replayer.head.hash,
            time.perf_counter() - started,
            divergence,
        )

    for tx, verified in _with_signatures(store, store.iter_transactions(), workers):
        problems = replayer.check_signature(tx, verified)
        problems += replayer.check_rules(tx) if not problems else []
        problems += replayer.check_tx(tx)
        checked_tx += 1
        if problems:
            return report(Divergence(tx.seq, None, tuple(problems)))
        while checked_blocks < len(blocks) and blocks[checked_blocks][0].last_seq <= tx.seq:
            header, stored_hash, signature = blocks[checked_blocks]
            if header.last_seq < tx.seq:
                return report(
                    Divergence(
                        None,
                        header.number,
                        (f"ends at sequence {header.last_seq}, which the journal skipped",),
                    )
                )
            problems = replayer.check_block(header, stored_hash, signature)
            checked_blocks += 1
            if problems:
                return report(Divergence(None, header.number, tuple(problems)))
        if progress is not None and checked_tx % PROGRESS_EVERY == 0:
            progress(checked_tx, total)
    if checked_blocks < len(blocks):
        header = blocks[checked_blocks][0]
        return report(
            Divergence(
                None,
                header.number,
                (
                    f"covers sequences up to {header.last_seq} but the journal ends at "
                    f"{replayer.head.seq}",
                ),
            )
        )
    problems = replayer.check_final(
        store.current_balances(), store.current_versions(), store.head(), store.head_block()
    ) + replayer.check_auth_projection(store.auth_projection())
    problems += replayer.check_trading_projection(store.trading_state())
    if progress is not None:
        progress(checked_tx, total)
    return report(Divergence(None, None, tuple(problems)) if problems else None)
