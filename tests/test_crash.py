"""Crash safety: a writer process (tests/crash_writer.py) is SIGKILLed again and again while it
commits batches, and restarted each time; it resumes by resubmitting its deterministic plan
from the start (idempotency keys turn operator-signed events that already committed into
duplicates; a user action that already committed is refused as ``NonceReused``, and the
writer then finds its whole batch in the ledger and counts it as committed).

Afterwards: every key the writer acknowledged (logged and fsynced after COMMIT) is in the
ledger, no batch is partial, the ledger holds exactly genesis and then a prefix of the plan
in plan order, the audit (signatures included) passes, and resubmitting the whole plan
writes nothing. A second test parks the writer between its INSERTs and COMMIT (and between
COMMIT and its log line) and kills it there, so a kill inside a batch is certain rather
than likely.

Verifying a batch's signatures takes longer than writing it, so the random kills are timed
from the writer's ``writing N`` line (its database transaction has begun), not from
``begin N``: a kill while the signatures are still being checked is counted apart.
"""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import accumulate
from pathlib import Path

import pytest
from sqlalchemy import text

from ledger import Ledger, TxRequest
from ledger.errors import NonceReused
from tests.conftest import OPERATOR
from tests.crash_writer import is_user_action, plan

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261128
SEGMENTS = 18  # of the random-kill plan, on both stores (one plan to sign)
LINE_TIMEOUT = 60.0  # seconds to wait for the writer's next line (generous: slow CI)
RUNNING: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_writers() -> Iterator[None]:
    """Kill (by pid) any writer this test started and left running, e.g. after a failure."""
    yield
    while RUNNING:
        process = RUNNING.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


Plan = list[list[TxRequest]]


@pytest.fixture(scope="session")
def plans(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], tuple[Plan, Path]]:
    """``plans(segments)``: the plan and the file caching it for the writers (signing a
    plan takes seconds: each is built once per session)."""
    folder = tmp_path_factory.mktemp("plans")

    @cache
    def build(segments: int) -> tuple[Plan, Path]:
        path = folder / f"plan-{SEED}-{segments}.json"
        return plan(SEED, segments, path), path

    return build


def new_ledger(url: str) -> None:
    """Genesis, as an operator sets up a ledger; the writers then only submit."""
    Ledger.init(url, operator=OPERATOR, list_instruments=False).close()


@dataclass
class Writer:
    """One run of crash_writer.py; its stdout lines are read by a thread into a queue."""

    url: str
    log: Path
    segments: int
    plan_file: Path
    options: Sequence[str] = ()
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stderr = self.log.with_suffix(".stderr")
        self._queue: queue.Queue[str | None] = queue.Queue()
        args = [self.url, str(self.log), str(SEED), str(self.segments)]
        args += ["--plan", str(self.plan_file)]
        with self.stderr.open("a") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.crash_writer", *args, *self.options],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        RUNNING.append(self.process)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def go(self) -> None:
        """Start a writer spawned with ``--hold``."""
        assert self.wait_for("ready") == "ready", self.diagnose()
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, *wanted: str) -> str | None:
        """Read lines until one of ``wanted`` (or ``finished``); None at end of output."""
        while True:
            try:
                line = self._queue.get(timeout=LINE_TIMEOUT)
            except queue.Empty:
                self.kill()
                message = f"writer silent for {LINE_TIMEOUT}s; {self.diagnose()}"
                raise AssertionError(message) from None
            if line is None:
                return None
            self.lines.append(line)
            if line in wanted or line == "finished":
                return line

    def kill(self) -> None:
        """SIGKILL (no cleanup of any kind), then collect the rest of its output."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._reader.join()
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)

    def finish(self) -> None:
        """Let it run to the end of the plan; it must exit 0."""
        while self.wait_for() is not None:
            pass
        assert self.process.wait(timeout=LINE_TIMEOUT) == 0, self.diagnose()
        assert self.lines[-1] == "finished"

    def diagnose(self) -> str:
        return f"last lines {self.lines[-3:]}, stderr: {self.stderr.read_text()[-2000:]}"

    def in_flight(self) -> tuple[int, str] | None:
        """The batch it was inside (between ``begin`` and ``done``) when it died, if any, and
        how far it got: ``begin`` (verifying signatures), ``writing`` (inside the database
        transaction) or ``stalled``."""
        last = self.lines[-1] if self.lines else ""
        phase, _, batch = last.partition(" ")
        return (int(batch), phase) if phase in ("begin", "writing", "stalled") else None


def read_log(log: Path) -> list[tuple[int, int, list[str]]]:
    """``(batch, fresh, keys)`` per complete line of the writer's commit log."""
    if not log.exists():
        return []
    entries = []
    for line in log.read_text().splitlines(keepends=True):
        if line.endswith("\n"):  # a kill mid-write may leave a partial last line
            batch, fresh, *keys = line.split()
            entries.append((int(batch), int(fresh), keys))
    return entries


