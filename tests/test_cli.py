"""The ``ledger`` CLI, driven through ``ledger.cli.main`` (and, for exit codes and stderr of
the real console script, a couple of subprocesses).

Covers the exact output shapes (receipts, balance, history JSON/CSV, tx, seal/block, audit,
proof files), idempotent retries, offline proof verification of good, tampered and malformed
files, the deterministic demo, and the error contract: one ``error:`` line on stderr, exit 2,
nothing written. Store-dependent tests run on SQLite and PostgreSQL (``db_url``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from ledger import Ledger
from ledger.cli import HISTORY_COLUMNS, main
from ledger.core.blocks import BlockHeader
from ledger.core.encoding import chain_hash
from ledger.core.journal import ChainHead
from ledger.store.database import make_engine, migrate
from tests.conftest import (
    ALICE,
    BOB,
    CAROL,
    STORES,
    _admin_execute,
    _with_database,
    drop_postgres_database,
    new_postgres_database,
    pg_admin_url,
)

HASH = re.compile(r"^0x[0-9a-f]{64}$")
RECEIPT_KEYS = ["seq", "hash", "kind", "key", "duplicate", "recorded_at", "postings"]
POSTING_KEYS = ["account", "asset", "amount", "balance_after"]
CONSOLE_SCRIPT = Path(sys.executable).parent / "ledger"


@pytest.fixture(autouse=True)
def _no_ambient_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_DB_URL", raising=False)


class Cli:
    """Runs ``main`` against one database and captures what it printed."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*argv, "--db", self.url])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert (code, err) == (0, ""), (argv, code, err)
        return out

    def json(self, *argv: str) -> Any:
        return json.loads(self.ok(*argv, "--json"))

    def head(self) -> ChainHead:
        with Ledger(self.url) as book:
            return book.store.head()


@pytest.fixture
def cli(db_url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    """The CLI on a migrated database, on each store."""
    return Cli(db_url, capsys)


@pytest.fixture
def sqlite_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """The CLI on a fresh SQLite file initialised with ``ledger init``."""
    runner = Cli(f"sqlite:///{tmp_path}/l.db", capsys)
    runner.ok("init")
    return runner


@pytest.fixture(scope="module", params=STORES)
def refusing_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database per store shared by the error cases (they must write nothing, which
    each case checks): ALICE holds 10 USDC from a deposit with key ``dep-1``."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('refusals')}/l.db"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
    else:
        url = new_postgres_database()
    with Ledger(url) as book:
        book.deposit(ALICE, "10", key="dep-1")
    yield url
    if request.param != "sqlite":
        drop_postgres_database(url)


@pytest.fixture(scope="module", params=STORES)
def empty_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database that was never initialised, on each store (shared: the tests using it
    check that it stays empty)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('empty')}/never-initialised.db"
        return
    admin = pg_admin_url()
    assert admin is not None
    name = f"ledger_empty_{uuid.uuid4().hex[:12]}"
    _admin_execute(f"CREATE DATABASE {name} TEMPLATE template0")
    url = _with_database(admin, name)
    yield url
    drop_postgres_database(url)


def assert_refused(result: tuple[int, str, str], fragment: str) -> str:
    """Exit 2, nothing on stdout, exactly one ``error:`` line on stderr."""
    code, out, err = result
    assert code == 2, (code, out, err)
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("error: "), err
    assert fragment in err, err
    return err


def seed(cli: Cli) -> None:
    """The README tour: ALICE ends at 60.25, BOB at 34.75, head seq 3."""
    cli.ok("deposit", ALICE, "100", "--key", "dep-1")
    cli.ok("transfer", ALICE, BOB, "39.75", "--key", "order-7")
    cli.ok("withdraw", BOB, "5")


# --------------------------------------------------------------------------- writes
def test_deposit_withdraw_transfer_print_seq_and_hash(cli: Cli) -> None:
    outputs = [
        cli.ok("deposit", ALICE, "100"),
        cli.ok("transfer", ALICE, BOB, "39.75"),
        cli.ok("withdraw", BOB, "5"),
    ]
    with Ledger(cli.url) as book:
        for seq, (out, kind) in enumerate(
            zip(outputs, ["deposit", "transfer", "withdrawal"], strict=True), start=1
        ):
            expected = f"seq {seq} hash 0x{book.transaction(seq).hash.hex()} {kind}\n"
            assert out == expected


