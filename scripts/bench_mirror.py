"""StarkNet balance-mirror benchmark against the local JSON-RPC test node
(tests/starknet_node.py), which runs in a child process so that its CPU does not compete
with the mirror's; each ledger is a fresh SQLite file. Prints one JSON object:

* ``transfer_events_ingested_per_s`` / ``ingest``: ``Transfer`` events among authorised
  accounts, spread over many blocks, read by one ``sync(from_block=0, confirmations=0)``:
  events per second of that sync, the journal entries it wrote, the ``starknet_getEvents``
  pages it read, and where the time went: ``journal_s`` is the time inside the ledger
  (operator-signing and submitting the entries), ``node_reads_s`` an identical read-only
  pass (``StarknetNode.transfers`` plus the block-hash checks the sync makes; best of 3),
  and ``other_s`` the rest of the sync (chain checks, grouping, building entries): an
  estimate by difference, noisy on a --quick run;
* ``accounts_refreshed_per_s`` / ``refresh``: N authorised accounts opened by one sync
  (``balance_of`` of every account at the pinned block, 16 calls in flight, then one
  opening entry each); and ``StarknetNode.balances`` for all N in one gather against the
  same N ``balance_of`` awaited one after the other (best of 3 each, in this run).

The test node serialises requests (one lock), so the gather's gain here is the overlap of
client-side work (HTTP, starknet-py's parsing) with the node's, not a real node's
parallelism: a remote node adds network latency, which the gather hides far better.

    python scripts/bench_mirror.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the test node lives in tests/

from ledger import Ledger  # noqa: E402
from ledger.chain.mirror import DEFAULT_CHUNK_SIZE, sync  # noqa: E402
from ledger.chain.starknet import MAX_CONCURRENT_CALLS, StarknetNode  # noqa: E402
from ledger.core.accounts import mirror_account  # noqa: E402
from ledger.core.amounts import MIRROR_ASSET  # noqa: E402
from ledger.core.encoding import sha256  # noqa: E402
from ledger.core.journal import MAX_BATCH, TxRequest  # noqa: E402
from ledger.store.sql import Receipt  # noqa: E402
from ledger.wallet.signer import Wallet  # noqa: E402
from tests.starknet_node import SPEC_VERSION, StarknetTestNode  # noqa: E402

TOKEN = 0x0512FEAC6339FF7889822CB5AA2A86C848E9D392BB0E3E237C008674FEED8343
OPERATOR = Wallet(sha256(b"bench-mirror-operator").digest())
SEED = 7
REPEATS = 3


@dataclass(frozen=True, slots=True)
class Activity:
    """What the child's node holds: ``events`` transfers among ``accounts`` over
    ``blocks`` blocks (mints when a sender is short), or, with ``events == 0``, one mint to
    each account in block 1."""

    accounts: tuple[int, ...]
    events: int
    blocks: int


# ---------------------------------------------------------------------- the node process
def _build(node: StarknetTestNode, activity: Activity) -> None:
    node.deploy_token(TOKEN)
    accounts = activity.accounts
    if activity.events == 0:
        for i, account in enumerate(accounts):
            node.mint(TOKEN, account, 1_000_000 * (1 + i % 97))
        node.mine(3)
        return
    rng = random.Random(SEED)
    held = dict.fromkeys(accounts, 0)
    per_block, extra = divmod(activity.events, activity.blocks)
    for block in range(activity.blocks):
        for _ in range(per_block + (block < extra)):
            sender, recipient = rng.sample(accounts, 2)
            amount = rng.randint(1, 5_000_000)
            if held[sender] >= amount:
                node.transfer(TOKEN, sender, recipient, amount)
                held[sender] -= amount
            else:
                node.mint(TOKEN, recipient, amount)
            held[recipient] += amount
        node.mine()


def _serve(conn: Connection, activity: Activity) -> None:
    """The child: a test node holding ``activity``, answering the parent's requests."""
    with StarknetTestNode() as node:
        _build(node, activity)
        conn.send((node.url, node.head))
        while True:
            request = conn.recv()
            if request == "stop":
                return
            if request == "calls":
                conn.send(dict(node.call_counts))
            elif request == "reset":
                node.reset_calls()
                conn.send(None)
            else:  # ("balances", block)
                conn.send([node.balance_of(TOKEN, a, request[1]) for a in activity.accounts])


