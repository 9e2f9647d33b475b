"""A writer for the crash tests (tests/test_crash.py), run as a subprocess and SIGKILLed.

    python tests/crash_writer.py URL LOG SEED SEGMENTS [--hold]
                                 [--stall-before-commit N | --stall-after-commit N]

It submits the deterministic plan ``plan(SEED, SEGMENTS)`` batch by batch with
``Ledger.submit``, always from the start: after a crash the batches that did commit come
back as duplicates (their idempotency keys are deterministic), so a restart simply resumes.
After each successful commit it appends one line to LOG and fsyncs it::

    <batch index> <number of fresh receipts> <key> <key> ...

so a key in LOG was acknowledged as committed. Progress goes to stdout, one flushed line
each: ``ready``, ``begin N``, ``done N FRESH``, ``stalled N``, ``finished``.

``--hold`` makes it wait, after ``ready`` (imports done, plan built, database not yet
opened), for a ``go`` line on stdin, so a test can start the next writer while the current
one still runs and not pay Python's start-up time between kills. Without ``go`` it exits.

``--stall-before-commit N`` parks batch N inside its database transaction, after every row
is written and just before COMMIT; ``--stall-after-commit N`` parks it after COMMIT but
before the log line. Either way the writer prints ``stalled N`` and waits to be killed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

from ledger import Ledger
from ledger.core import operations
from ledger.core.journal import TxRequest

USERS = 24
OPENING = 1_000_000 * 1_000_000  # each user starts with 1,000,000 USDC
MAX_AMOUNT = 1_000_000  # no single movement exceeds 1 USDC: the plan can never overdraw
BIG_BATCHES = (50, 100, 200)
STALL_SECONDS = 600


def users() -> list[str]:
    return [f"0x{0xC0FFEE000000 + i:040x}" for i in range(USERS)]


def plan(seed: int, segments: int) -> list[list[TxRequest]]:
    """Batch 0 funds every user; then each segment is two single-transaction batches
    followed by one big batch (50, 100 or 200 transactions) of deposits, transfers (also
    into sub-accounts) and withdrawals. Keys are ``crash-SEED-BATCH-INDEX``."""
    rng = random.Random(seed)
    accounts = users()
    batches: list[list[TxRequest]] = [
        [
            operations.deposit(account, OPENING, f"crash-{seed}-0-{i}")
            for i, account in enumerate(accounts)
        ]
    ]

    def request(key: str) -> TxRequest:
        source, target = rng.sample(accounts, 2)
        amount = rng.randint(1, MAX_AMOUNT)
        roll = rng.random()
        if roll < 0.15:
            return operations.deposit(target, amount, key, {"source": "crash-test"})
        if roll < 0.25:
            return operations.withdrawal(source, amount, key)
        if roll < 0.35:
            return operations.transfer(source, f"{source}:margin", amount, key)
        return operations.transfer(source, target, amount, key)

    for _ in range(segments):
        for size in (1, 1, rng.choice(BIG_BATCHES)):
            b = len(batches)
            batches.append([request(f"crash-{seed}-{b}-{i}") for i in range(size)])
    return batches


def _trim_partial_line(log: Path) -> None:
    """Drop an unterminated last line (a kill mid-write) so appends start on a new line."""
    if log.exists():
        data = log.read_bytes()
        if data and not data.endswith(b"\n"):
            with log.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)


def _stall(batch: int) -> None:
    print(f"stalled {batch}", flush=True)
    time.sleep(STALL_SECONDS)
    sys.exit(3)  # nobody killed us: the test is broken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("log", type=Path)
    parser.add_argument("seed", type=int)
    parser.add_argument("segments", type=int)
    parser.add_argument("--hold", action="store_true")
    stall = parser.add_mutually_exclusive_group()
    stall.add_argument("--stall-before-commit", type=int, metavar="N")
    stall.add_argument("--stall-after-commit", type=int, metavar="N")
    args = parser.parse_args(argv)

    batches = plan(args.seed, args.segments)
    print("ready", flush=True)
    if args.hold and sys.stdin.readline().strip() != "go":
        return 4
    _trim_partial_line(args.log)
    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    current = -1
    with Ledger(args.url) as book:
        if args.stall_before_commit is not None:

            @event.listens_for(book.engine, "commit")
            def before_commit(_connection: Any) -> None:
                # Fires before the DBAPI COMMIT of the batch's transaction (reads roll back).
                if current == args.stall_before_commit:
                    _stall(current)

        for current, batch in enumerate(batches):
            print(f"begin {current}", flush=True)
            receipts = book.submit(batch)
            keys = [receipt.tx.key for receipt in receipts]
            assert keys == [request.key for request in batch], "receipts out of order"
            if current == args.stall_after_commit:
                _stall(current)
            fresh = sum(not receipt.duplicate for receipt in receipts)
            os.write(log, f"{current} {fresh} {' '.join(keys)}\n".encode())
            os.fsync(log)
            print(f"done {current} {fresh}", flush=True)
    os.close(log)
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