def test_receipt_json_shape(cli: Cli) -> None:
    deposit = cli.json("deposit", ALICE, "100", "--key", "dep-1")
    assert list(deposit) == RECEIPT_KEYS
    assert deposit["seq"] == 1 and HASH.match(deposit["hash"])
    assert (deposit["kind"], deposit["key"], deposit["duplicate"]) == ("deposit", "dep-1", False)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", deposit["recorded_at"])
    assert deposit["postings"] == [
        {
            "account": "system:bridge",
            "asset": "USDC",
            "amount": "-100.00",
            "balance_after": "-100.00",
        },
        {"account": ALICE, "asset": "USDC", "amount": "100.00", "balance_after": "100.00"},
    ]
    transfer = cli.json("transfer", ALICE, BOB, "39.75", "--key", "order-7")
    assert (transfer["seq"], transfer["kind"], transfer["key"]) == (2, "transfer", "order-7")
    assert [list(p) for p in transfer["postings"]] == [POSTING_KEYS, POSTING_KEYS]
    assert [(p["account"], p["amount"], p["balance_after"]) for p in transfer["postings"]] == [
        (ALICE, "-39.75", "60.25"),
        (BOB, "39.75", "39.75"),
    ]
    withdrawal = cli.json("withdraw", BOB, "5")
    assert withdrawal["kind"] == "withdrawal" and withdrawal["key"].startswith("auto:")
    assert [(p["account"], p["amount"], p["balance_after"]) for p in withdrawal["postings"]] == [
        (BOB, "-5.00", "34.75"),
        ("system:bridge", "5.00", "-95.00"),
    ]
    with Ledger(cli.url) as book:
        assert transfer["hash"] == "0x" + book.transaction(2).hash.hex()


def test_key_retry_prints_duplicate_and_writes_nothing(cli: Cli) -> None:
    first = cli.json("deposit", ALICE, "100", "--key", "dep-1")
    head = cli.head()
    again = cli.ok("deposit", ALICE, "100", "--key", "dep-1")
    assert again == (
        f"seq 1 hash {first['hash']} deposit (already recorded with this key; nothing written)\n"
    )
    again_json = cli.json("deposit", ALICE, "100.000000", "--key", "dep-1")
    assert again_json["duplicate"] is True
    assert {k: v for k, v in again_json.items() if k != "duplicate"} == {
        k: v for k, v in first.items() if k != "duplicate"
    }
    assert cli.head() == head
    assert cli.json("balance", ALICE)["balance"] == "100.00"


def test_reverse(cli: Cli) -> None:
    cli.ok("deposit", ALICE, "100", "--key", "dep-1")
    cli.ok("transfer", ALICE, BOB, "39.75", "--key", "order-7")
    receipt = cli.json("reverse", "2", "--reason", "wrong recipient", "--key", "fix-2")
    assert (receipt["seq"], receipt["kind"], receipt["key"]) == (3, "reversal", "fix-2")
    assert [(p["account"], p["amount"]) for p in receipt["postings"]] == [
        (ALICE, "39.75"),
        (BOB, "-39.75"),
    ]
    assert cli.json("balance", ALICE)["balance"] == "100.00"
    assert cli.json("balance", BOB)["balance"] == "0.00"
    assert_refused(cli("reverse", "2", "--reason", "again"), "already reversed by 3")
    assert_refused(cli("reverse", "3", "--reason", "undo"), "itself a reversal")
    assert json.loads(cli.ok("tx", "3"))["key"] == "fix-2"


# --------------------------------------------------------------------------- reads
def test_balance_json_shape(cli: Cli) -> None:
    seed(cli)
    assert cli.json("balance", ALICE) == {
        "account": ALICE,
        "asset": "USDC",
        "balance": "60.25",
        "seq": 3,
    }
    assert cli.json("balance", "0x" + BOB[2:].upper()) == {
        "account": BOB,
        "asset": "USDC",
        "balance": "34.75",
        "seq": 3,
    }
    assert cli.json("balance", ALICE, "--at-seq", "1") == {
        "account": ALICE,
        "asset": "USDC",
        "balance": "100.00",
        "seq": 1,
    }
    assert cli.json("balance", "system:bridge")["balance"] == "-95.00"
    assert cli.ok("balance", ALICE) == f"{ALICE}  60.25 USDC  (as of seq 3)\n"


