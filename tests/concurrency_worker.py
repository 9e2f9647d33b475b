"""A worker process for tests/test_concurrency.py: opens its own ``Ledger(url)`` (with the
operator key), signs its whole plan, waits at a barrier so every worker starts together,
then submits the plan and reports every receipt and every refusal back through a queue.
Started with the ``spawn`` context, so everything here is importable and every argument
picklable."""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ledger import Ledger, TxRequest
from ledger.core import operations
from ledger.errors import LedgerError
from ledger.wallet import Wallet
from tests.conftest import OPERATOR
from tests.conftest import test_wallet as wallet_named

EXPIRY = 4_102_444_800  # 2100-01-01: the signed actions never expire in these tests
# A step that several workers send (the same signed user action): it commits in exactly
# one of them, and the others are refused with NonceReused.
RACED = "raced"


class Item(NamedTuple):
    """One transaction. ``kind`` is deposit | withdrawal | transfer | reverse (then ``units``
    is the sequence to reverse; sent with Ledger.reverse). Deposits and reversals are
    operator-signed and ``key`` is their idempotency key; withdrawals and transfers are
    signed by the source's owner and ``key`` is ``OWNER/NONCE`` (the worker signs them with
    that nonce), unless ``envelope`` carries the signed action already."""

    kind: str
    source: str
    target: str
    units: int
    key: str
    envelope: Mapping[str, Any] | None = None


# One call: the items submitted together (one atomic batch) and the name of the error
# class it must fail with, None when it must succeed, or RACED.
Step = tuple[tuple[Item, ...], str | None]


@dataclass
class Outcome:
    """What one worker saw: receipts ``(step, key, seq, hash, duplicate)`` and refusals
    ``(step, error class name, message)``; ``crash`` is a traceback if it died."""

    name: str
    receipts: list[tuple[int, str, int, bytes, bool]] = field(default_factory=list)
    refusals: list[tuple[int, str, str]] = field(default_factory=list)
    crash: str | None = None


def envelope(item: Item, wallet: Wallet, domain: Any) -> dict[str, Any]:
    """The signed user action ``item`` asks for (its key names the owner and nonce)."""
    owner, _, nonce = item.key.rpartition("/")
    assert owner == wallet.address, (item, wallet.address)
    if item.kind == "withdrawal":
        return wallet.withdraw(item.source, item.units, domain, int(nonce), EXPIRY)
    assert item.kind == "transfer", item
    return wallet.transfer(item.source, item.target, item.units, domain, int(nonce), EXPIRY)


def request(item: Item, book: Ledger, wallets: Mapping[str, Wallet]) -> TxRequest:
    """The signed request for ``item``: an operator-signed deposit, or a user action
    signed by the wallet of its key's owner (or as it was signed already)."""
    if item.kind == "deposit":
        return OPERATOR.sign_system(operations.deposit(item.target, item.units, item.key))
    if item.envelope is not None:
        return book.request_for(item.envelope)
    owner = item.key.rpartition("/")[0]
    return book.request_for(envelope(item, wallets[owner], book.domain))


def run(
    name: str,
    url: str,
    steps: list[Step],
    barrier: Any,
    results: Any,
    pause_s: float = 0.0,
    signers: Sequence[str] = (),
) -> None:
    """Entry point of a worker process. ``signers``: names of the test wallets
    (``tests.conftest.test_wallet``) whose user actions it signs. ``pause_s``: think time
    after each call (SQLite's busy handler is not fair: a writer committing back to back
    can starve the other)."""
    outcome = Outcome(name)
    try:
        with Ledger(url, operator=OPERATOR) as book:
            book.store.head()  # connect and warm up before the start signal
            book.store.head()
            # Sign everything before the start signal: signing takes longer than writing.
            wallets = {wallet.address: wallet for wallet in map(wallet_named, signers)}
            calls: list[list[TxRequest] | Item] = []
            for items, _expected in steps:
                if items[0].kind == "reverse":
                    assert len(items) == 1, "a reversal is submitted on its own"
                    calls.append(items[0])
                else:
                    calls.append([request(item, book, wallets) for item in items])
            barrier.wait(timeout=120)
            for index, call in enumerate(calls):
                try:
                    if isinstance(call, Item):
                        reason = f"{name} undoes {call.units}"
                        receipts = [book.reverse(call.units, reason=reason, key=call.key)]
                    else:
                        receipts = book.submit(call)
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
