"""Ledger write and audit throughput, measured against baselines in the same run.

Prints one JSON object:

* ``transfers_per_s``: the journal engine (``SqlStore.append``) on transfers whose signatures
  were already verified (request building, idempotency, authorisation rules, validation,
  hashing, durable commit; verification is bench_signatures.py's) for batch sizes 1, 100 and
  1000 on a SQLite file with
  ``synchronous=FULL``, and on PostgreSQL when ``LEDGER_BENCH_PG_URL`` names a server (a
  scratch database is created there and dropped);
* ``raw_sqlite_transfers_per_s``: plain ``sqlite3.executemany`` of exactly the rows the ledger
  writes for the same transfers, in the same batches, same schema and pragmas, no logic: the
  limit on this machine;
* ``python_accounting_transfers_per_s``: the ``python-accounting`` package on the same workload,
  run in its own virtualenv (``LEDGER_BENCH_PA_PYTHON``; see scripts/setup_python_accounting.sh);
* ``audit_tx_per_s``: ``Ledger.audit`` of a ledger of signed transfers, every signature
  re-verified;
* ratios for batch 1000.

Usage: python scripts/bench_ledger.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ledger import Ledger
from ledger.core import operations
from ledger.core.authorization import USER, Auth, AuthState
from ledger.core.encoding import sha256
from ledger.core.journal import Journal, TxRecord, TxRequest
from ledger.store.database import database_url
from ledger.wallet import Wallet

ACCOUNTS = 200
SEED = 7
FUNDING = 10**15  # base units deposited into every account before the timed part
EXPIRY = 2**40  # far future: expiry is not what this measures
SCRIPTS = Path(__file__).resolve().parent
OPERATOR = Wallet(sha256(b"bench-operator").digest())
WALLETS = [Wallet(sha256(b"bench-wallet-%d" % i).digest()) for i in range(ACCOUNTS)]


def workload(transfers: int, seed: int = SEED) -> list[tuple[Wallet, str, int, int]]:
    """Deterministic transfers: (signer, target, amount, nonce)."""
    rng = random.Random(seed)
    nonces: dict[str, int] = {}
    plan = []
    for _ in range(transfers):
        source, target = rng.sample(WALLETS, 2)
        nonces[source.address] = nonces.get(source.address, 0) + 1
        plan.append((source, target.address, rng.randint(1, 10**9), nonces[source.address]))
    return plan


def authenticated(source: Wallet, target: str, amount: int, nonce: int) -> TxRequest:
    """A transfer as the engine receives it once its signature has been verified."""
    owner = source.address
    auth = Auth(USER, owner, nonce, EXPIRY, source.stark_public_key, owner)
    return operations.transfer(owner, target, amount, f"{owner}/{nonce}")._replace(auth=auth)


def funded_ledger(url: str) -> Ledger:
    """Genesis, every wallet onboarded (signed), every account funded (operator-signed)."""
    book = Ledger.init(url, operator=OPERATOR)
    book.submit([book.request_for(w.onboarding(book.domain)) for w in WALLETS])
    deposits = [operations.deposit(w.address, FUNDING, f"fund-{w.address}") for w in WALLETS]
    book.submit([OPERATOR.sign_system(d) for d in deposits])
    return book


def ledger_rate(url: str, batch: int, transfers: int) -> float:
    """Transfers per second through the journal engine (``SqlStore.append``: idempotency,
    authorisation rules, validation, hash chain, durable commit). Signature verification
    is measured separately by bench_signatures.py."""
    plan = workload(transfers)
    book = funded_ledger(url)
    base = book.store.head().seq
    started = time.perf_counter()
    for start in range(0, transfers, batch):
        requests = [authenticated(*step) for step in plan[start : start + batch]]
        book.store.append(requests, book.clock())
    elapsed = time.perf_counter() - started
    assert book.store.head().seq == base + transfers
    book.close()
    return transfers / elapsed


def audit_rate(url: str, transfers: int) -> float:
    """Full audit (every signature re-verified) of a ledger of signed transfers."""
    book = funded_ledger(url)
    signed = [
        source.transfer(source.address, target, amount, book.domain, nonce, EXPIRY)
        for source, target, amount, nonce in workload(transfers)
    ]
    for start in range(0, transfers, 100):
        book.submit([book.request_for(e) for e in signed[start : start + 100]])
    report = book.audit()
    assert report.ok, report.divergence
    book.close()
    return report.transactions / report.elapsed_s


def ledger_rows(book: Ledger, requests: list[TxRequest]) -> list[TxRecord]:
    """The records the engine would write for ``requests`` on ``book``, computed by its own
    pure core in memory."""
    state = AuthState({OPERATOR.address}, {w.address: w.stark_public_key for w in WALLETS})
    store = book.store
    journal = Journal(store.head(), store.current_balances(), store.current_versions(), state)
    return [journal.apply(r, r.digest(), book.clock()) for r in requests]


def raw_sqlite_rate(directory: str, batch: int, transfers: int) -> float:
    """executemany of the ledger's exact rows, same schema and pragmas, no logic."""
    path = f"{directory}/raw-{batch}.db"
    book = funded_ledger(f"sqlite:///{path}")
    records = ledger_rows(book, [authenticated(*step) for step in workload(transfers)])
    book.close()
    batches = []
    for start in range(0, transfers, batch):
        chunk = records[start : start + batch]
        balances: dict[tuple[str, str], int] = {}
        versions: dict[str, int] = {}
        postings = []
        for tx in chunk:
            for idx, p in enumerate(tx.postings):
                postings.append(
                    (tx.seq, idx, p.account, p.asset, p.amount, p.balance_after, p.version)
                )
                balances[(p.account, p.asset)] = p.balance_after
                versions[p.account] = p.version
        batches.append(
            (
                [
                    (
                        t.seq,
                        t.key,
                        t.kind,
                        t.effective_at,
                        t.recorded_at,
                        t.metadata,
                        t.reverses,
                        t.digest,
                        t.prev_hash,
                        t.hash,
                    )
                    for t in chunk
                ],
                postings,
                [(a, "user", 0, v) for a, v in sorted(versions.items())],
                [(a, s, b) for (a, s), b in sorted(balances.items())],
                (chunk[-1].seq, chunk[-1].hash, chunk[-1].recorded_at),
            )
        )
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    started = time.perf_counter()
    for txs, postings, accounts, balance_rows, head in batches:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "INSERT INTO transactions (seq, key, kind, effective_at, recorded_at, metadata, "
            "reverses, digest, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?)",
            txs,
        )
        connection.executemany(
            "INSERT INTO postings (seq, idx, account, asset, amount, balance_after, version) "
            "VALUES (?,?,?,?,?,?,?)",
            postings,
        )
        connection.executemany(
            "INSERT INTO accounts (id, kind, opened_seq, version) VALUES (?,?,?,?) "
            "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            accounts,
        )
        connection.executemany(
            "INSERT INTO balances (account, asset, balance) VALUES (?,?,?) "
            "ON CONFLICT (account, asset) DO UPDATE SET balance = excluded.balance",
            balance_rows,
        )
        connection.execute("UPDATE chain_head SET seq=?, hash=?, recorded_at=? WHERE id=1", head)
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return transfers / elapsed