@pytest.fixture(scope="module", params=STORES)
def history_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A read-only ledger shared by the statement and ``tx`` tests, on each store."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('history')}/l.db"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
    else:
        url = new_postgres_database()
    with Ledger(url) as book:
        book.deposit(ALICE, "100", key="h-1")
        book.transfer(ALICE, BOB, "39.75", key="h-2")
        book.withdraw(ALICE, "10.5", key="h-3")
        book.transfer(BOB, ALICE, "0.000001", key="h-4")
        book.deposit(CAROL, "1", key="h-5")  # not ALICE's business
    yield url
    if request.param != "sqlite":
        drop_postgres_database(url)


@pytest.fixture
def reader(history_url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(history_url, capsys)


EXPECTED_HISTORY = [
    (1, "deposit", "100.00", "100.00", "system:bridge", "h-1"),
    (2, "transfer", "-39.75", "60.25", BOB, "h-2"),
    (3, "withdrawal", "-10.50", "49.75", "system:bridge", "h-3"),
    (4, "transfer", "0.000001", "49.750001", BOB, "h-4"),
]


def test_history_json(reader: Cli) -> None:
    cli = reader
    data = cli.json("history", ALICE)
    assert list(data) == ["account", "asset", "lines"]
    assert (data["account"], data["asset"]) == (ALICE, "USDC")
    assert all(list(line) == list(HISTORY_COLUMNS) for line in data["lines"])
    assert [
        (r["seq"], r["kind"], r["amount"], r["balance"], r["counterparty"], r["key"])
        for r in data["lines"]
    ] == EXPECTED_HISTORY
    running = Decimal(0)
    for line in data["lines"]:
        running += Decimal(line["amount"])
        assert Decimal(line["balance"]) == running
    assert data["lines"][-1]["balance"] == cli.json("balance", ALICE)["balance"]


def test_history_csv(reader: Cli) -> None:
    cli = reader
    out = cli.ok("history", ALICE, "--csv")
    assert out.splitlines()[0] == "seq,recorded_at,kind,amount,balance,counterparty,key"
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [
        (int(r["seq"]), r["kind"], r["amount"], r["balance"], r["counterparty"], r["key"])
        for r in rows
    ] == EXPECTED_HISTORY
    running = Decimal(0)
    for row in rows:
        running += Decimal(row["amount"])
        assert Decimal(row["balance"]) == running


def test_history_text(reader: Cli) -> None:
    cli = reader
    lines = cli.ok("history", ALICE).splitlines()
    assert lines[0] == f"statement of {ALICE} (USDC)"
    assert lines[1].split() == [
        "seq",
        "recorded",
        "(UTC)",
        "kind",
        "amount",
        "balance",
        "counterparty",
    ]
    assert len(lines) == 2 + len(EXPECTED_HISTORY)
    assert lines[-1].split()[0] == "4" and lines[-1].split()[-3:] == ["0.000001", "49.750001", BOB]


def test_tx_prints_one_transaction(reader: Cli) -> None:
    cli = reader
    first = json.loads(cli.ok("tx", "1"))
    second = json.loads(cli.ok("tx", "2"))
    assert list(second) == [*RECEIPT_KEYS, "prev_hash"]
    assert (second["seq"], second["kind"], second["key"], second["duplicate"]) == (
        2,
        "transfer",
        "h-2",
        False,
    )
    assert first["prev_hash"] == "0x" + "00" * 32
    assert second["prev_hash"] == first["hash"]
    with Ledger(cli.url) as book:
        record = book.transaction(2)
        assert second["hash"] == "0x" + chain_hash(record.prev_hash, record.encode()).hex()
    assert_refused(cli("tx", "99"), "no transaction with sequence 99")


# --------------------------------------------------------------------------- blocks, proofs
def test_seal_text_and_json(cli: Cli) -> None:
    seed(cli)
    lines = cli.ok("seal").splitlines()
    fields = dict(line.split(maxsplit=1) for line in lines)
    assert list(fields) == [
        "number",
        "first_seq",
        "last_seq",
        "sealed_at",
        "leaf_count",
        "prev_block_hash",
        "tx_head_hash",
        "state_root",
        "withdrawal_root",
        "hash",
    ]
    assert (fields["number"], fields["first_seq"], fields["last_seq"], fields["leaf_count"]) == (
        "1",
        "1",
        "3",
        "3",
    )
    assert fields["tx_head_hash"] == "0x" + cli.head().hash.hex()
    assert_refused(cli("seal"), "nothing to seal")
    cli.ok("deposit", CAROL, "1")
    second = cli.json("seal")
    header = BlockHeader.from_json(second)
    assert second == header.to_json()
    assert (header.number, header.first_seq, header.last_seq, header.leaf_count) == (2, 4, 4, 4)
    assert header.prev_block_hash.hex() == fields["hash"][2:]
    assert cli.json("block") == second
    assert cli.json("block", "1")["hash"] == fields["hash"]
    assert_refused(cli("block", "7"), "no block number 7")


def write_proof(cli: Cli, path: Path, *extra: str) -> dict[str, Any]:
    out = cli.ok("proof", ALICE, *extra)
    path.write_text(out)
    data: dict[str, Any] = json.loads(out)
    return data


def verify(cli: Cli, path: Path) -> tuple[int, str, str]:
    cli.capsys.readouterr()
    code = main(["verify-proof", str(path)])
    out, err = cli.capsys.readouterr()
    return code, out, err


def test_proof_then_verify_proof(cli: Cli, tmp_path: Path) -> None:
    seed(cli)
    assert_refused(cli("proof", ALICE), "no block has been sealed yet")
    header = cli.json("seal")
    data = write_proof(cli, tmp_path / "p.json")
    assert (data["account"], data["balance"], data["balance_units"]) == (ALICE, "60.25", "60250000")
    assert data["block"] == header
    code, out, err = verify(cli, tmp_path / "p.json")
    assert (code, err) == (0, "")
    assert out == (
        f"valid: {ALICE} holds 60.25 USDC in block 1 (state root {header['state_root']})\n"
    )
    # A proof against an older block stays valid after more activity.
    cli.ok("transfer", ALICE, CAROL, "0.25")
    cli.ok("seal")
    old = write_proof(cli, tmp_path / "old.json", "--block", "1")
    assert old["balance"] == "60.25" and old["block"]["number"] == 1
    assert verify(cli, tmp_path / "old.json")[0] == 0
    new = write_proof(cli, tmp_path / "new.json")
    assert (new["balance"], new["block"]["number"]) == ("60.00", 2)
    assert verify(cli, tmp_path / "new.json")[0] == 0
    assert_refused(cli("proof", "0x" + "d4" * 20), "has no USDC balance in block 2")


def _tamper_balance(d: dict[str, Any]) -> None:
    d["balance_units"], d["balance"] = "1000060250000", "1000060.25"


def _tamper_sibling(d: dict[str, Any]) -> None:
    d["siblings"][0] = "0x" + "00" * 32


def _tamper_index(d: dict[str, Any]) -> None:
    d["leaf_index"] = (d["leaf_index"] + 1) % d["block"]["leaf_count"]


def _tamper_account(d: dict[str, Any]) -> None:
    d["account"] = CAROL


def _tamper_state_root(d: dict[str, Any]) -> None:
    d["block"]["state_root"] = "0x" + "11" * 32


def _tamper_sealed_at(d: dict[str, Any]) -> None:
    d["block"]["sealed_at"] += 1


TAMPERINGS: dict[str, Callable[[dict[str, Any]], None]] = {
    "balance": _tamper_balance,
    "sibling": _tamper_sibling,
    "leaf_index": _tamper_index,
    "account": _tamper_account,
    "block state_root": _tamper_state_root,
    "block sealed_at": _tamper_sealed_at,
}


@pytest.mark.parametrize("how", list(TAMPERINGS))
def test_tampered_proof_exits_1_with_a_reason(sqlite_cli: Cli, tmp_path: Path, how: str) -> None:
    """README: ``verify-proof`` exits 0 valid, 1 invalid (a failed check)."""
    seed(sqlite_cli)
    sqlite_cli.ok("deposit", CAROL, "3")
    sqlite_cli.ok("seal")
    path = tmp_path / "p.json"
    data = write_proof(sqlite_cli, path)
    TAMPERINGS[how](data)
    path.write_text(json.dumps(data))
    code, out, err = verify(sqlite_cli, path)
    assert (code, out) == (1, ""), err
    assert err.count("\n") == 1 and err.startswith("invalid: "), err


@pytest.mark.parametrize(
    "content",
    ["", "{not json", "[]", "{}", '{"version": 1}', "null", "\x00\x01binary"],
)
def test_malformed_proof_file_exits_nonzero_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    code = main(["verify-proof", str(path)])
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err


def test_missing_proof_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["verify-proof", str(tmp_path / "absent.json")])
    out, err = capsys.readouterr()
    assert_refused((code, out, err), "cannot read proof")


