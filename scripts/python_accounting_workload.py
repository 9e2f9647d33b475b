"""Run our transfer workload on the PyPI package ``python-accounting`` (2.0.0) for comparison.

How our transfer maps onto python-accounting:

* Setup, not timed: ``Base.metadata.create_all`` builds the schema in a new SQLite file. Then
  one ``Entity`` (committing it makes the library open a ``ReportingPeriod`` for the current
  year), one ``Currency`` ("USD") and ``accounts`` accounts of type ``Account.AccountType.BANK``
  (an asset type). No opening balances, because the library lets balances go negative.
* One transfer of ``amount`` from account A to account B is one ``JournalEntry`` (in
  ``python_accounting.transactions``). Its main account is A, and ``credited=True`` is the
  default. It has one ``LineItem`` on B, which the library marks as a debit. Calling
  ``JournalEntry.post(session)`` writes two ``Ledger`` rows, CREDIT A and DEBIT B. An
  ``after_insert`` listener sets each row's sha256 ``hash`` from its fields and the hash of the
  ledger row with ``id - 1``. This is the same call sequence the library's README uses.
* Batching: ``Ledger.post`` calls ``session.commit()`` once for every posted transaction. So
  that SQLite commits once per ``batch`` transfers, the session is bound to a ``Connection``
  whose outer transaction we begin ourselves. In SQLAlchemy's default
  ``join_transaction_mode``, ``session.commit()`` then still flushes and expires the session's
  objects, as it normally does, but does not commit the outer transaction. We commit it every
  ``batch`` transfers. The library's own code is not changed.

python-accounting 2.0.0 needs ``SQLAlchemy>=2.1.4,<2.2`` while the ledger pins ``<2.1``, so it
runs in its own virtualenv (``scripts/setup_python_accounting.sh`` makes one);
``scripts/bench_ledger.py`` calls this script with that interpreter and reads its JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from datetime import datetime
from decimal import Decimal

from python_accounting.database.session import get_session  # type: ignore[import-untyped]
from python_accounting.models import (  # type: ignore[import-untyped]
    Account,
    Base,
    Currency,
    Entity,
    LineItem,
)
from python_accounting.transactions import JournalEntry  # type: ignore[import-untyped]
from sqlalchemy import create_engine


def run_python_accounting(
    db_path: str, accounts: int, transfers: int, batch: int, seed: int = 7
) -> float:
    """Returns transfers per second (wall clock, time.perf_counter) for posting `transfers`
    transfers between `accounts` accounts, committing every `batch` transfers, on a SQLite
    file at db_path."""
    if accounts < 2 or transfers < 1 or batch < 1:
        raise ValueError("need accounts >= 2, transfers >= 1, batch >= 1")
    if os.path.exists(db_path):
        raise FileExistsError(f"{db_path} exists; the benchmark needs a fresh database")

    rng = random.Random(seed)
    work: list[tuple[int, int, Decimal]] = []
    for _ in range(transfers):
        src, dst = rng.sample(range(accounts), 2)
        work.append((src, dst, Decimal(rng.randint(1, 1000))))

    engine = create_engine(f"sqlite:///{db_path}")
    try:
        Base.metadata.create_all(engine)
        with get_session(engine) as setup:
            entity = Entity(name="Benchmark")
            setup.add(entity)
            setup.commit()  # the library opens the current ReportingPeriod here
            currency = Currency(name="US Dollars", code="USD", entity_id=entity.id)
            setup.add(currency)
            setup.commit()
            rows = [
                Account(
                    name=f"Account {i}",
                    account_type=Account.AccountType.BANK,
                    currency_id=currency.id,
                    entity_id=entity.id,
                )
                for i in range(accounts)
            ]
            setup.add_all(rows)
            setup.commit()
            entity_id: int = entity.id
            ids: list[int] = [a.id for a in rows]

        with engine.connect() as conn:
            conn.begin()
            session = get_session(conn)
            # A new AccountingSession learns its entity from the first object added to it.
            # For a JournalEntry, autoflush runs before that and fails, so set it here.
            session.entity = session.get(Entity, entity_id)

            start = time.perf_counter()
            for n, (src, dst, amount) in enumerate(work, 1):
                entry = JournalEntry(
                    narration="transfer",
                    transaction_date=datetime.now(),
                    account_id=ids[src],  # credited (source)
                    entity_id=entity_id,
                )
                session.add(entry)
                session.flush()
                item = LineItem(
                    narration="transfer",
                    account_id=ids[dst],  # debited (destination)
                    amount=amount,
                    entity_id=entity_id,
                )
                session.add(item)
                session.flush()
                entry.line_items.add(item)
                entry.post(session)  # writes the two hashed Ledger rows
                if n % batch == 0 or n == transfers:
                    conn.commit()
                    if n < transfers:
                        conn.begin()
            elapsed = time.perf_counter() - start
            session.close()
    finally:
        engine.dispose()
    return transfers / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--transfers", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rate = run_python_accounting(
            os.path.join(tmp, "python_accounting.db"), args.accounts, args.transfers, args.batch
        )
    print(json.dumps({"python_accounting_transfers_per_s": round(rate, 2), "batch": args.batch}))


if __name__ == "__main__":
    main()
