"""Several OS processes write to one ledger at the same time.

Each worker (tests/concurrency_worker.py, started with the ``spawn`` context) opens its own
``Ledger(url)``, signs its plan (user actions with the owner's wallet and explicit
increasing nonces, one worker per owner; deposits and reversals with the operator key),
waits at a barrier and then submits it: A->B against B->A on the same two hot accounts,
batches over the hot accounts (some of which must fail as a whole), several workers sending
operator-signed deposits with the same idempotency keys and payloads, and two workers
sending the very same signed user actions. Afterwards the ledger must hold exactly one
transaction per key, gapless sequences after genesis and the onboardings, one unforked
chain that audits clean (signatures included), and the balances the arithmetic predicts.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from itertools import count

import pytest

from ledger import Ledger
from ledger.core.accounts import BRIDGE, owner_of
from ledger.core.encoding import ZERO_HASH
from ledger.store.database import make_engine, migrate
from ledger.wallet import Wallet
from tests import concurrency_worker as worker
from tests.concurrency_worker import RACED, Item, Outcome, Step
from tests.conftest import ALICE, BOB, CAROL, open_book
from tests.conftest import test_wallet as wallet_named

ONE = 1_000_000  # 1 USDC in base units
WORKER_TIMEOUT_S = 240
# Wallets beyond conftest's ALICE, BOB and CAROL, by test-wallet name.
DAVE_WALLET = wallet_named("dave")
FROZEN_WALLET = wallet_named("frozen")  # holds 5 USDC; only ever asked for 6 (always refused)
ERIN_WALLET = wallet_named("erin")  # signs the actions two workers both send
DAVE, FROZEN, ERIN = DAVE_WALLET.address, FROZEN_WALLET.address, ERIN_WALLET.address
NEVER = f"{CAROL}:never"  # CAROL's sub-account, never credited: any debit is unknown


def transfer(source: str, target: str, units: int, nonce: int) -> Item:
    """A transfer signed by the source's owner with ``nonce``."""
    return Item("transfer", source, target, units, f"{owner_of(source)}/{nonce}")


def withdrawal(source: str, units: int, nonce: int) -> Item:
    return Item("withdrawal", source, "", units, f"{owner_of(source)}/{nonce}")


def deposit(target: str, units: int, key: str) -> Item:
    return Item("deposit", "", target, units, key)


class Nonces:
    """The next nonce of each owner (a plan's user actions are signed in plan order)."""

    def __init__(self) -> None:
        self._next: dict[str, Iterator[int]] = defaultdict(lambda: count(1))

    def __call__(self, account: str) -> int:
        return next(self._next[owner_of(account)])


def presigned(book: Ledger, wallet: Wallet, items: Sequence[Item]) -> list[Item]:
    """The same items with their envelopes signed by ``wallet`` once, here: every worker
    that sends them sends the same bytes."""
    return [item._replace(envelope=worker.envelope(item, wallet, book.domain)) for item in items]


def legs(item: Item) -> list[tuple[str, int]]:
    if item.kind == "deposit":
        return [(BRIDGE, -item.units), (item.target, item.units)]
    if item.kind == "withdrawal":
        return [(item.source, -item.units), (BRIDGE, item.units)]
    return [(item.source, -item.units), (item.target, item.units)]


def new_book(url: str) -> Ledger:
    """Genesis, ALICE, BOB and CAROL onboarded (conftest), and the wallets used here."""
    book = open_book(url)
    for wallet in (DAVE_WALLET, FROZEN_WALLET, ERIN_WALLET):
        book.onboard(wallet)
    return book


def seed(book: Ledger, items: list[Item]) -> int:
    """Fund the accounts before the workers start (one batch of operator-signed deposits,
    right after the onboardings). Returns the sequence the seeds follow."""
    opening = book.store.head().seq
    receipts = book.submit([worker.request(item, book, {}) for item in items])
    assert [r.seq for r in receipts] == list(range(opening + 1, opening + len(items) + 1))
    return opening