# --------------------------------------------------------------------------- audit, init
def test_audit(cli: Cli) -> None:
    seed(cli)
    cli.ok("seal")
    out = cli.ok("audit")
    head = cli.head()
    assert out == (
        f"intact: 3 transactions and 1 blocks replayed from genesis; "
        f"head seq 3 hash 0x{head.hash.hex()}\n"
    )
    report = cli.json("audit")
    assert report["ok"] is True
    assert (report["transactions"], report["blocks"], report["head_seq"]) == (3, 1, 3)
    assert report["head_hash"] == "0x" + head.hash.hex()
    assert "divergence" not in report


def test_audit_of_a_tampered_projection_exits_1(cli: Cli) -> None:
    seed(cli)
    engine = make_engine(cli.url)
    with engine.begin() as connection:  # balances is a projection, not append-only
        connection.execute(
            text("UPDATE balances SET balance = balance + 1 WHERE account = :a"), {"a": ALICE}
        )
    engine.dispose()
    code, out, err = cli("audit")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("divergence at final state"), err
    assert ALICE in err
    code, out, _ = cli("audit", "--json")
    assert code == 1 and json.loads(out)["ok"] is False


def test_init_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = Cli(f"sqlite:///{tmp_path}/l.db", capsys)
    for _ in range(2):
        assert runner.ok("init") == f"ledger ready at sqlite:///{tmp_path}/l.db (head seq 0)\n"
    seed(runner)
    assert runner.ok("init") == f"ledger ready at sqlite:///{tmp_path}/l.db (head seq 3)\n"
    assert runner.json("balance", ALICE)["balance"] == "60.25"
    assert runner.ok("audit").startswith("intact:")


