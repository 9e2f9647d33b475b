"""`ledger watch` for the fault tests (tests/test_settlement_faults.py), run as a subprocess
and SIGKILLed in the middle of a sync.

    python -m tests.watch_worker BATCH LEDGER-ARGUMENTS...

Prints ``ready`` once its imports are done, waits for a ``go`` line on stdin (so a test can
start it while it prepares the chain, and not wait for Python's start-up afterwards), then
runs ``ledger.cli.main(LEDGER-ARGUMENTS)`` unchanged, except that with ``BATCH`` > 0 the
watcher credits the deposits it reads ``BATCH`` at a time (``ledger.chain.watcher.MAX_BATCH``;
the journal's limit, 8190, is what ``0`` keeps). A sync of a few hundred deposits then
commits many atomic batches one after another, so a kill timed from the first batch that
shows up in the database lands between two of them, before the payouts and the cursor.
"""

from __future__ import annotations

import sys

from ledger.chain import watcher
from ledger.cli import main


def run(argv: list[str]) -> int:
    batch, *arguments = argv
    if int(batch) > 0:
        watcher.MAX_BATCH = int(batch)  # type: ignore[attr-defined]  # the journal's, imported
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 4
    return main(arguments)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