def run_workers(
    url: str,
    plans: Mapping[str, list[Step]],
    pause_s: float = 0.0,
    signers: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Outcome]:
    """Start one process per plan; they begin together at a barrier. Returns outcomes.
    ``signers``: per worker, the names of the test wallets whose actions it signs."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(plans))
    results = ctx.Queue()
    processes = [
        ctx.Process(
            target=worker.run,
            args=(name, url, steps, barrier, results, pause_s, (signers or {}).get(name, ())),
            name=f"ledger-worker-{name}",
        )
        for name, steps in plans.items()
    ]
    for process in processes:
        process.start()
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    try:
        while len(outcomes) < len(processes):
            try:
                outcomes.append(results.get(timeout=1))
            except queue.Empty:
                died = [p.name for p in processes if p.exitcode not in (None, 0)]
                assert not died, f"worker processes died without reporting: {died}"
                assert time.monotonic() < deadline, "workers did not finish in time"
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
    assert all(process.exitcode == 0 for process in processes)
    return {outcome.name: outcome for outcome in outcomes}


def check(
    book: Ledger,
    opening: int,
    seeds: list[Item],
    plans: Mapping[str, list[Step]],
    outcomes: Mapping[str, Outcome],
) -> dict[str, list[int]]:
    """Everything the ledger must satisfy after the run; returns each worker's sequences.
    ``opening``: the transactions before the seeds (genesis and the onboardings)."""
    # The model: every item of a step that must succeed (or that workers race to send),
    # once per key (payloads agree).
    committed: dict[str, Item] = {item.key: item for item in seeds}
    refused_keys: set[str] = set()
    senders: Counter[str] = Counter()  # how many workers send each raced key
    for steps in plans.values():
        for items, expected in steps:
            for item in items:
                if expected not in (None, RACED):
                    refused_keys.add(item.key)
                    continue
                assert committed.setdefault(item.key, item) == item, "plan reuses a key"
                if expected == RACED:
                    senders[item.key] += 1
    assert not refused_keys & committed.keys()
    assert all(n >= 2 for n in senders.values()), "a raced action has a single sender"
    balances: dict[str, int] = defaultdict(int)
    for item in committed.values():
        for account, units in legs(item):
            balances[account] += units

    # Each worker: no crash, exactly the expected refusals, a receipt for every other item;
    # a raced step either commits or is refused as a replay (NonceReused).
    seen: dict[str, list[tuple[str, int, bytes, bool]]] = defaultdict(list)
    replays: Counter[str] = Counter()
    sequences: dict[str, list[int]] = {}
    for name, steps in plans.items():
        outcome = outcomes[name]
        assert outcome.crash is None, f"worker {name} crashed:\n{outcome.crash}"
        raced = {i for i, (_, error) in enumerate(steps) if error == RACED}
        expected_refusals = {
            i: error for i, (_, error) in enumerate(steps) if error not in (None, RACED)
        }
        refusals = {index: error for index, error, _ in outcome.refusals if index not in raced}
        assert refusals == expected_refusals, (name, outcome.refusals)
        lost = set()
        for index, error, message in outcome.refusals:
            items = steps[index][0]
            if index in raced:
                assert error == "NonceReused" and "was already used" in message, message
                lost.add(index)
                replays.update(item.key for item in items)
            else:
                assert f"transaction {len(items)} of {len(items)}" in message, message
        expected_keys = [
            item.key
            for i, (items, error) in enumerate(steps)
            if error is None or (error == RACED and i not in lost)
            for item in items
        ]
        assert [key for _, key, _, _, _ in outcome.receipts] == expected_keys, name
        for _, key, seq, tx_hash, duplicate in outcome.receipts:
            seen[key].append((name, seq, tx_hash, duplicate))
        # One process commits in order: the sequences of its own writes only increase.
        # (Not of its duplicates: the other worker of a shared key may be far ahead.)
        sequences[name] = [seq for _, _, seq, _, duplicate in outcome.receipts if not duplicate]
        assert sequences[name] == sorted(set(sequences[name])), name

    # Exactly one transaction per key: one fresh receipt, the others duplicates of it. A
    # signed user action sent by several workers: one receipt, every other sender refused.
    for key, receipts in seen.items():
        assert len({(seq, tx_hash) for _, seq, tx_hash, _ in receipts}) == 1, (key, receipts)
        fresh = [name for name, _, _, duplicate in receipts if not duplicate]
        assert len(fresh) == 1, (key, receipts)
    for key, n in senders.items():
        assert len(seen[key]) == 1 and replays[key] == n - 1, (key, seen[key], replays[key])

    # The journal: gapless 1..n after the opening transactions, n = distinct keys, chained
    # without forks, keys as receipted.
    txs = list(book.store.iter_transactions())
    assert [tx.seq for tx in txs] == list(range(1, opening + len(committed) + 1))
    assert {tx.kind for tx in txs[:opening]} == {"operator_keys", "listing", "onboarding"}
    assert {tx.key for tx in txs[opening:]} == committed.keys()
    assert not refused_keys & {tx.key for tx in txs}
    prev_hash = ZERO_HASH
    for tx in txs:
        assert tx.prev_hash == prev_hash, f"chain forks at {tx.seq}"
        prev_hash = tx.hash
        if tx.key in seen:
            _, seq, tx_hash, _ = seen[tx.key][0]
            assert (seq, tx_hash) == (tx.seq, tx.hash)
    assert len({tx.hash for tx in txs}) == len(txs)
    assert book.store.head().seq == opening + len(committed)

    # Balances: as the arithmetic says, zero-sum, and the audit replays clean.
    stored = book.store.current_balances()
    assert stored == {(account, "USDC"): units for account, units in balances.items()}
    assert sum(stored.values()) == 0
    report = book.audit()
    assert report.ok, report.to_json()
    assert report.transactions == opening + len(committed)
    return sequences


def interleaved(first: list[int], second: list[int]) -> bool:
    """True when the two workers' commits overlap in time (neither ran wholly first)."""
    return min(first) < max(second) and min(second) < max(first)


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/ledger.db"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url