def test_init_on_a_migrated_database(cli: Cli) -> None:
    seed(cli)
    out = cli.ok("init")
    assert out.startswith("ledger ready at ") and out.endswith("(head seq 3)\n")
    assert cli.json("audit")["ok"] is True


# --------------------------------------------------------------------------- errors
ERROR_CASES: dict[str, tuple[tuple[str, ...], str]] = {
    "amount abc": (("deposit", ALICE, "abc"), "invalid amount 'abc'"),
    "too many decimals": (("deposit", ALICE, "1.0000001"), "USDC has 6 decimals, got 7"),
    "negative": (("deposit", ALICE, "-1"), "invalid amount '-1'"),
    "zero": (("deposit", ALICE, "0"), "amount must be positive"),
    "zero decimals": (("transfer", ALICE, BOB, "0.000000"), "amount must be positive"),
    "unknown account withdraw": (("withdraw", BOB, "1"), "never received funds"),
    "unknown account transfer": (("transfer", CAROL, ALICE, "1"), "never received funds"),
    "malformed account": (("deposit", "0x12", "1"), "expected 0x followed by 40 hex digits"),
    "bad checksum": (
        ("deposit", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "1"),
        "EIP-55 checksum",
    ),
    "same account": (("transfer", ALICE, "0x" + ALICE[2:].upper(), "1"), "to itself"),
    "insufficient withdraw": (("withdraw", ALICE, "10.000001"), "insufficient funds"),
    "insufficient transfer": (("transfer", ALICE, BOB, "11"), "has 10.00 USDC, needs 11.00"),
    "idempotency conflict": (
        ("deposit", ALICE, "11", "--key", "dep-1"),
        "idempotency key 'dep-1' was already used",
    ),
    "idempotency conflict other kind": (
        ("withdraw", ALICE, "10", "--key", "dep-1"),
        "already used",
    ),
    "unknown system account": (("deposit", "system:treasury", "1"), "unknown system account"),
    "unknown system source": (
        ("transfer", "system:treasury", ALICE, "1"),
        "unknown system account",
    ),
    "system deposit": (("deposit", "system:fees", "1"), "must be a user account"),
    "reverse unknown": (("reverse", "99", "--reason", "x"), "no transaction with sequence 99"),
    "balance unknown": (("balance", BOB), "never received funds"),
    "balance beyond head": (("balance", ALICE, "--at-seq", "5"), "beyond the chain head"),
    "unknown asset": (("balance", ALICE, "--asset", "DOGE"), "unknown asset 'DOGE'"),
    "history unknown": (("history", CAROL), "never received funds"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_one_line_exit_2_and_write_nothing(
    refusing_url: str, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    cli = Cli(refusing_url, capsys)
    with Ledger(cli.url) as book:
        head = book.store.head()
        balances = book.store.current_balances()
    argv, fragment = ERROR_CASES[case]
    assert_refused(cli(*argv), fragment)
    with Ledger(cli.url) as book:
        assert book.store.head() == head
        assert book.store.current_balances() == balances
        assert book.audit().ok


@pytest.mark.parametrize(
    "argv",
    [
        ("deposit", ALICE, "1"),
        ("balance", ALICE),
        ("history", ALICE),
        ("tx", "1"),
        ("seal",),
        ("block",),
        ("proof", ALICE),
        ("audit",),
    ],
)
def test_uninitialised_database_says_run_ledger_init(
    empty_url: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    runner = Cli(empty_url, capsys)
    err = assert_refused(runner(*argv), "`ledger init`")
    if empty_url.startswith("sqlite"):
        path = Path(empty_url.removeprefix("sqlite:///"))
        assert "no ledger database at" in err
        assert not path.exists()  # refused before SQLite could create an empty file
        return
    assert "schema is at nothing" in err
    engine = make_engine(empty_url)
    try:
        assert inspect(engine).get_table_names() == []  # nothing was created
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "argv",
    [
        ("deposit", ALICE),  # missing amount
        ("tx", "one"),  # not an integer
        ("history", ALICE, "--json", "--csv"),  # mutually exclusive
    ],
    ids=["missing amount", "seq not an integer", "json and csv"],
)
def test_usage_errors_are_one_line(sqlite_cli: Cli, argv: tuple[str, ...]) -> None:
    """cli.py: 'Every error is one line on stderr and a non-zero exit.'"""
    with pytest.raises(SystemExit) as exit_info:
        sqlite_cli(*argv)
    _, err = sqlite_cli.capsys.readouterr()
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err


# --------------------------------------------------------------------------- console script
def _run_script(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_DB_URL"}
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def test_console_script_success_and_error(tmp_path: Path) -> None:
    assert CONSOLE_SCRIPT.exists(), CONSOLE_SCRIPT
    url = f"sqlite:///{tmp_path}/l.db"
    done = _run_script("init", "--db", url, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"ledger ready at {url} (head seq 0)\n"
    refused = _run_script("deposit", "0x12", "1", "--db", url, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (
        "error: invalid address '0x12': expected 0x followed by 40 hex digits\n"
    )
    with Ledger(url) as book:
        assert book.store.head().seq == 0


# --------------------------------------------------------------------------- demo
def _summary(out: str) -> dict[str, str]:
    lines = out.splitlines()
    assert lines[0] == "demo ledger: sqlite:///ledger-demo.db"
    return dict(line.strip().split(maxsplit=1) for line in lines[1:])


@pytest.mark.parametrize("transactions", [300, 600])
def test_demo_is_deterministic(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    transactions: int,
) -> None:
    monkeypatch.chdir(tmp_path)
    runs = []
    for _ in range(2):
        code = main(["demo", "--accounts", "20", "--transactions", str(transactions)])
        out, err = capsys.readouterr()
        assert code == 0, err
        summary = _summary(out)
        assert summary["audit_ok"] == "True" and summary["proof_valid"] == "True"
        assert summary["audit_message"] == "intact"
        runs.append(summary)
    assert (tmp_path / "ledger-demo.db").exists()
    stable = ("head_seq", "head_hash", "state_root", "transactions", "proof_account")
    assert [runs[0][k] for k in stable] == [runs[1][k] for k in stable]
    assert HASH.match(runs[0]["head_hash"])
    with Ledger("sqlite:///ledger-demo.db") as book:
        assert "0x" + book.store.head().hash.hex() == runs[0]["head_hash"]


def test_demo_refuses_a_ledger_with_transactions(cli: Cli) -> None:
    cli.ok("deposit", ALICE, "1")
    assert_refused(cli("demo", "--transactions", "10"), "the demo needs an empty ledger")
    assert cli.head().seq == 1
