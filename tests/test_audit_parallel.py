"""Signature checks spread over worker processes find the same first divergence."""

from __future__ import annotations

import json

from sqlalchemy import text

from ledger import Ledger
from tests.conftest import ALICE, ALICE_WALLET, BOB


def test_parallel_audit_matches_the_serial_one(book: Ledger) -> None:
    book.deposit(ALICE, "100")
    for nonce in range(1, 7):
        book.transfer(ALICE, BOB, nonce, wallet=ALICE_WALLET, nonce=nonce)
    book.seal()
    serial, parallel = book.audit(workers=1), book.audit(workers=2)
    assert serial.ok and parallel.ok
    assert (serial.transactions, serial.head_hash) == (parallel.transactions, parallel.head_hash)

    victim = book.store.head().seq - 2
    metadata = json.loads(book.transaction(victim).metadata)
    metadata["auth"]["signature"][0] = hex(int(metadata["auth"]["signature"][0], 16) + 1)
    with book.engine.begin() as connection:
        if book.store.postgres:
            connection.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            connection.execute(text("DROP TRIGGER transactions_no_update"))
        connection.execute(
            text("UPDATE transactions SET metadata = :m WHERE seq = :s"),
            {"m": json.dumps(metadata, sort_keys=True, separators=(",", ":")), "s": victim},
        )
    for workers in (1, 2):
        report = book.audit(workers=workers)
        assert report.divergence is not None and report.divergence.seq == victim
        assert any("signature check fails" in p for p in report.divergence.problems)