def stored_keys(url: str) -> list[str]:
    """Every idempotency key in the ledger after genesis (seq 1), in sequence order."""
    with Ledger(url) as book, book.engine.connect() as db:
        keys = list(db.execute(text("SELECT key FROM transactions ORDER BY seq")).scalars())
    assert keys[0] == "genesis"
    return keys[1:]


def presence(book: Ledger, batch: list[TxRequest]) -> bool:
    """Whether ``batch`` committed, checked key by key: all of it, or none of it."""
    found = [book.store.transaction_by_key(r.key) is not None for r in batch]
    assert all(found) or not any(found), f"partial batch: {sum(found)} of {len(found)} keys"
    return found[0]


def check_invariants(url: str, batches: list[list[TxRequest]], log: Path) -> int:
    """Acknowledged keys are stored; the ledger is a whole-batch prefix of the plan, in
    plan order; returns how many batches that prefix holds."""
    keys = stored_keys(url)
    boundaries = list(accumulate((len(b) for b in batches), initial=0))
    assert len(keys) in boundaries, f"{len(keys)} transactions: a batch committed partially"
    complete = boundaries.index(len(keys))
    assert keys == [r.key for batch in batches[:complete] for r in batch]
    stored = set(keys)
    for batch, fresh, logged in read_log(log):
        assert logged == [r.key for r in batches[batch]], f"log line of batch {batch} is wrong"
        assert fresh in (0, len(logged)), f"batch {batch} was partly new ({fresh})"
        missing = [key for key in logged if key not in stored]
        assert not missing, f"acknowledged but lost: {missing[:5]} (batch {batch})"
    return complete


def check_complete(url: str, batches: list[list[TxRequest]], log: Path) -> None:
    """After a run to the end: the whole plan, once, audited; resubmitting writes nothing
    (operator-signed batches come back as duplicates, batches with a user action are
    refused as replays)."""
    assert check_invariants(url, batches, log) == len(batches)
    entries = read_log(log)
    assert {batch for batch, _, _ in entries} == set(range(len(batches)))
    fresh_commits = Counter(batch for batch, fresh, _ in entries if fresh)
    assert max(fresh_commits.values()) == 1, "a batch was acknowledged as new twice"
    requests = [r for batch in batches for r in batch]
    with Ledger(url) as book:
        digests = {tx.key: tx.digest for tx in book.store.iter_transactions() if tx.seq > 1}
        assert digests == {r.key: r.digest() for r in requests}  # the stored payloads
        for batch in (batches[0], batches[-1]):
            assert presence(book, batch)
        report = book.audit()
        assert report.ok, report.divergence
        assert report.transactions == 1 + len(requests)
        head = book.store.head()
        replays = 0
        for batch in batches:
            if any(is_user_action(r) for r in batch):
                with pytest.raises(NonceReused, match="was already used"):
                    book.submit(batch)
                replays += 1
                continue
            receipts = book.submit(batch)
            assert all(receipt.duplicate for receipt in receipts)
            assert [receipt.tx.key for receipt in receipts] == [r.key for r in batch]
        assert 0 < replays < len(batches)  # both kinds of batch were resubmitted
        assert book.store.head() == head
        assert book.audit().ok


def is_postgres(url: str) -> bool:
    return url.startswith("postgres")


def _next_big_batch(batches: list[list[TxRequest]], start: int) -> int:
    return next((i for i in range(start, len(batches)) if len(batches[i]) > 1), start)