def python_accounting_rate(transfers: int, batch: int) -> tuple[float | None, str | None]:
    interpreter = os.environ.get("LEDGER_BENCH_PA_PYTHON")
    if not interpreter:
        return None, "LEDGER_BENCH_PA_PYTHON is not set (scripts/setup_python_accounting.sh)"
    completed = subprocess.run(
        [
            interpreter,
            str(SCRIPTS / "python_accounting_workload.py"),
            "--accounts",
            "100",
            "--transfers",
            str(transfers),
            "--batch",
            str(batch),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        return None, completed.stderr.strip().splitlines()[-1]
    return float(json.loads(completed.stdout)["python_accounting_transfers_per_s"]), None


def postgres_scratch(admin_url: str) -> tuple[str, str]:
    admin = database_url(admin_url)
    name = f"ledger_bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return make_url(admin).set(database=name).render_as_string(hide_password=False), name


def drop_postgres(admin_url: str, name: str) -> None:
    engine = create_engine(database_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description="ledger throughput benchmark (JSON)")
    parser.add_argument("--quick", action="store_true", help="smaller workload")
    args = parser.parse_args()
    sizes = {1: 200, 100: 3000, 1000: 10000} if args.quick else {1: 500, 100: 10000, 1000: 50000}
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "accounts": ACCOUNTS,
        "transfers_per_batch_size": {str(b): n for b, n in sizes.items()},
    }
    ours: dict[str, float] = {}
    raw: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as directory:
        for batch, transfers in sizes.items():
            ours[str(batch)] = round(
                ledger_rate(f"sqlite:///{directory}/l-{batch}.db", batch, transfers)
            )
            raw[str(batch)] = round(raw_sqlite_rate(directory, batch, transfers))
        audited = 500 if args.quick else 2000
        result["audit_tx_per_s"] = round(audit_rate(f"sqlite:///{directory}/audit.db", audited))
        result["audited_transactions"] = audited
    result["transfers_per_s"] = {"sqlite": ours}
    result["raw_sqlite_transfers_per_s"] = raw
    pg_url = os.environ.get("LEDGER_BENCH_PG_URL")
    if pg_url:
        pg: dict[str, float] = {}
        for batch, transfers in sizes.items():
            url, name = postgres_scratch(pg_url)
            try:
                pg[str(batch)] = round(ledger_rate(url, batch, transfers))
            finally:
                drop_postgres(pg_url, name)
        result["transfers_per_s"]["postgresql"] = pg
    pa_transfers = 1000 if args.quick else 2000
    pa_rate, pa_error = python_accounting_rate(pa_transfers, 1000)
    result["python_accounting_transfers_per_s"] = None if pa_rate is None else round(pa_rate, 1)
    if pa_error:
        result["python_accounting_error"] = pa_error
    result["ratio_vs_raw_sqlite"] = round(ours["1000"] / raw["1000"], 3)
    result["ratio_vs_python_accounting"] = (
        None if pa_rate is None else round(ours["1000"] / pa_rate, 1)
    )
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