class NodeProcess:
    """A StarknetTestNode in a child process (``with NodeProcess(...) as node``)."""

    def __init__(self, activity: Activity) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        process = context.Process(target=_serve, args=(child, activity), daemon=True)
        self._process = process
        self._process.start()
        self.url, self.head = self._conn.recv()

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self._conn.send("stop")
        self._process.join(timeout=10)

    def calls(self) -> dict[str, int]:
        self._conn.send("calls")
        calls: dict[str, int] = self._conn.recv()
        return calls

    def reset_calls(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def balances(self, block: int) -> list[int]:
        """balance_of of every account at ``block``, from the node's own state."""
        self._conn.send(("balances", block))
        balances: list[int] = self._conn.recv()
        return balances


# ---------------------------------------------------------------------- the ledger
class TimedLedger(Ledger):
    """A Ledger that adds up the time spent signing and submitting transactions."""

    journal_s = 0.0

    def operator_signed(self, request: TxRequest) -> TxRequest:
        started = time.perf_counter()
        try:
            return super().operator_signed(request)
        finally:
            self.journal_s += time.perf_counter() - started

    def submit(self, requests: Sequence[TxRequest]) -> list[Receipt]:
        started = time.perf_counter()
        try:
            return super().submit(requests)
        finally:
            self.journal_s += time.perf_counter() - started


def wallets(count: int, tag: str) -> list[Wallet]:
    return [Wallet(sha256(f"bench-mirror-{tag}-{i}".encode()).digest()) for i in range(count)]


def ledger(folder: str, name: str, owners: Sequence[Wallet]) -> TimedLedger:
    """A fresh SQLite ledger with ``owners`` onboarded and each mirror-authorised."""
    book = TimedLedger.init(f"sqlite:///{folder}/{name}.db", operator=OPERATOR)
    assert isinstance(book, TimedLedger)
    onboardings = [w.onboarding(book.domain) for w in owners]
    authorisations = [w.mirror(TOKEN, book.domain, nonce=1) for w in owners]
    for envelopes in (onboardings, authorisations):
        for i in range(0, len(envelopes), MAX_BATCH):
            book.submit([book.request_for(e) for e in envelopes[i : i + MAX_BATCH]])
    book.journal_s = 0.0
    return book


def mirrored(book: Ledger, owners: Sequence[Wallet]) -> list[int]:
    return [book.balance(mirror_account(w.address), MIRROR_ASSET.code).units for w in owners]


# ---------------------------------------------------------------------- 1. ingest
async def read_only_pass(url: str, first: int, last: int) -> tuple[int, float]:
    """The node reads a sync makes for blocks ``first..last``: every Transfer page, then
    each block with events (its hash) and the last block, as ``_Sync._canonical`` does.
    Best of REPEATS; returns the transfers read and the seconds."""
    times: list[float] = []
    async with StarknetNode(url) as node:
        await node.spec_version()  # what a sync also sends first (and opens the connection)
        for _ in range(REPEATS):
            started = time.perf_counter()
            found = await node.transfers(TOKEN, first, last, DEFAULT_CHUNK_SIZE)
            blocks = sorted({t.block_number for t in found})
            await asyncio.gather(*(node.block(n) for n in blocks))
            await node.block(last)
            times.append(time.perf_counter() - started)
    return len(found), min(times)


def bench_ingest(folder: str, events: int, blocks: int, accounts: int) -> dict[str, Any]:
    owners = wallets(accounts, "ingest")
    book = ledger(folder, "ingest", owners)
    activity = Activity(tuple(w.stark_account for w in owners), events, blocks)
    with book, NodeProcess(activity) as node:
        node.reset_calls()
        started = time.perf_counter()
        report = sync(book, node.url, TOKEN, from_block=0, confirmations=0)
        sync_s = time.perf_counter() - started
        calls = node.calls()
        read, reads_s = asyncio.run(read_only_pass(node.url, 1, node.head))
        exact = mirrored(book, owners) == node.balances(node.head)
        assert report.events == events == read and report.to_block == blocks, report
    return {
        "events": report.events,
        "blocks": blocks,
        "accounts": accounts,
        "entries_written": report.entries,
        "getEvents_pages": calls.get("starknet_getEvents", 0),
        "events_per_page": DEFAULT_CHUNK_SIZE,
        "node_calls": sum(calls.values()),
        "sync_s": round(sync_s, 3),
        "journal_s": round(book.journal_s, 3),
        "node_reads_s": round(reads_s, 3),
        "other_s": round(sync_s - book.journal_s - reads_s, 3),
        "mirrored_equals_balance_of": exact,
    }


# ---------------------------------------------------------------------- 2. refresh
async def balance_reads(url: str, addresses: Sequence[int], block: int) -> dict[str, Any]:
    """Best of REPEATS: one gather of every balance_of, and the same awaited in turn."""
    gathered: list[float] = []
    sequential: list[float] = []
    async with StarknetNode(url) as node:
        await node.balance_of(TOKEN, addresses[0], block)  # opens the connection
        for _ in range(REPEATS):
            started = time.perf_counter()
            together = await node.balances(TOKEN, addresses, block)
            gathered.append(time.perf_counter() - started)
            started = time.perf_counter()
            one_by_one = [await node.balance_of(TOKEN, a, block) for a in addresses]
            sequential.append(time.perf_counter() - started)
            assert together == one_by_one
    return {
        "values": together,
        "gather_s": min(gathered),
        "sequential_s": min(sequential),
    }


def bench_refresh(folder: str, accounts: int) -> dict[str, Any]:
    owners = wallets(accounts, "refresh")
    book = ledger(folder, "refresh", owners)
    addresses = [w.stark_account for w in owners]
    with book, NodeProcess(Activity(tuple(addresses), 0, 0)) as node:
        node.reset_calls()
        started = time.perf_counter()
        report = sync(book, node.url, TOKEN, confirmations=0)  # opens every account at the head
        sync_s = time.perf_counter() - started
        calls = node.calls()
        expected = node.balances(node.head)
        exact = mirrored(book, owners) == expected
        assert report.opened == accounts and report.from_block == node.head, report
        reads = asyncio.run(balance_reads(node.url, addresses, node.head))
        exact = exact and reads["values"] == expected
    gather_s, sequential_s = reads["gather_s"], reads["sequential_s"]
    return {
        "accounts": accounts,
        "opening_sync_s": round(sync_s, 3),
        "journal_s": round(book.journal_s, 3),
        "balance_of_calls": calls.get("starknet_call", 0),
        "in_flight": MAX_CONCURRENT_CALLS,
        "balances_gather_s": round(gather_s, 3),
        "balances_sequential_s": round(sequential_s, 3),
        "balance_of_per_s_gathered": round(accounts / gather_s),
        "balance_of_per_s_sequential": round(accounts / sequential_s),
        "gather_speedup": round(sequential_s / gather_s, 2),
        "mirrored_equals_balance_of": exact,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run (CI smoke test)")
    args = parser.parse_args()
    events, blocks, ingest_accounts, refresh_accounts = (
        (2_000, 20, 20, 100) if args.quick else (20_000, 200, 50, 500)
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        ingest = bench_ingest(folder, events, blocks, ingest_accounts)
        refresh = bench_refresh(folder, refresh_accounts)
    result = {
        "python": platform.python_version(),
        "node": f"tests/starknet_node.py (JSON-RPC {SPEC_VERSION}), child process, 127.0.0.1",
        "store": "SQLite file",
        "quick": args.quick,
        "transfer_events_ingested_per_s": round(ingest["events"] / ingest["sync_s"]),
        "ingest": ingest,
        "accounts_refreshed_per_s": round(refresh["accounts"] / refresh["opening_sync_s"]),
        "refresh": refresh,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