@pytest.mark.slow
def test_sigkill_at_random_points(
    db_url: str, tmp_path: Path, plans: Callable[[int], tuple[Plan, Path]]
) -> None:
    postgres = is_postgres(db_url)
    # A round starts a writer (importing the signature libraries takes a second), which
    # re-verifies the signatures of all it resubmits, and ends with an audit that verifies
    # them again: hence fewer rounds on SQLite than the unsigned ledger's 15 (at most 25).
    rounds, max_rounds = (6, 10) if postgres else (10, 16)
    min_mid_batch = 2 if postgres else 4  # kills that must land inside a new big batch
    # About the time a big batch's database transaction takes once its signatures are
    # verified: a few milliseconds for 20 transactions.
    max_delay = 0.012 if postgres else 0.004
    segments = SEGMENTS
    batches, plan_file = plans(segments)
    log = tmp_path / "committed.log"
    new_ledger(db_url)
    rng = random.Random(SEED)
    outcomes: Counter[str] = Counter()
    done = 0

    def enough() -> bool:
        mid = outcomes["mid-batch"] >= min_mid_batch and outcomes["mid-batch rolled back"] >= 1
        return done >= rounds and (mid or done >= max_rounds)

    upcoming = Writer(db_url, log, segments, plan_file, ["--hold"])
    while not enough():
        acknowledged = [batch for batch, fresh, _ in read_log(log) if fresh]
        new_from = max(acknowledged, default=-1) + 1
        target = _next_big_batch(batches, new_from + rng.randrange(3))
        writer = upcoming
        writer.go()
        # The next writer imports and loads its plan while this one works (start-up is
        # most of a round); it opens the database only after its "go".
        upcoming = Writer(db_url, log, segments, plan_file, ["--hold"])
        if writer.wait_for(f"writing {target}") != f"writing {target}":
            writer.finish()  # already past the target: the plan is done
            break
        time.sleep(rng.uniform(0, max_delay))
        writer.kill()
        done += 1
        flight = writer.in_flight()
        with Ledger(db_url) as book:
            if flight is None:
                outcomes["between batches"] += 1
            elif flight[0] < new_from:
                outcomes["replaying"] += 1
            elif flight[1] == "begin":
                # Killed while verifying the signatures of the batch after the target: its
                # database transaction had not begun.
                outcomes["verifying"] += 1
            else:
                committed = presence(book, batches[flight[0]])
                kind = "mid-batch" if len(batches[flight[0]]) > 1 else "mid-single"
                outcomes[kind] += 1
                outcomes[f"{kind} {'committed' if committed else 'rolled back'}"] += 1
            report = book.audit()
            assert report.ok, report.divergence
        check_invariants(db_url, batches, log)
    print(f"{done} kills on {'postgresql' if postgres else 'sqlite'}: {dict(outcomes)}")
    assert done >= rounds, "the plan ran out before the kill rounds did: enlarge it"
    assert outcomes["mid-batch"] >= min_mid_batch, f"too few kills inside a batch: {outcomes}"
    assert outcomes["mid-batch rolled back"] >= 1, outcomes
    upcoming.go()
    upcoming.finish()
    check_complete(db_url, batches, log)


@pytest.mark.parametrize("point", ["before-commit", "after-commit"])
def test_sigkill_inside_a_batch(
    db_url: str, tmp_path: Path, point: str, plans: Callable[[int], tuple[Plan, Path]]
) -> None:
    """Kill the writer while batch 6 (a big one) has every row written but no COMMIT yet, or
    COMMIT done but no acknowledgement: it is wholly absent, or wholly present and then
    resubmitted (refused as a replay of its user actions, and found committed)."""
    segments, victim = 3, 6
    batches, plan_file = plans(segments)
    assert len(batches[victim]) > 1
    assert any(is_user_action(r) for r in batches[victim])
    before = 1 + sum(len(b) for b in batches[:victim])  # genesis, then the plan
    log = tmp_path / "committed.log"
    new_ledger(db_url)

    writer = Writer(db_url, log, segments, plan_file, [f"--stall-{point}", str(victim)])
    follower = Writer(db_url, log, segments, plan_file, ["--hold"])  # starts up meanwhile
    assert writer.wait_for(f"stalled {victim}") == f"stalled {victim}", writer.diagnose()
    committed = point == "after-commit"
    with Ledger(db_url) as book:
        # Other connections see only committed data, while the writer is parked.
        assert book.store.head().seq == before + (len(batches[victim]) if committed else 0)
        assert presence(book, batches[victim]) is committed
    writer.kill()
    assert writer.in_flight() == (victim, "stalled")
    assert [batch for batch, _, _ in read_log(log)] == list(range(victim))
    assert check_invariants(db_url, batches, log) == victim + committed
    with Ledger(db_url) as book:
        assert presence(book, batches[victim]) is committed
        assert book.audit().ok

    follower.go()
    follower.finish()
    check_complete(db_url, batches, log)
    (_, fresh, _) = next(entry for entry in read_log(log) if entry[0] == victim)
    assert fresh == (0 if committed else len(batches[victim]))
