"""A worker process for tests/test_concurrency.py: opens its own ``Ledger(url)``, waits at a
barrier so every worker starts together, then submits its plan and reports every receipt
and every refusal back through a queue. Started with the ``spawn`` context, so everything
here is importable and every argument picklable."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from ledger import Ledger, TxRequest
from ledger.core import operations
from ledger.errors import LedgerError

# One transaction: (kind, source, target, units, key); kind is deposit | withdrawal |
# transfer | reverse (then ``units`` is the sequence to reverse; sent with Ledger.reverse).
Item = tuple[str, str, str, int, str]
# One call: the items submitted together (one atomic batch) and the name of the error
# class it must fail with, or None when it must succeed.
Step = tuple[tuple[Item, ...], str | None]


@dataclass
class Outcome:
    """What one worker saw: receipts ``(step, key, seq, hash, duplicate)`` and refusals
    ``(step, error class name, message)``; ``crash`` is a traceback if it died."""

    name: str
    receipts: list[tuple[int, str, int, bytes, bool]] = field(default_factory=list)
    refusals: list[tuple[int, str, str]] = field(default_factory=list)
    crash: str | None = None


def request(item: Item) -> TxRequest:
    kind, source, target, units, key = item
    if kind == "deposit":
        return operations.deposit(target, units, key)
    if kind == "withdrawal":
        return operations.withdrawal(source, units, key)
    assert kind == "transfer", kind
    return operations.transfer(source, target, units, key)


def run(
    name: str, url: str, steps: list[Step], barrier: Any, results: Any, pause_s: float = 0.0
) -> None:
    """Entry point of a worker process. ``pause_s``: think time after each call (SQLite's
    busy handler is not fair: a writer committing back to back can starve the other)."""
    outcome = Outcome(name)
    try:
        with Ledger(url) as book:
            book.store.assets()  # connect and warm up before the start signal
            book.store.head()
            barrier.wait(timeout=120)
            for index, (items, _expected) in enumerate(steps):
                try:
                    if items[0][0] == "reverse":
                        (_, _, _, seq, key), *rest = items
                        assert not rest, "a reversal is submitted on its own"
                        receipts = [book.reverse(seq, reason=f"{name} undoes {seq}", key=key)]
                    else:
                        receipts = book.submit([request(item) for item in items])
                except LedgerError as exc:
                    outcome.refusals.append((index, type(exc).__name__, str(exc)))
                else:
                    outcome.receipts.extend(
                        (index, r.tx.key, r.seq, r.hash, r.duplicate) for r in receipts
                    )
                if pause_s:
                    time.sleep(pause_s)
    except BaseException:
        outcome.crash = traceback.format_exc()
    results.put(outcome)
