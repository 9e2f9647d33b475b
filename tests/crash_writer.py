"""A writer for the crash tests (tests/test_crash.py), run as a subprocess and SIGKILLed.

    python -m tests.crash_writer URL LOG SEED SEGMENTS [--plan FILE] [--hold]
                                 [--stall-before-commit N | --stall-after-commit N]

It submits the deterministic plan ``plan(SEED, SEGMENTS)`` batch by batch with
``Ledger.submit``, always from the start, to a ledger whose genesis is already written.
After a crash the batches that did commit come back: a batch of operator-signed events (the
onboardings and deposits) as duplicates, since their idempotency keys and signatures are
deterministic; a batch with a signed user action as ``NonceReused``, since replaying a
user's action is refused, and then the writer checks that every key of the batch is in
the ledger with the same payload and counts the batch as already committed. So a restart
simply resumes. After each successful commit it appends one line to LOG and fsyncs it::

    <batch index> <number of fresh receipts> <key> <key> ...

so a key in LOG was acknowledged as committed. Progress goes to stdout, one flushed line
each: ``ready``, ``begin N`` (batch N is submitted: its signatures are being verified),
``writing N`` (its database transaction has begun), ``done N FRESH``, ``stalled N``,
``finished``.

``--plan FILE`` caches the plan (JSON): signing it costs seconds, and every restarted writer
needs the same one. The first process to build it writes FILE; the others read it.

``--hold`` makes it wait, after ``ready`` (imports done, plan built, database not yet
opened), for a ``go`` line on stdin, so a test can start the next writer while the current
one still runs and not pay Python's start-up time between kills. Without ``go`` it exits.

``--stall-before-commit N`` parks batch N inside its database transaction, after every row
is written and just before COMMIT; ``--stall-after-commit N`` parks it after COMMIT but
before the log line. Either way the writer prints ``stalled N`` and waits to be killed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import event

from ledger import Ledger, Receipt
from ledger.core import envelopes, genesis, operations
from ledger.core.authorization import USER, scheme_for
from ledger.core.journal import Posting, TxRequest
from ledger.errors import NonceReused
from ledger.wallet import Wallet
from tests.conftest import OPERATOR
from tests.conftest import test_wallet as wallet_named

USERS = 24
OPENING = 1_000_000 * 1_000_000  # each user starts with 1,000,000 USDC
MAX_AMOUNT = 1_000_000  # no single movement exceeds 1 USDC: the plan can never overdraw
# A user action costs ~5 ms to sign and ~2-4 ms to verify (again on every resubmission and
# every audit): the big batches are smaller than the unsigned ledger's 50, 100 and 200.
BIG_BATCHES = (10, 20, 40)
EXPIRY = 4_102_444_800  # 2100-01-01: the plan's actions never expire
DOMAIN = genesis.l2_domain(genesis.DEFAULT_L2_CHAIN_ID)  # what Ledger.init records
STALL_SECONDS = 600


@cache
def wallets() -> tuple[Wallet, ...]:
    return tuple(wallet_named(f"crash-{i}") for i in range(USERS))


def users() -> list[str]:
    return [wallet.address for wallet in wallets()]


def is_user_action(request: TxRequest) -> bool:
    return scheme_for(request.kind) == USER


def _build(seed: int, segments: int) -> list[list[TxRequest]]:
    rng = random.Random(seed)
    owners = {wallet.address: wallet for wallet in wallets()}
    accounts = list(owners)
    nonces: dict[str, int] = defaultdict(int)
    onboard = [
        envelopes.request_for_onboarding(
            *envelopes.verify_onboarding(wallet.onboarding(DOMAIN), DOMAIN, wallet.l1_chain_id)
        )
        for wallet in wallets()
    ]
    fund = [
        OPERATOR.sign_system(operations.deposit(account, OPENING, f"crash-{seed}-0-{i}"))
        for i, account in enumerate(accounts)
    ]
    batches: list[list[TxRequest]] = [onboard + fund]

    def signed(owner: str, envelope: dict[str, Any]) -> TxRequest:
        verified = envelopes.verify_action(envelope, DOMAIN)
        assert verified.owner == owner
        return envelopes.request_for_action(verified)

    def request(key: str) -> TxRequest:
        source, target = rng.sample(accounts, 2)
        amount = rng.randint(1, MAX_AMOUNT)
        roll = rng.random()
        if roll < 0.15:
            deposit = operations.deposit(target, amount, key, {"source": "crash-test"})
            return OPERATOR.sign_system(deposit)
        wallet = owners[source]
        nonces[source] += 1
        nonce = nonces[source]
        if roll < 0.25:
            return signed(source, wallet.withdraw(source, amount, DOMAIN, nonce, EXPIRY))
        if roll < 0.35:
            margin = f"{source}:margin"
            return signed(source, wallet.transfer(source, margin, amount, DOMAIN, nonce, EXPIRY))
        return signed(source, wallet.transfer(source, target, amount, DOMAIN, nonce, EXPIRY))

    for _ in range(segments):
        for size in (1, 1, rng.choice(BIG_BATCHES)):
            b = len(batches)
            batches.append([request(f"crash-{seed}-{b}-{i}") for i in range(size)])
    return [[r._replace(auth=None) for r in batch] for batch in batches]


def plan(seed: int, segments: int, cache_file: Path | None = None) -> list[list[TxRequest]]:
    """Batch 0 onboards every user's wallet and funds every user (operator-signed
    deposits); then each segment is two single-transaction batches followed by one big
    batch (10, 20 or 40 transactions) of deposits (operator-signed), and transfers (also
    into sub-accounts) and withdrawals signed by the source's owner with the next nonce.
    Deposit keys are ``crash-SEED-BATCH-INDEX``, user action keys ``OWNER/NONCE``. With
    ``cache_file``, the plan is read from it if it exists, else built and written to it."""
    if cache_file is not None and cache_file.exists():
        data = json.loads(cache_file.read_text())
        assert (data["seed"], data["segments"]) == (seed, segments), "another plan's cache"
        return [
            [
                TxRequest(kind, key, tuple(Posting(*p) for p in postings), metadata)
                for kind, key, postings, metadata in batch
            ]
            for batch in data["batches"]
        ]
    batches = _build(seed, segments)
    if cache_file is not None:
        for request in (r for batch in batches for r in batch):
            assert (request.effective_at, request.reverses) == (None, None)
        rows = [
            [[r.kind, r.key, [list(p) for p in r.postings], r.metadata] for r in b] for b in batches
        ]
        data = {"seed": seed, "segments": segments, "batches": rows}
        partial = cache_file.with_name(f"{cache_file.name}.{os.getpid()}")
        partial.write_text(json.dumps(data))
        partial.replace(cache_file)  # atomic: a reader sees all of it or nothing
    return batches


def already_committed(book: Ledger, batch: list[TxRequest], refusal: NonceReused) -> list[Receipt]:
    """Receipts for a batch whose resubmission was refused with ``NonceReused``: every one
    of its keys must be in the ledger with the same payload (the batch committed before a
    crash); otherwise the refusal is genuine and is raised again."""
    receipts = []
    for request in batch:
        stored = book.store.transaction_by_key(request.key)
        if stored is None or stored.digest != request.digest():
            raise refusal
        receipts.append(Receipt(stored, duplicate=True))
    return receipts


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
    parser.add_argument("--plan", type=Path)
    parser.add_argument("--hold", action="store_true")
    stall = parser.add_mutually_exclusive_group()
    stall.add_argument("--stall-before-commit", type=int, metavar="N")
    stall.add_argument("--stall-after-commit", type=int, metavar="N")
    args = parser.parse_args(argv)

    batches = plan(args.seed, args.segments, args.plan)
    print("ready", flush=True)
    if args.hold and sys.stdin.readline().strip() != "go":
        return 4
    _trim_partial_line(args.log)
    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    current = writing = -1
    with Ledger(args.url) as book:
        # Warm up, so that the only database transaction inside a submit is its write.
        book.store.head()
        book.store.head()

        @event.listens_for(book.engine, "begin")
        def begin(_connection: Any) -> None:
            # After SQLite's BEGIN IMMEDIATE (registered first): the write lock is held.
            nonlocal writing
            if writing != current:
                writing = current
                print(f"writing {current}", flush=True)

        if args.stall_before_commit is not None:

            @event.listens_for(book.engine, "commit")
            def before_commit(_connection: Any) -> None:
                # Fires before the DBAPI COMMIT of the batch's transaction (reads roll back).
                if current == args.stall_before_commit:
                    _stall(current)

        for current, batch in enumerate(batches):
            print(f"begin {current}", flush=True)
            try:
                receipts = book.submit(batch)
            except NonceReused as refusal:
                assert any(is_user_action(request) for request in batch)
                receipts = already_committed(book, batch, refusal)
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
