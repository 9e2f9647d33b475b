"""``ledger audit``: replay the stored journal from genesis and compare everything."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.core.replay import Divergence, Replayer
from ledger.store.sql import SqlStore

Progress = Callable[[int, int], None]
PROGRESS_EVERY = 10_000


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


def audit(store: SqlStore, progress: Progress | None = None) -> AuditReport:
    """Replay every transaction and block; stop at the first divergence."""
    started = time.perf_counter()
    replayer = Replayer()
    blocks = list(store.iter_blocks())
    total = store.head().seq
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

    for tx in store.iter_transactions():
        problems = replayer.check_tx(tx)
        checked_tx += 1
        if problems:
            return report(Divergence(tx.seq, None, tuple(problems)))
        while checked_blocks < len(blocks) and blocks[checked_blocks][0].last_seq <= tx.seq:
            header, stored_hash = blocks[checked_blocks]
            if header.last_seq < tx.seq:
                return report(
                    Divergence(
                        None,
                        header.number,
                        (f"ends at sequence {header.last_seq}, which the journal skipped",),
                    )
                )
            problems = replayer.check_block(header, stored_hash)
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
    )
    if progress is not None:
        progress(checked_tx, total)
    return report(Divergence(None, None, tuple(problems)) if problems else None)