def test_processes_contend_on_hot_accounts_postgres(postgres_url: str) -> None:
    seeds = [deposit(account, 1_000 * ONE, f"seed-{account}") for account in (ALICE, BOB)]
    seeds += [deposit(account, 1_000 * ONE, f"seed-{account}") for account in (CAROL, DAVE)]
    seeds.append(deposit(FROZEN, 5 * ONE, "seed-frozen"))
    seeds.append(deposit(ERIN, 100 * ONE, "seed-erin"))
    # Nobody but the owner can sign for an account, and its nonces must increase in commit
    # order: each owner's actions come from one worker (but for the raced ones). The
    # batches credit the hot accounts A and B from C and D.
    nonce = Nonces()
    batches: list[Step] = []
    for i in range(60):
        items = (
            transfer(CAROL, ALICE, ONE // 4, nonce(CAROL)),
            transfer(DAVE, BOB, ONE // 2, nonce(DAVE)),
            transfer(CAROL, DAVE, ONE // 10, nonce(CAROL)),
            transfer(DAVE, CAROL, ONE // 5, nonce(DAVE)),
        )
        if i % 10 == 4:  # an overdraft as the last item: the whole batch is refused
            refused = withdrawal(FROZEN, 6 * ONE, nonce(FROZEN))
            batches.append(((*items, refused), "InsufficientFunds"))
        elif i % 10 == 9:  # an unknown source as the last item: likewise
            refused = transfer(NEVER, ALICE, ONE, nonce(NEVER))
            batches.append(((*items, refused), "UnknownAccount"))
        else:
            batches.append((items, None))
    shared = [
        deposit(BOB, 3 * ONE // 10, f"dup-{i}") if i % 2 else deposit(DAVE, ONE, f"dup-{i}")
        for i in range(200)
    ]
    signers = {"a-to-b": ["alice"], "b-to-a": ["bob"], "batches": ["carol", "dave", "frozen"]}
    with new_book(postgres_url) as book:
        # The very same signed actions (ERIN -> A) from two processes, in the same order:
        # each commits once, and the other sender is told NonceReused (a replay, not an
        # idempotent duplicate).
        same = presigned(
            book, ERIN_WALLET, [transfer(ERIN, ALICE, ONE // 10, nonce(ERIN)) for _ in range(40)]
        )
        racing: list[Step] = []
        for i, item in enumerate(shared):
            racing.append(((item,), None))
            if i % 5 == 4:
                racing.append(((same[i // 5],), RACED))
        plans: dict[str, list[Step]] = {
            "a-to-b": [((transfer(ALICE, BOB, ONE, nonce(ALICE)),), None) for _ in range(150)],
            "b-to-a": [((transfer(BOB, ALICE, ONE, nonce(BOB)),), None) for _ in range(150)],
            "batches": batches,
            # The same keys and payloads from three processes: two in the same order (they
            # race for every key, and for the signed actions), one in batches of four from
            # the other end.
            "shared-1": racing,
            "shared-2": racing,
            "shared-batched": [
                (tuple(reversed(shared[i - 4 : i])), None) for i in range(len(shared), 0, -4)
            ],
        }
        opening = seed(book, seeds)
        outcomes = run_workers(postgres_url, plans, signers=signers)
        sequences = check(book, opening, seeds, plans, outcomes)
        assert interleaved(sequences["a-to-b"], sequences["b-to-a"])
        assert interleaved(sequences["a-to-b"], sequences["batches"])
        # A and B end where the arithmetic says: +-150 cancel; the 48 good batches move
        # C -> A 0.25 and D -> B 0.50; E sends A 0.1 40 times; the shared keys deposit 0.3
        # into B 100 times.
        good = 48
        assert book.balance(ALICE).units == 1_000 * ONE + good * (ONE // 4) + 40 * (ONE // 10)
        assert book.balance(BOB).units == (1_000 * ONE + good * (ONE // 2) + 100 * (3 * ONE // 10))
        assert book.balance(FROZEN).units == 5 * ONE
        assert book.balance(ERIN).units == 100 * ONE - 40 * (ONE // 10)
        assert book.store.head().seq == opening + len(seeds) + 300 + good * 4 + 200 + 40


def test_processes_contend_on_sqlite(sqlite_url: str) -> None:
    """The same on the embedded store: two processes, hot accounts, shared deposit keys and
    the same signed actions. SQLite serialises writers with BEGIN IMMEDIATE and the busy
    timeout."""
    seeds = [deposit(ALICE, 500 * ONE, "seed-a"), deposit(BOB, 500 * ONE, "seed-b")]
    seeds.append(deposit(ERIN, 10 * ONE, "seed-e"))
    nonce = Nonces()
    shared = [deposit(CAROL, ONE // 2, f"dup-{i}") for i in range(50)]
    plans: dict[str, list[Step]] = {"a-to-b": [], "b-to-a": []}
    with new_book(sqlite_url) as book:
        same = presigned(
            book, ERIN_WALLET, [transfer(ERIN, CAROL, ONE // 10, nonce(ERIN)) for _ in range(25)]
        )
        for i in range(150):
            plans["a-to-b"].append(((transfer(ALICE, BOB, ONE, nonce(ALICE)),), None))
            plans["b-to-a"].append(((transfer(BOB, ALICE, ONE, nonce(BOB)),), None))
            if i % 3 == 0:
                plans["a-to-b"].append(((shared[i // 3],), None))
                plans["b-to-a"].append(((shared[i // 3],), None))
            if i % 6 == 1:
                plans["a-to-b"].append(((same[i // 6],), RACED))
                plans["b-to-a"].append(((same[i // 6],), RACED))
        opening = seed(book, seeds)
        signers = {"a-to-b": ["alice"], "b-to-a": ["bob"]}
        outcomes = run_workers(sqlite_url, plans, pause_s=0.001, signers=signers)
        sequences = check(book, opening, seeds, plans, outcomes)
        assert interleaved(sequences["a-to-b"], sequences["b-to-a"])
        assert book.balance(ALICE).units == 500 * ONE
        assert book.balance(BOB).units == 500 * ONE
        assert book.balance(CAROL).units == 50 * (ONE // 2) + 25 * (ONE // 10)
        assert book.balance(ERIN).units == 10 * ONE - 25 * (ONE // 10)
        assert book.store.head().seq == opening + len(seeds) + 300 + len(shared) + len(same)


def test_concurrent_reversals_of_the_same_transactions(db_url: str) -> None:
    """Two operators reverse the same 40 transactions at the same time, each with their own
    keys. Each transaction is reversed exactly once; the other operator is told
    AlreadyReversed (not an opaque database error), and nothing else is written."""
    count = 40
    seeds = [deposit(ALICE if i % 2 else BOB, (i + 1) * ONE, f"seed-{i}") for i in range(count)]
    with new_book(db_url) as book:
        opening = seed(book, seeds)
        first = opening + 1  # the seeds are first..last
        targets = range(first, first + count)
        plans: dict[str, list[Step]] = {
            name: [((Item("reverse", "", "", seq, f"{name}-{seq}"),), None) for seq in targets]
            for name in ("operator-1", "operator-2")
        }
        outcomes = run_workers(db_url, plans)
        refused: dict[int, list[tuple[str, str]]] = defaultdict(list)
        reversed_by: dict[int, list[str]] = defaultdict(list)
        for name, outcome in outcomes.items():
            assert outcome.crash is None, f"worker {name} crashed:\n{outcome.crash}"
            for index, error, message in outcome.refusals:
                refused[first + index].append((error, message))
            for index, key, _, _, duplicate in outcome.receipts:
                assert not duplicate and key == f"{name}-{first + index}"
                reversed_by[first + index].append(name)
        assert sorted(reversed_by) == list(targets)
        assert all(len(names) == 1 for names in reversed_by.values()), reversed_by
        wrong = {seq: r for seq, r in refused.items() if r[0][0] != "AlreadyReversed"}
        assert not wrong, f"{len(wrong)} losers got another error, e.g. {next(iter(wrong.items()))}"
        assert sorted(refused) == list(targets)
        txs = list(book.store.iter_transactions())
        assert [tx.seq for tx in txs] == list(range(1, opening + 2 * count + 1))
        assert sorted(tx.reverses or 0 for tx in txs[opening + count :]) == list(targets)
        assert book.balance(ALICE).units == book.balance(BOB).units == 0
        assert book.audit().ok
