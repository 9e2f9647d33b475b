"""Several OS processes write to one ledger at the same time.

Each worker (tests/concurrency_worker.py, started with the ``spawn`` context) opens its own
``Ledger(url)``, waits at a barrier and then submits its plan: A->B against B->A on the
same two hot accounts, batches over the hot accounts (some of which must fail as a whole),
and two workers sending the same idempotency keys with the same payloads. Afterwards the
ledger must hold exactly one transaction per key, gapless sequences, one unforked chain
that audits clean, and the balances the arithmetic predicts.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping

import pytest

from ledger import Ledger
from ledger.core.accounts import BRIDGE
from ledger.core.encoding import ZERO_HASH
from ledger.store.database import make_engine, migrate
from tests import concurrency_worker as worker
from tests.concurrency_worker import Item, Outcome, Step
from tests.conftest import ALICE, BOB, CAROL

DAVE = "0x" + "d4" * 20
FROZEN = "0x" + "f6" * 20  # holds 5 USDC; only ever asked for 6 (always refused)
NEVER = "0x" + "e5" * 20  # never credited: any debit is an unknown account
ONE = 1_000_000  # 1 USDC in base units
WORKER_TIMEOUT_S = 240


def transfer(source: str, target: str, units: int, key: str) -> Item:
    return ("transfer", source, target, units, key)


def deposit(target: str, units: int, key: str) -> Item:
    return ("deposit", "", target, units, key)


def withdrawal(source: str, units: int, key: str) -> Item:
    return ("withdrawal", source, "", units, key)


def legs(item: Item) -> list[tuple[str, int]]:
    kind, source, target, units, _ = item
    if kind == "deposit":
        return [(BRIDGE, -units), (target, units)]
    if kind == "withdrawal":
        return [(source, -units), (BRIDGE, units)]
    return [(source, -units), (target, units)]


def seed(book: Ledger, items: list[Item]) -> None:
    """Fund the accounts before the workers start (one batch, so sequences 1..len)."""
    receipts = book.submit([worker.request(item) for item in items])
    assert [r.seq for r in receipts] == list(range(1, len(items) + 1))


def run_workers(
    url: str, plans: Mapping[str, list[Step]], pause_s: float = 0.0
) -> dict[str, Outcome]:
    """Start one process per plan; they begin together at a barrier. Returns outcomes."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(plans))
    results = ctx.Queue()
    processes = [
        ctx.Process(
            target=worker.run,
            args=(name, url, steps, barrier, results, pause_s),
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
    seeds: list[Item],
    plans: Mapping[str, list[Step]],
    outcomes: Mapping[str, Outcome],
) -> dict[str, list[int]]:
    """Everything the ledger must satisfy after the run; returns each worker's sequences."""
    # The model: every item of a step that must succeed, once per key (payloads agree).
    committed: dict[str, Item] = {item[4]: item for item in seeds}
    refused_keys: set[str] = set()
    for steps in plans.values():
        for items, expected in steps:
            for item in items:
                if expected is not None:
                    refused_keys.add(item[4])
                    continue
                assert committed.setdefault(item[4], item) == item, "plan reuses a key"
    assert not refused_keys & committed.keys()
    balances: dict[str, int] = defaultdict(int)
    for item in committed.values():
        for account, units in legs(item):
            balances[account] += units

    # Each worker: no crash, exactly the expected refusals, a receipt for every other item.
    seen: dict[str, list[tuple[str, int, bytes, bool]]] = defaultdict(list)
    sequences: dict[str, list[int]] = {}
    for name, steps in plans.items():
        outcome = outcomes[name]
        assert outcome.crash is None, f"worker {name} crashed:\n{outcome.crash}"
        expected_refusals = {i: error for i, (_, error) in enumerate(steps) if error is not None}
        refusals = {index: error for index, error, _ in outcome.refusals}
        assert refusals == expected_refusals, (name, outcome.refusals)
        for index, _, message in outcome.refusals:
            items = steps[index][0]
            assert f"transaction {len(items)} of {len(items)}" in message, message
        expected_keys = [item[4] for items, error in steps if error is None for item in items]
        assert [key for _, key, _, _, _ in outcome.receipts] == expected_keys, name
        for _, key, seq, tx_hash, duplicate in outcome.receipts:
            seen[key].append((name, seq, tx_hash, duplicate))
        # One process commits in order: the sequences of its own writes only increase.
        # (Not of its duplicates: the other worker of a shared key may be far ahead.)
        sequences[name] = [seq for _, _, seq, _, duplicate in outcome.receipts if not duplicate]
        assert sequences[name] == sorted(set(sequences[name])), name

    # Exactly one transaction per key: one fresh receipt, the others duplicates of it.
    for key, receipts in seen.items():
        assert len({(seq, tx_hash) for _, seq, tx_hash, _ in receipts}) == 1, (key, receipts)
        fresh = [name for name, _, _, duplicate in receipts if not duplicate]
        assert len(fresh) == 1, (key, receipts)

    # The journal: gapless 1..n, n = distinct keys, chained without forks, keys as receipted.
    txs = list(book.store.iter_transactions())
    assert [tx.seq for tx in txs] == list(range(1, len(committed) + 1))
    assert {tx.key for tx in txs} == committed.keys()
    assert not refused_keys & {tx.key for tx in txs}
    prev_hash = ZERO_HASH
    for tx in txs:
        assert tx.prev_hash == prev_hash, f"chain forks at {tx.seq}"
        prev_hash = tx.hash
        if tx.key in seen:
            _, seq, tx_hash, _ = seen[tx.key][0]
            assert (seq, tx_hash) == (tx.seq, tx.hash)
    assert len({tx.hash for tx in txs}) == len(txs)
    assert book.store.head().seq == len(committed)

    # Balances: as the arithmetic says, zero-sum, and the audit replays clean.
    stored = book.store.current_balances()
    assert stored == {(account, "USDC"): units for account, units in balances.items()}
    assert sum(stored.values()) == 0
    report = book.audit()
    assert report.ok, report.to_json()
    assert report.transactions == len(committed)
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
    batches: list[Step] = []
    for i in range(60):
        items = (
            transfer(ALICE, CAROL, ONE // 4, f"bt-{i}-0"),
            transfer(BOB, DAVE, ONE // 2, f"bt-{i}-1"),
            transfer(CAROL, ALICE, ONE // 10, f"bt-{i}-2"),
            transfer(DAVE, BOB, ONE // 5, f"bt-{i}-3"),
        )
        if i % 10 == 4:  # an overdraft as the last item: the whole batch is refused
            batches.append(
                ((*items, withdrawal(FROZEN, 6 * ONE, f"bt-{i}-x")), "InsufficientFunds")
            )
        elif i % 10 == 9:  # an unknown source as the last item: likewise
            batches.append(((*items, transfer(NEVER, ALICE, ONE, f"bt-{i}-x")), "UnknownAccount"))
        else:
            batches.append((items, None))
    shared = [
        transfer(CAROL, BOB, 3 * ONE // 10, f"dup-{i}") if i % 2 else deposit(DAVE, ONE, f"dup-{i}")
        for i in range(200)
    ]
    plans: dict[str, list[Step]] = {
        "a-to-b": [((transfer(ALICE, BOB, ONE, f"ab-{i}"),), None) for i in range(300)],
        "b-to-a": [((transfer(BOB, ALICE, ONE, f"ba-{i}"),), None) for i in range(300)],
        "batches": batches,
        # The same keys and payloads from three processes: two in the same order (they
        # race for every key), one in batches of four from the other end.
        "shared-1": [((item,), None) for item in shared],
        "shared-2": [((item,), None) for item in shared],
        "shared-batched": [
            (tuple(reversed(shared[i - 4 : i])), None) for i in range(len(shared), 0, -4)
        ],
    }
    with Ledger(postgres_url) as book:
        seed(book, seeds)
        outcomes = run_workers(postgres_url, plans)
        sequences = check(book, seeds, plans, outcomes)
        assert interleaved(sequences["a-to-b"], sequences["b-to-a"])
        assert interleaved(sequences["a-to-b"], sequences["batches"])
        # A and B end where the arithmetic says: +-300 cancel; the 48 good batches move
        # A -0.25 +0.10 and B -0.50 +0.20; the shared keys move 0.3 from C to B 100 times.
        good = 48
        assert book.balance(ALICE).units == 1_000 * ONE - good * (ONE // 4) + good * (ONE // 10)
        assert book.balance(BOB).units == (
            1_000 * ONE - good * (ONE // 2) + good * (ONE // 5) + 100 * (3 * ONE // 10)
        )
        assert book.balance(FROZEN).units == 5 * ONE
        assert book.store.head().seq == len(seeds) + 600 + good * 4 + len(shared)


def test_processes_contend_on_sqlite(sqlite_url: str) -> None:
    """The same on the embedded store: two processes, hot accounts and shared keys.
    SQLite serialises writers with BEGIN IMMEDIATE and the busy timeout."""
    seeds = [deposit(ALICE, 500 * ONE, "seed-a"), deposit(BOB, 500 * ONE, "seed-b")]
    shared = [transfer(ALICE, CAROL, ONE // 2, f"dup-{i}") for i in range(50)]
    plans: dict[str, list[Step]] = {"a-to-b": [], "b-to-a": []}
    for i in range(150):
        plans["a-to-b"].append(((transfer(ALICE, BOB, ONE, f"ab-{i}"),), None))
        plans["b-to-a"].append(((transfer(BOB, ALICE, ONE, f"ba-{i}"),), None))
        if i % 3 == 0:
            plans["a-to-b"].append(((shared[i // 3],), None))
            plans["b-to-a"].append(((shared[i // 3],), None))
    with Ledger(sqlite_url) as book:
        seed(book, seeds)
        outcomes = run_workers(sqlite_url, plans, pause_s=0.001)
        sequences = check(book, seeds, plans, outcomes)
        assert interleaved(sequences["a-to-b"], sequences["b-to-a"])
        assert book.balance(ALICE).units == 500 * ONE - 50 * (ONE // 2)
        assert book.balance(BOB).units == 500 * ONE
        assert book.balance(CAROL).units == 50 * (ONE // 2)
        assert book.store.head().seq == len(seeds) + 300 + len(shared)


def test_concurrent_reversals_of_the_same_transactions(db_url: str) -> None:
    """Two operators reverse the same 40 transactions at the same time, each with their own
    keys. Each transaction is reversed exactly once; the other operator is told
    AlreadyReversed (not an opaque database error), and nothing else is written."""
    count = 40
    seeds = [deposit(ALICE if i % 2 else BOB, (i + 1) * ONE, f"seed-{i}") for i in range(count)]
    plans: dict[str, list[Step]] = {
        name: [((("reverse", "", "", seq, f"{name}-{seq}"),), None) for seq in range(1, count + 1)]
        for name in ("operator-1", "operator-2")
    }
    with Ledger(db_url) as book:
        seed(book, seeds)
        outcomes = run_workers(db_url, plans)
        refused: dict[int, list[tuple[str, str]]] = defaultdict(list)
        reversed_by: dict[int, list[str]] = defaultdict(list)
        for name, outcome in outcomes.items():
            assert outcome.crash is None, f"worker {name} crashed:\n{outcome.crash}"
            for index, error, message in outcome.refusals:
                refused[index + 1].append((error, message))
            for index, key, _, _, duplicate in outcome.receipts:
                assert not duplicate and key == f"{name}-{index + 1}"
                reversed_by[index + 1].append(name)
        assert sorted(reversed_by) == list(range(1, count + 1))
        assert all(len(names) == 1 for names in reversed_by.values()), reversed_by
        wrong = {seq: r for seq, r in refused.items() if r[0][0] != "AlreadyReversed"}
        assert not wrong, f"{len(wrong)} losers got another error, e.g. {next(iter(wrong.items()))}"
        assert sorted(refused) == list(range(1, count + 1))
        txs = list(book.store.iter_transactions())
        assert [tx.seq for tx in txs] == list(range(1, 2 * count + 1))
        assert sorted(tx.reverses or 0 for tx in txs[count:]) == list(range(1, count + 1))
        assert book.balance(ALICE).units == book.balance(BOB).units == 0
        assert book.audit().ok
