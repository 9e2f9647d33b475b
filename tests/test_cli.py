"""The ``ledger`` CLI, driven through ``ledger.cli.main`` (and, for exit codes and stderr of
the real console script, a couple of subprocesses).

Covers the exact output shapes (receipts, balance, history JSON/CSV, tx, seal/block, audit,
proof files), idempotent retries of operator events, offline proof verification of good,
tampered and malformed files, the deterministic demo, the signed world (``init``, ``wallet
new``/``show``, ``onboard``, owner-signed ``transfer``/``withdraw``, ``sign``, ``verify``,
``--sign-only`` then ``submit``, nonce replay), and the error contract: one ``error:`` line
on stderr, exit 2, nothing written. Store-dependent tests run on SQLite and PostgreSQL
(``db_url``).

Keystores: scrypt at full strength costs most of a second per CLI call that opens one, so
most tests use keystores of conftest's deterministic wallets written with a cheap scrypt
(``n=2``, see ``write_keystore``); the quick-start test uses real ones from ``ledger wallet
new`` (created once for the module) and lets ``ledger init`` create the operator keystore.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import inspect, text

import tests.conftest as conftest
from ledger import Ledger
from ledger.cli import HISTORY_COLUMNS, main
from ledger.core import genesis
from ledger.core.blocks import BlockHeader
from ledger.core.encoding import chain_hash, sha256
from ledger.core.journal import ChainHead
from ledger.store.database import make_engine, migrate
from ledger.wallet import Wallet
from tests.conftest import (
    ALICE,
    ALICE_WALLET,
    BOB,
    BOB_WALLET,
    CAROL,
    FIRST_SEQ,
    OPERATOR,
    STORES,
    drop_postgres_database,
    empty_database,
    new_postgres_database,
    open_book,
)

HASH = re.compile(r"^0x[0-9a-f]{64}$")
FELT = re.compile(r"^0x[0-9a-f]{1,64}$")
RECEIPT_KEYS = ["seq", "hash", "kind", "key", "duplicate", "recorded_at", "postings"]
POSTING_KEYS = ["account", "asset", "amount", "balance_after"]
CONSOLE_SCRIPT = Path(sys.executable).parent / "ledger"
PASSWORD = "correct horse battery staple"
ENV_VARS = (
    "LEDGER_DB_URL",
    "LEDGER_KEYSTORE_PASSWORD",
    "LEDGER_OPERATOR_KEYSTORE",
    "LEDGER_OPERATOR_PASSWORD",
)
DAVE_WALLET = conftest.test_wallet("dave")  # never onboarded anywhere
DAVE = DAVE_WALLET.address
FAR_FUTURE = "4102444800"  # 2100-01-01, an expiry that never passes in these tests
DOMAIN = genesis.l2_domain(genesis.DEFAULT_L2_CHAIN_ID)


def wallet_key(name: str) -> bytes:
    """The private key of ``conftest.test_wallet(name)``."""
    key = sha256(f"ledger-test-wallet-{name}".encode()).digest()
    assert Wallet(key).address == conftest.test_wallet(name).address
    return key


def write_keystore(path: Path, name: str) -> str:
    """An Ethereum v3 keystore of ``conftest.test_wallet(name)`` with a cheap scrypt (n=2),
    so that CLI calls opening it cost milliseconds; returns its path."""
    encrypted = Account.encrypt(wallet_key(name), PASSWORD, kdf="scrypt", iterations=2)
    path.write_text(json.dumps(encrypted))
    return str(path)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Keystore paths by name (operator, alice, bob, carol, dave), plus ``dir`` and
    ``junk`` (a JSON file that is not a keystore)."""
    folder = tmp_path_factory.mktemp("keys")
    paths = {
        name: write_keystore(folder / f"{name}.json", name)
        for name in ("operator", "alice", "bob", "carol", "dave")
    }
    (folder / "junk.json").write_text('{"not": "a keystore"}')
    return paths | {"dir": str(folder), "junk": str(folder / "junk.json")}


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, keys: dict[str, str]) -> None:
    """No ambient database or keys; the test operator's keystore and the password."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LEDGER_KEYSTORE_PASSWORD", PASSWORD)
    monkeypatch.setenv("LEDGER_OPERATOR_KEYSTORE", keys["operator"])


class Cli:
    """Runs ``main`` against one database and captures what it printed."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str], keys: dict[str, str]) -> None:
        self.url = url
        self.capsys = capsys
        self.keys = keys

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

    def ks(self, name: str) -> str:
        """``--keystore`` value of a test wallet."""
        return self.keys[name]

    def head(self) -> ChainHead:
        with Ledger(self.url) as book:
            return book.store.head()


@pytest.fixture
def bare_cli(db_url: str, capsys: pytest.CaptureFixture[str], keys: dict[str, str]) -> Cli:
    """The CLI on a migrated database without genesis, on each store."""
    return Cli(db_url, capsys, keys)


@pytest.fixture
def cli(db_url: str, capsys: pytest.CaptureFixture[str], keys: dict[str, str]) -> Cli:
    """The CLI on a ledger with genesis (the test operator) and ALICE, BOB and CAROL
    onboarded (the first money movement is seq ``FIRST_SEQ``), on each store."""
    open_book(db_url).close()
    return Cli(db_url, capsys, keys)


def onboard_all(runner: Cli) -> None:
    for name in ("alice", "bob", "carol"):
        assert runner.ok("onboard", "--keystore", runner.ks(name)).endswith(" onboarding\n")


@pytest.fixture
def sqlite_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: dict[str, str]) -> Cli:
    """The CLI on a fresh SQLite file set up with ``ledger init`` and ``ledger onboard``."""
    runner = Cli(f"sqlite:///{tmp_path}/l.db", capsys, keys)
    runner.ok("init")
    onboard_all(runner)
    assert runner.head().seq == FIRST_SEQ - 1
    return runner


def _store_url(param: str, tmp_path_factory: pytest.TempPathFactory, name: str) -> str:
    if param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp(name)}/l.db"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        return url
    return new_postgres_database()


@pytest.fixture(scope="module", params=STORES)
def refusing_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database per store shared by the error cases (they must write nothing, which
    each case checks): ALICE holds 10 USDC from a deposit of 10.5 with key ``dep-1`` and a
    withdrawal of 0.5 she signed with nonce 5; BOB and CAROL are onboarded, never funded."""
    url = _store_url(request.param, tmp_path_factory, "refusals")
    with open_book(url) as book:
        book.deposit(ALICE, "10.5", key="dep-1")
        book.withdraw(ALICE, "0.5", wallet=ALICE_WALLET, nonce=5, expiry=int(FAR_FUTURE))
    yield url
    if request.param != "sqlite":
        drop_postgres_database(url)


@pytest.fixture(scope="module", params=STORES)
def empty_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database that was never initialised, on each store (shared: the tests using it
    check that it stays empty)."""
    yield from empty_database(request.param, tmp_path_factory.mktemp("empty"))


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
    """The README tour on a `cli` ledger: ALICE ends at 60.25, BOB at 34.75, head seq 7."""
    cli.ok("deposit", ALICE, "100", "--key", "dep-1")
    cli.ok("transfer", ALICE, BOB, "39.75", "--keystore", cli.ks("alice"), "--nonce", "1")
    cli.ok("withdraw", BOB, "5", "--keystore", cli.ks("bob"), "--nonce", "1")


SEEDED_HEAD = FIRST_SEQ + 2


# --------------------------------------------------------------------------- writes
def test_deposit_withdraw_transfer_print_seq_and_hash(cli: Cli) -> None:
    outputs = [
        cli.ok("deposit", ALICE, "100"),
        cli.ok("transfer", ALICE, BOB, "39.75", "--keystore", cli.ks("alice")),
        cli.ok("withdraw", BOB, "5", "--keystore", cli.ks("bob")),
    ]
    with Ledger(cli.url) as book:
        for seq, (out, kind) in enumerate(
            zip(outputs, ["deposit", "transfer", "withdrawal"], strict=True), start=FIRST_SEQ
        ):
            expected = f"seq {seq} hash 0x{book.transaction(seq).hash.hex()} {kind}\n"
            assert out == expected


def test_receipt_json_shape(cli: Cli) -> None:
    deposit = cli.json("deposit", ALICE, "100", "--key", "dep-1")
    assert list(deposit) == RECEIPT_KEYS
    assert deposit["seq"] == FIRST_SEQ and HASH.match(deposit["hash"])
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
    transfer = cli.json(
        "transfer", ALICE, BOB, "39.75", "--keystore", cli.ks("alice"), "--nonce", "7"
    )
    # A user action's idempotency key is owner/nonce.
    assert (transfer["seq"], transfer["kind"], transfer["key"]) == (
        FIRST_SEQ + 1,
        "transfer",
        f"{ALICE}/7",
    )
    assert [list(p) for p in transfer["postings"]] == [POSTING_KEYS, POSTING_KEYS]
    assert [(p["account"], p["amount"], p["balance_after"]) for p in transfer["postings"]] == [
        (ALICE, "-39.75", "60.25"),
        (BOB, "39.75", "39.75"),
    ]
    before_ms = time.time_ns() // 1_000_000
    withdrawal = cli.json("withdraw", BOB, "5", "--keystore", cli.ks("bob"))
    after_ms = time.time_ns() // 1_000_000
    # Without --nonce the nonce is milliseconds since the epoch.
    owner, nonce = withdrawal["key"].split("/")
    assert withdrawal["kind"] == "withdrawal" and owner == BOB
    assert before_ms <= int(nonce) <= after_ms
    assert [(p["account"], p["amount"], p["balance_after"]) for p in withdrawal["postings"]] == [
        (BOB, "-5.00", "34.75"),
        ("system:withdrawals", "5.00", "5.00"),
    ]
    # An operator event without --key gets a generated one.
    assert cli.json("deposit", CAROL, "1")["key"].startswith("auto:")
    with Ledger(cli.url) as book:
        assert transfer["hash"] == "0x" + book.transaction(FIRST_SEQ + 1).hash.hex()


def test_key_retry_prints_duplicate_and_writes_nothing(cli: Cli) -> None:
    first = cli.json("deposit", ALICE, "100", "--key", "dep-1")
    head = cli.head()
    again = cli.ok("deposit", ALICE, "100", "--key", "dep-1")
    assert again == (
        f"seq {FIRST_SEQ} hash {first['hash']} deposit "
        "(already recorded with this key; nothing written)\n"
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
    cli.ok("transfer", ALICE, BOB, "39.75", "--keystore", cli.ks("alice"), "--nonce", "1")
    transfer, reversal = FIRST_SEQ + 1, FIRST_SEQ + 2
    receipt = cli.json("reverse", str(transfer), "--reason", "wrong recipient", "--key", "fix-2")
    assert (receipt["seq"], receipt["kind"], receipt["key"]) == (reversal, "reversal", "fix-2")
    assert [(p["account"], p["amount"]) for p in receipt["postings"]] == [
        (ALICE, "39.75"),
        (BOB, "-39.75"),
    ]
    assert cli.json("balance", ALICE)["balance"] == "100.00"
    assert cli.json("balance", BOB)["balance"] == "0.00"
    assert_refused(
        cli("reverse", str(transfer), "--reason", "again"), f"already reversed by {reversal}"
    )
    assert_refused(cli("reverse", str(reversal), "--reason", "undo"), "itself a reversal")
    assert json.loads(cli.ok("tx", str(reversal)))["key"] == "fix-2"


# --------------------------------------------------------------------------- reads
def test_balance_json_shape(cli: Cli) -> None:
    seed(cli)
    assert cli.json("balance", ALICE) == {
        "account": ALICE,
        "asset": "USDC",
        "balance": "60.25",
        "seq": SEEDED_HEAD,
    }
    assert cli.json("balance", "0x" + BOB[2:].upper()) == {
        "account": BOB,
        "asset": "USDC",
        "balance": "34.75",
        "seq": SEEDED_HEAD,
    }
    assert cli.json("balance", ALICE, "--at-seq", str(FIRST_SEQ)) == {
        "account": ALICE,
        "asset": "USDC",
        "balance": "100.00",
        "seq": FIRST_SEQ,
    }
    assert cli.json("balance", "system:bridge")["balance"] == "-100.00"
    assert cli.json("balance", "system:withdrawals")["balance"] == "5.00"
    assert cli.ok("balance", ALICE) == f"{ALICE}  60.25 USDC  (as of seq {SEEDED_HEAD})\n"


@pytest.fixture(scope="module", params=STORES)
def history_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A read-only ledger shared by the statement and ``tx`` tests, on each store."""
    url = _store_url(request.param, tmp_path_factory, "history")
    expiry = int(FAR_FUTURE)
    with open_book(url) as book:
        book.deposit(ALICE, "100", key="h-1")
        book.transfer(ALICE, BOB, "39.75", wallet=ALICE_WALLET, nonce=1, expiry=expiry)
        book.withdraw(ALICE, "10.5", wallet=ALICE_WALLET, nonce=2, expiry=expiry)
        book.transfer(BOB, ALICE, "0.000001", wallet=BOB_WALLET, nonce=1, expiry=expiry)
        book.deposit(CAROL, "1", key="h-5")  # not ALICE's business
    yield url
    if request.param != "sqlite":
        drop_postgres_database(url)


@pytest.fixture
def reader(history_url: str, capsys: pytest.CaptureFixture[str], keys: dict[str, str]) -> Cli:
    return Cli(history_url, capsys, keys)


EXPECTED_HISTORY = [
    (FIRST_SEQ, "deposit", "100.00", "100.00", "system:bridge", "h-1"),
    (FIRST_SEQ + 1, "transfer", "-39.75", "60.25", BOB, f"{ALICE}/1"),
    (FIRST_SEQ + 2, "withdrawal", "-10.50", "49.75", "system:withdrawals", f"{ALICE}/2"),
    (FIRST_SEQ + 3, "transfer", "0.000001", "49.750001", BOB, f"{BOB}/1"),
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
    last = lines[-1].split()
    assert last[0] == str(FIRST_SEQ + 3) and last[-3:] == ["0.000001", "49.750001", BOB]


def test_tx_prints_one_transaction(reader: Cli) -> None:
    cli = reader
    genesis_tx = json.loads(cli.ok("tx", "1"))
    assert list(genesis_tx) == [*RECEIPT_KEYS, "prev_hash"]
    assert (genesis_tx["seq"], genesis_tx["kind"], genesis_tx["key"], genesis_tx["postings"]) == (
        1,
        "operator_keys",
        "genesis",
        [],
    )
    assert genesis_tx["prev_hash"] == "0x" + "00" * 32
    deposit = json.loads(cli.ok("tx", str(FIRST_SEQ)))
    transfer = json.loads(cli.ok("tx", str(FIRST_SEQ + 1)))
    assert (transfer["seq"], transfer["kind"], transfer["key"], transfer["duplicate"]) == (
        FIRST_SEQ + 1,
        "transfer",
        f"{ALICE}/1",
        False,
    )
    assert transfer["prev_hash"] == deposit["hash"]
    previous = genesis_tx["hash"]
    for seq in range(2, FIRST_SEQ + 5):  # onboardings, then the money movements
        record = json.loads(cli.ok("tx", str(seq)))
        assert record["prev_hash"] == previous
        previous = record["hash"]
    with Ledger(cli.url) as book:
        record = book.transaction(FIRST_SEQ + 1)
        assert transfer["hash"] == "0x" + chain_hash(record.prev_hash, record.encode()).hex()
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
    # The first block starts at genesis; its leaves are system:bridge, system:withdrawals,
    # ALICE and BOB.
    assert (fields["number"], fields["first_seq"], fields["last_seq"], fields["leaf_count"]) == (
        "1",
        "1",
        str(SEEDED_HEAD),
        "4",
    )
    assert fields["tx_head_hash"] == "0x" + cli.head().hash.hex()
    assert_refused(cli("seal"), "nothing to seal")
    cli.ok("deposit", CAROL, "1")
    second = cli.json("seal")
    header = BlockHeader.from_json(second)
    assert second == header.to_json()
    assert (header.number, header.first_seq, header.last_seq, header.leaf_count) == (
        2,
        SEEDED_HEAD + 1,
        SEEDED_HEAD + 1,
        5,
    )
    assert header.prev_block_hash.hex() == fields["hash"][2:]
    assert cli.json("block") == second
    assert cli.json("block", "1")["hash"] == fields["hash"]
    assert_refused(cli("block", "7"), "no block number 7")


def write_proof(cli: Cli, path: Path, *extra: str) -> dict[str, Any]:
    out = cli.ok("proof", ALICE, *extra)
    path.write_text(out)
    data: dict[str, Any] = json.loads(out)
    return data


def offline(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """A command that needs no database (no --db)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_offline(cli: Cli, *argv: str) -> tuple[int, str, str]:
    return offline(cli.capsys, *argv)


def verify(cli: Cli, path: Path) -> tuple[int, str, str]:
    return run_offline(cli, "verify-proof", str(path))


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
    cli.ok("transfer", ALICE, CAROL, "0.25", "--keystore", cli.ks("alice"), "--nonce", "2")
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


@pytest.fixture(scope="module")
def sealed_proof(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """ALICE's proof (JSON, as ``ledger proof`` prints it) in a block of four leaves."""
    url = f"sqlite:///{tmp_path_factory.mktemp('proof')}/l.db"
    expiry = int(FAR_FUTURE)
    with open_book(url) as book:
        book.deposit(ALICE, "100", key="dep-1")
        book.transfer(ALICE, BOB, "39.75", wallet=ALICE_WALLET, nonce=1, expiry=expiry)
        book.withdraw(BOB, "5", wallet=BOB_WALLET, nonce=1, expiry=expiry)
        book.deposit(CAROL, "3")
        assert book.seal().leaf_count == 5
        return book.proof(ALICE).to_json()


@pytest.mark.parametrize("how", list(TAMPERINGS))
def test_tampered_proof_exits_1_with_a_reason(
    sealed_proof: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path, how: str
) -> None:
    """README: ``verify-proof`` exits 0 valid, 1 invalid (a failed check)."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps(sealed_proof))
    assert offline(capsys, "verify-proof", str(path))[0] == 0
    data = json.loads(json.dumps(sealed_proof))
    TAMPERINGS[how](data)
    path.write_text(json.dumps(data))
    code, out, err = offline(capsys, "verify-proof", str(path))
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
        f"intact: {SEEDED_HEAD} transactions and 1 blocks replayed from genesis; "
        f"head seq {SEEDED_HEAD} hash 0x{head.hash.hex()}\n"
    )
    report = cli.json("audit")
    assert report["ok"] is True
    assert (report["transactions"], report["blocks"], report["head_seq"]) == (
        SEEDED_HEAD,
        1,
        SEEDED_HEAD,
    )
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


def test_init_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: dict[str, str]
) -> None:
    runner = Cli(f"sqlite:///{tmp_path}/l.db", capsys, keys)
    ready = f"ledger ready at sqlite:///{tmp_path}/l.db"
    operator = f"operator {OPERATOR.address} ({keys['operator']})"
    for _ in range(2):
        assert runner.ok("init") == f"{ready} (head seq 2); {operator}\n"
    onboard_all(runner)
    seed(runner)
    assert runner.ok("init") == f"{ready} (head seq {SEEDED_HEAD}); {operator}\n"
    assert runner.json("balance", ALICE)["balance"] == "60.25"
    assert runner.ok("audit").startswith("intact:")


def test_init_on_a_migrated_database(bare_cli: Cli) -> None:
    """``init`` on a migrated but empty database writes genesis: the operator key, signed
    by itself, and the chain ids; on a ledger with genesis it writes nothing."""
    cli = bare_cli
    out = cli.ok("init")
    assert out.startswith("ledger ready at ") and out.endswith(
        f"(head seq 2); operator {OPERATOR.address} ({cli.ks('operator')})\n"
    )
    genesis_tx = json.loads(cli.ok("tx", "1"))
    assert (genesis_tx["kind"], genesis_tx["key"], genesis_tx["postings"]) == (
        "operator_keys",
        "genesis",
        [],
    )
    with Ledger(cli.url) as book:
        assert book.store.settings() == {"l1_chain_id": "31337", "l2_chain_id": "SN_SEPOLIA"}
        assert book.store.auth_projection().operators == {OPERATOR.address}
    onboard_all(cli)
    seed(cli)
    out = cli.ok("init")
    assert out.startswith("ledger ready at ") and f"(head seq {SEEDED_HEAD}); " in out
    assert cli.json("audit")["ok"] is True


def test_init_fixes_the_chain_ids(bare_cli: Cli, tmp_path: Path) -> None:
    """``--l1-chain-id``/``--l2-chain-id`` are recorded at genesis: wallets onboard and sign
    for them, and an action signed for another domain is refused."""
    cli = bare_cli
    cli.ok("init", "--l1-chain-id", "1", "--l2-chain-id", "SN_MAIN")
    with Ledger(cli.url) as book:
        assert (book.l1_chain_id, book.domain.chain_id) == (1, "SN_MAIN")
    onboarding = cli.ok("onboard", "--keystore", cli.ks("alice"), "--sign-only")
    assert json.loads(onboarding)["l1_chain_id"] == 1
    onboard_all(cli)
    cli.ok("deposit", ALICE, "10")
    envelope = json.loads(
        cli.ok("transfer", ALICE, BOB, "1", "--keystore", cli.ks("alice"), "--sign-only")
    )
    assert envelope["domain"]["chainId"] == "SN_MAIN"
    path = tmp_path / "signed.json"
    path.write_text(json.dumps(envelope))
    code, out, err = run_offline(cli, "verify", str(path))
    assert (code, out) == (1, "") and "domain" in err and "SN_MAIN" in err, err
    assert run_offline(cli, "verify", str(path), "--l2-chain-id", "SN_MAIN")[0] == 0
    # Signed for the default domain: refused by this ledger, nothing written.
    action = tmp_path / "action.json"
    action.write_text(json.dumps({"action": "withdraw", "account": ALICE, "amount": "1"}))
    code, default_domain, err = run_offline(cli, "sign", str(action), "--keystore", cli.ks("alice"))
    assert code == 0, err
    path.write_text(default_domain)
    head = cli.head()
    assert_refused(cli("submit", str(path)), "signed for domain")
    assert cli.head() == head
    path.write_text(json.dumps(envelope))
    assert cli.ok("submit", str(path)).endswith(" transfer\n")
    assert cli.json("balance", BOB)["balance"] == "1.00"


# --------------------------------------------------------------------------- quick start
@pytest.fixture(scope="module")
def new_wallets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str, str]]:
    """``ledger wallet new`` for alice and bob, once for the module (full-strength scrypt):
    name -> (address, keystore path, what the command printed)."""
    folder = tmp_path_factory.mktemp("wallets")
    made = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEDGER_KEYSTORE_PASSWORD", PASSWORD)
        for name in ("alice", "bob"):
            path = str(folder / f"{name}.json")
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["wallet", "new", "--out", path])
            assert (code, err.getvalue()) == (0, "")
            match = re.fullmatch(r"(0x[0-9a-f]{40})  \(encrypted keystore (.+)\)\n", out.getvalue())
            assert match and match[2] == path, out.getvalue()
            made[name] = (match[1], path, out.getvalue())
    return made


def test_quick_start(
    new_wallets: dict[str, tuple[str, str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, str],
) -> None:
    """The issue's quick start with full-strength keystores: init (which creates the
    operator keystore); wallet new alice/bob; onboard both; deposit; an owner-signed
    transfer and withdrawal; moving someone else's funds is refused; audit.

    SQLite only: each step opens a real keystore (most of a second); every command here is
    also run on both stores by the other tests, with cheap keystores."""
    cli = Cli(f"sqlite:///{tmp_path}/ledger.db", capsys, keys)
    operator_path = tmp_path / "operator.json"
    monkeypatch.setenv("LEDGER_OPERATOR_KEYSTORE", str(operator_path))
    alice, alice_json, _ = new_wallets["alice"]
    bob, bob_json, _ = new_wallets["bob"]

    out = cli.ok("init")  # creates the operator keystore
    match = re.fullmatch(
        rf"ledger ready at \S+ \(head seq 2\); operator (0x[0-9a-f]{{40}}) "
        rf"\({re.escape(str(operator_path))}\)\n",
        out,
    )
    assert match, out
    operator = match[1]
    assert stat.S_IMODE(operator_path.stat().st_mode) == 0o600
    assert json.loads(operator_path.read_text())["address"].lower() == operator[2:]
    assert operator not in (alice, bob)
    receipts = [
        cli.ok("onboard", "--keystore", alice_json),
        cli.ok("onboard", "--keystore", bob_json),
        cli.ok("deposit", alice, "100"),
        cli.ok("transfer", alice, bob, "10", "--keystore", alice_json),
        cli.ok("withdraw", alice, "5", "--keystore", alice_json),
    ]
    kinds = ["onboarding", "onboarding", "deposit", "transfer", "withdrawal"]
    with Ledger(cli.url) as book:
        for seq, (printed, kind) in enumerate(zip(receipts, kinds, strict=True), start=3):
            assert printed == f"seq {seq} hash 0x{book.transaction(seq).hash.hex()} {kind}\n"
        assert book.store.auth_projection().operators == {operator}
    head = cli.head()
    assert_refused(
        cli("transfer", bob, alice, "1", "--keystore", alice_json),
        f"{alice} cannot move funds of {bob}: it does not own it",
    )
    assert cli.head() == head
    out = cli.ok("audit")
    assert out == (
        f"intact: 7 transactions and 0 blocks replayed from genesis; "
        f"head seq 7 hash 0x{head.hash.hex()}\n"
    )
    assert cli.json("balance", alice)["balance"] == "85.00"
    assert cli.json("balance", bob)["balance"] == "10.00"


# --------------------------------------------------------------------------- wallets
def test_wallet_new_writes_an_encrypted_keystore(
    new_wallets: dict[str, tuple[str, str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    address, path, _ = new_wallets["alice"]
    assert new_wallets["bob"][0] != address
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    keystore = json.loads(Path(path).read_text())
    assert keystore["version"] == 3 and keystore["address"].lower() == address[2:]
    assert keystore["crypto"]["kdf"] == "scrypt"
    assert keystore["crypto"]["kdfparams"]["n"] >= 2**18  # full strength, not a test key
    # (test_quick_start signs with these files: they hold the printed addresses' keys.)
    # Never overwritten: it may be someone's only copy of a key.
    before = Path(path).read_bytes()
    assert_refused(offline(capsys, "wallet", "new", "--out", path), "exists")
    assert Path(path).read_bytes() == before


def test_wallet_show_is_deterministic(
    keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """L1 address, the StarkNet public key and account address derived from it."""

    def show(*extra: str) -> str:
        code, out, err = offline(capsys, "wallet", "show", keys["alice"], *extra)
        assert (code, err) == (0, "")
        return out

    expected = {
        "l1_address": ALICE,
        "stark_public_key": f"{ALICE_WALLET.stark_public_key:#x}",
        "l2_address": f"{ALICE_WALLET.stark_account:#x}",
        "l1_chain_id": 31337,
    }
    text_out = show()
    assert text_out == show()
    assert [line.split() for line in text_out.splitlines()] == [
        [name, str(value)] for name, value in expected.items()
    ]
    # Names right-aligned, values in one column.
    assert len({line.index(line.split()[1]) for line in text_out.splitlines()}) == 1
    data = json.loads(show("--json"))
    assert data == expected and json.loads(show("--json")) == data
    assert FELT.match(data["stark_public_key"]) and FELT.match(data["l2_address"])
    assert data["l2_address"] != data["stark_public_key"]
    # The L2 key is ground from an L1 signature over a chain-specific message.
    mainnet = Wallet(wallet_key("alice"), 1)
    assert json.loads(show("--json", "--l1-chain-id", "1")) == {
        "l1_address": ALICE,
        "stark_public_key": f"{mainnet.stark_public_key:#x}",
        "l2_address": f"{mainnet.stark_account:#x}",
        "l1_chain_id": 1,
    }
    assert mainnet.stark_public_key != ALICE_WALLET.stark_public_key
    code, out, err = offline(capsys, "wallet", "show", keys["bob"], "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["stark_public_key"] == f"{BOB_WALLET.stark_public_key:#x}"


def test_onboard(bare_cli: Cli, tmp_path: Path) -> None:
    cli = bare_cli
    cli.ok("init")
    receipt = cli.json("onboard", "--keystore", cli.ks("alice"))
    assert (receipt["seq"], receipt["kind"], receipt["key"], receipt["postings"]) == (
        3,
        "onboarding",
        f"onboard/{ALICE}",
        [],
    )
    again = cli.ok("onboard", "--keystore", cli.ks("alice"))
    assert again == (
        f"seq 3 hash {receipt['hash']} onboarding "
        "(already recorded with this key; nothing written)\n"
    )
    with Ledger(cli.url) as book:
        assert book.store.wallet(ALICE) is not None
        assert book.store.auth_projection().wallets == {ALICE: ALICE_WALLET.stark_public_key}
    # --sign-only prints the envelope; `verify` checks it offline, `submit` applies it.
    envelope = cli.ok("onboard", "--keystore", cli.ks("bob"), "--sign-only")
    assert cli.head().seq == 3
    path = tmp_path / "onboarding.json"
    path.write_text(envelope)
    assert run_offline(cli, "verify", str(path)) == (0, f"valid: onboarding of {BOB}\n", "")
    code, out, err = run_offline(cli, "verify", str(path), "--l1-chain-id", "1")
    assert (code, out, err) == (
        1,
        "",
        "invalid: onboarding signed for L1 chain 31337, this ledger uses 1\n",
    )
    assert cli.ok("submit", str(path)).endswith(" onboarding\n")
    assert cli.head().seq == 4
    assert cli.json("audit")["ok"] is True


# --------------------------------------------------------------------------- sign, verify
ACTION = {
    "action": "transfer",
    "from": ALICE,
    "to": BOB,
    "amount": "10.25",
    "nonce": 7,
    "expiry": int(FAR_FUTURE),
}


@pytest.fixture
def signed(tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: dict[str, str]) -> Path:
    """``ledger sign`` of ``ACTION`` by alice, written to a file."""
    action = tmp_path / "action.json"
    action.write_text(json.dumps(ACTION))
    code, out, err = offline(capsys, "sign", str(action), "--keystore", keys["alice"])
    assert (code, err) == (0, "")
    path = tmp_path / "signed.json"
    path.write_text(out)
    return path


def test_sign_then_verify(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    envelope = json.loads(signed.read_text())
    assert list(envelope) == ["format", "action", "domain", "message", "signer", "signature"]
    assert (envelope["format"], envelope["action"]) == ("ledger.action/1", "transfer")
    assert envelope["domain"] == {
        "name": "ledger",
        "version": "1",
        "chainId": "SN_SEPOLIA",
        "revision": "1",
    }
    assert envelope["message"] == {
        "from": ALICE,
        "to": BOB,
        "amount": "10250000",
        "nonce": "7",
        "expiry": FAR_FUTURE,
    }
    assert envelope["signer"] == {
        "account": ALICE,
        "stark_public_key": f"{ALICE_WALLET.stark_public_key:#x}",
        "stark_account": f"{ALICE_WALLET.stark_account:#x}",
    }
    assert len(envelope["signature"]) == 2 and all(FELT.match(x) for x in envelope["signature"])
    code, out, err = offline(capsys, "verify", str(signed))
    key = f"{ALICE_WALLET.stark_public_key:#x}"
    assert (code, out, err) == (0, f"valid: transfer by {ALICE} (nonce 7, L2 key {key})\n", "")


def test_sign_without_nonce_uses_milliseconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: dict[str, str]
) -> None:
    action = tmp_path / "action.json"
    action.write_text(json.dumps({"action": "withdraw", "account": BOB, "amount": "1"}))
    before_ms, before_s = time.time_ns() // 1_000_000, int(time.time())
    code, out, err = offline(capsys, "sign", str(action), "--keystore", keys["bob"])
    assert (code, err) == (0, "")
    message = json.loads(out)["message"]
    assert before_ms <= int(message["nonce"]) <= time.time_ns() // 1_000_000
    assert before_s + 3600 <= int(message["expiry"]) <= int(time.time()) + 3600  # an hour
    path = tmp_path / "signed.json"
    path.write_text(out)
    code, out, err = offline(capsys, "verify", str(path))
    assert (code, err) == (0, "") and out.startswith(f"valid: withdraw by {BOB} (nonce ")


def _flip_felt(value: str) -> str:
    return value[:-1] + ("1" if value[-1] != "1" else "2")


Envelope = dict[str, Any]
ENVELOPE_TAMPERINGS: dict[str, tuple[Callable[[Envelope], None], str]] = {
    "amount": (lambda e: e["message"].update(amount="20250000"), "does not verify"),
    "recipient": (lambda e: e["message"].update(to=CAROL), "does not verify"),
    "nonce": (lambda e: e["message"].update(nonce="8"), "does not verify"),
    "expiry": (lambda e: e["message"].update(expiry=str(int(FAR_FUTURE) + 1)), "does not verify"),
    "signature r": (
        lambda e: e["signature"].__setitem__(0, _flip_felt(e["signature"][0])),
        "does not verify",
    ),
    "signature s": (
        lambda e: e["signature"].__setitem__(1, _flip_felt(e["signature"][1])),
        "does not verify",
    ),
    "another signer key": (
        lambda e: e["signer"].update(
            stark_public_key=f"{BOB_WALLET.stark_public_key:#x}",
            stark_account=f"{BOB_WALLET.stark_account:#x}",
        ),
        "does not verify",
    ),
    "stark_account of another key": (
        lambda e: e["signer"].update(stark_account=f"{BOB_WALLET.stark_account:#x}"),
        "stark_account is not the account address",
    ),
    "action renamed": (lambda e: e.update(action="withdraw"), "withdraw message needs exactly"),
    "extra field": (lambda e: e.update(note="hi"), "a signed action has exactly"),
    "domain name": (lambda e: e["domain"].update(name="other"), "signed for domain"),
    "format": (lambda e: e.update(format="ledger.action/2"), "format must be"),
    "signature shape": (lambda e: e.update(signature=e["signature"][:1]), "signature must be"),
}


@pytest.mark.parametrize("how", list(ENVELOPE_TAMPERINGS))
def test_verify_tampered_envelope_exits_1_with_the_reason(
    signed: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    envelope = json.loads(signed.read_text())
    tamper, reason = ENVELOPE_TAMPERINGS[how]
    tamper(envelope)
    signed.write_text(json.dumps(envelope))
    code, out, err = offline(capsys, "verify", str(signed))
    assert (code, out) == (1, ""), err
    assert err.count("\n") == 1 and err.startswith("invalid: ") and reason in err, err


def test_verify_with_another_l2_chain_id_names_the_domain(
    signed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = offline(capsys, "verify", str(signed), "--l2-chain-id", "SN_MAIN")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("invalid: signed for domain"), err
    assert "'chainId': 'SN_SEPOLIA'" in err and "'chainId': 'SN_MAIN'" in err
    assert offline(capsys, "verify", str(signed), "--l2-chain-id", "SN_SEPOLIA")[0] == 0


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        "[]",
        "{}",
        "null",
        '"an envelope"',
        '{"format": "ledger.action/1"}',
        '{"format": "ledger.onboarding/1"}',
        "\x00\x01binary",
    ],
)
def test_verify_malformed_file_exits_nonzero_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    path = tmp_path / "signed.json"
    path.write_text(content)
    code, out, err = offline(capsys, "verify", str(path))
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith(("error: ", "invalid: ")), err


def test_verify_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(offline(capsys, "verify", str(tmp_path / "absent.json")), "cannot read")


@pytest.mark.parametrize(
    ("action", "fragment"),
    [
        ({"action": "mint", "account": ALICE, "amount": "1"}, '"action": one of'),
        ([], '"action": one of'),
        ({"action": "withdraw", "amount": "1"}, "missing ['account']"),
        ({"action": "withdraw", "account": ALICE, "amount": "1", "memo": "x"}, "unknown ['memo']"),
        ({"action": "withdraw", "account": ALICE, "amount": "-1"}, "invalid amount '-1'"),
        ({"action": "withdraw", "account": ALICE, "amount": "1.0000001"}, "6 decimals"),
        ({"action": "transfer", "from": "0x12", "to": BOB, "amount": "1"}, "0x12"),
    ],
)
def test_sign_refuses_a_malformed_action_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, str],
    action: Any,
    fragment: str,
) -> None:
    path = tmp_path / "action.json"
    path.write_text(json.dumps(action))
    assert_refused(offline(capsys, "sign", str(path), "--keystore", keys["alice"]), fragment)


# --------------------------------------------------------------------------- sign-only, submit
def test_sign_only_then_submit_then_replay_is_refused(cli: Cli, tmp_path: Path) -> None:
    cli.ok("deposit", ALICE, "10")
    head = cli.head()
    alice = ("--keystore", cli.ks("alice"))
    out = cli.ok("transfer", ALICE, BOB, "1.5", *alice, "--sign-only", "--nonce", "42")
    envelope = json.loads(out)
    assert (envelope["action"], envelope["message"]["amount"], envelope["message"]["nonce"]) == (
        "transfer",
        "1500000",
        "42",
    )
    assert cli.head() == head  # printed, not submitted: the nonce is still unused
    with Ledger(cli.url) as book:
        assert book.store.last_nonce(ALICE) == 0
    path = tmp_path / "signed.json"
    path.write_text(out)
    assert run_offline(cli, "verify", str(path)) == (
        0,
        f"valid: transfer by {ALICE} (nonce 42, L2 key {ALICE_WALLET.stark_public_key:#x})\n",
        "",
    )
    receipt = cli.json("submit", str(path))
    assert (receipt["seq"], receipt["kind"], receipt["key"], receipt["duplicate"]) == (
        FIRST_SEQ + 1,
        "transfer",
        f"{ALICE}/42",
        False,
    )
    assert [(p["account"], p["amount"], p["balance_after"]) for p in receipt["postings"]] == [
        (ALICE, "-1.50", "8.50"),
        (BOB, "1.50", "1.50"),
    ]
    # The same envelope again is a replay, not an idempotent retry.
    after = cli.head()
    assert_refused(
        cli("submit", str(path)), f"nonce 42 of {ALICE} was already used (sequence {FIRST_SEQ + 1})"
    )
    assert_refused(cli("transfer", ALICE, BOB, "1", *alice, "--nonce", "41"), "must exceed 42")
    assert cli.head() == after
    with Ledger(cli.url) as book:
        assert book.store.last_nonce(ALICE) == 42
    # A withdrawal the same way; the receipt in text.
    out = cli.ok("withdraw", ALICE, "0.5", *alice, "--sign-only", "--nonce", "43")
    path.write_text(out)
    printed = cli.ok("submit", str(path))
    with Ledger(cli.url) as book:
        withdrawal = book.transaction(FIRST_SEQ + 2)
    assert printed == f"seq {FIRST_SEQ + 2} hash 0x{withdrawal.hash.hex()} withdrawal\n"
    assert cli.json("balance", ALICE)["balance"] == "8.00"
    # What `ledger sign` makes of an action file is submitted the same way.
    action = tmp_path / "action.json"
    action.write_text(json.dumps({"action": "transfer", "from": BOB, "to": CAROL, "amount": "1"}))
    code, out, err = run_offline(cli, "sign", str(action), "--keystore", cli.ks("bob"))
    assert code == 0, err
    path.write_text(out)
    assert cli.ok("submit", str(path)).startswith(f"seq {FIRST_SEQ + 3} hash ")
    assert cli.json("balance", CAROL)["balance"] == "1.00"
    assert cli.json("audit")["ok"] is True


def _claimed_by_bob(e: Envelope) -> None:
    e["signer"]["account"] = BOB  # alice's L2 key and signature, bob's name


SUBMIT_REFUSALS: dict[str, tuple[Callable[[Envelope], None], str]] = {
    name: ENVELOPE_TAMPERINGS[name] for name in ("amount", "nonce", "signature r", "domain name")
} | {
    "signed by a key bob never onboarded": (_claimed_by_bob, f"{BOB} onboarded L2 key"),
}


# ALICE can afford it, and nonce 7 is above her last (5), on the `refusing_url` ledger.
GOOD_ENVELOPE = ALICE_WALLET.transfer(ALICE, BOB, "1.25", DOMAIN, 7, int(FAR_FUTURE))


@pytest.mark.parametrize(
    "case", [*SUBMIT_REFUSALS, "not a JSON object", "not JSON", "an onboarding of nobody"]
)
def test_submit_refuses_bad_envelopes_and_writes_nothing(
    refusing_url: str,
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, str],
    tmp_path: Path,
    case: str,
) -> None:
    cli = Cli(refusing_url, capsys, keys)
    path = tmp_path / "signed.json"
    path.write_text(json.dumps(GOOD_ENVELOPE))
    assert run_offline(cli, "verify", str(path))[0] == 0  # only the tampering is wrong
    if case in SUBMIT_REFUSALS:
        envelope = json.loads(json.dumps(GOOD_ENVELOPE))
        tamper, reason = SUBMIT_REFUSALS[case]
        tamper(envelope)
        path.write_text(json.dumps(envelope))
    elif case == "an onboarding of nobody":
        onboarding = DAVE_WALLET.onboarding(DOMAIN)
        onboarding["account"] = "0x" + "d4" * 20  # dave's keys, someone else's address
        path.write_text(json.dumps(onboarding))
        reason = "the L1 signature is by"
    else:
        path.write_text("[]" if case == "not a JSON object" else "{")
        reason = "does not hold a JSON object" if case == "not a JSON object" else "cannot read"
    before = _state(refusing_url)
    assert_refused(cli("submit", str(path)), reason)
    assert _state(refusing_url) == before


def _state(url: str) -> tuple[Any, ...]:
    """Everything a refused command must leave as it was (and the audit still passes)."""
    with Ledger(url) as book:
        assert book.audit().ok
        return (book.store.head(), book.store.current_balances(), book.store.auth_projection())


# --------------------------------------------------------------------------- errors
# argv items are formatted with the `keys` paths ({alice}, {dir}, ...).
ERROR_CASES: dict[str, tuple[tuple[str, ...], str]] = {
    "amount abc": (("deposit", ALICE, "abc"), "invalid amount 'abc'"),
    "too many decimals": (("deposit", ALICE, "1.0000001"), "USDC has 6 decimals, got 7"),
    "negative": (("deposit", ALICE, "-1"), "invalid amount '-1'"),
    "zero": (("deposit", ALICE, "0"), "amount must be positive"),
    "zero decimals": (
        ("transfer", ALICE, BOB, "0.000000", "--keystore", "{alice}"),
        "amount must be positive",
    ),
    "signed amount abc": (
        ("withdraw", ALICE, "abc", "--keystore", "{alice}"),
        "invalid amount 'abc'",
    ),
    "unknown account withdraw": (
        ("withdraw", BOB, "1", "--keystore", "{bob}"),
        "never received funds",
    ),
    "unknown account transfer": (
        ("transfer", CAROL, ALICE, "1", "--keystore", "{carol}"),
        "never received funds",
    ),
    "malformed account": (("deposit", "0x12", "1"), "expected 0x followed by 40 hex digits"),
    "bad checksum": (
        ("deposit", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "1"),
        "EIP-55 checksum",
    ),
    "same account": (
        ("transfer", ALICE, "0x" + ALICE[2:].upper(), "1", "--keystore", "{alice}"),
        "to itself",
    ),
    "insufficient withdraw": (
        ("withdraw", ALICE, "10.000001", "--keystore", "{alice}"),
        "insufficient funds",
    ),
    "insufficient transfer": (
        ("transfer", ALICE, BOB, "11", "--keystore", "{alice}"),
        "has 10.00 USDC, needs 11.00",
    ),
    "idempotency conflict": (
        ("deposit", ALICE, "11", "--key", "dep-1"),
        "idempotency key 'dep-1' was already used",
    ),
    "idempotency conflict other kind": (
        ("reverse", str(FIRST_SEQ), "--reason", "x", "--key", "dep-1"),
        "already used",
    ),
    "unknown system account": (("deposit", "system:treasury", "1"), "unknown system account"),
    "unknown system source": (
        ("transfer", "system:treasury", ALICE, "1", "--keystore", "{alice}"),
        "unknown system account",
    ),
    "system deposit": (("deposit", "system:fees", "1"), "must be a user account"),
    "reverse unknown": (("reverse", "99", "--reason", "x"), "no transaction with sequence 99"),
    "balance unknown": (("balance", BOB), "never received funds"),
    "balance beyond head": (
        ("balance", ALICE, "--at-seq", str(FIRST_SEQ + 2)),
        "beyond the chain head",
    ),
    "unknown asset": (("balance", ALICE, "--asset", "DOGE"), "unknown asset 'DOGE'"),
    "history unknown": (("history", CAROL), "never received funds"),
    # The signed world.
    "transfer of another owner's funds": (
        ("transfer", ALICE, BOB, "1", "--keystore", "{bob}"),
        f"{BOB} cannot move funds of {ALICE}: it does not own it",
    ),
    "withdrawal of another owner's funds": (
        ("withdraw", ALICE, "1", "--keystore", "{carol}"),
        f"{CAROL} cannot move funds of {ALICE}",
    ),
    "another owner's sub-account": (
        ("transfer", f"{ALICE}:isolated-1", BOB, "1", "--keystore", "{bob}"),
        "does not own it",
    ),
    "not onboarded": (
        ("transfer", DAVE, ALICE, "1", "--keystore", "{dave}"),
        f"account {DAVE} is not onboarded",
    ),
    "nonce reused": (
        ("transfer", ALICE, BOB, "1", "--keystore", "{alice}", "--nonce", "5"),
        f"nonce 5 of {ALICE} was already used (sequence {FIRST_SEQ + 1})",
    ),
    "nonce below the last": (
        ("withdraw", ALICE, "1", "--keystore", "{alice}", "--nonce", "4"),
        "must exceed 5",
    ),
    "nonce too large": (
        ("transfer", ALICE, BOB, "1", "--keystore", "{alice}", "--nonce", str(2**63)),
        "nonce must be in 1..",
    ),
    "expired": (
        ("transfer", ALICE, BOB, "1", "--keystore", "{alice}", "--nonce", "6", "--expiry", "1"),
        "the action expired at 1",
    ),
    "missing keystore": (
        ("transfer", ALICE, BOB, "1", "--keystore", "{dir}/absent.json"),
        "cannot read keystore",
    ),
    "not a keystore": (
        ("withdraw", ALICE, "1", "--keystore", "{junk}"),
        "is not an Ethereum v3 keystore",
    ),
    "deposit by a non-operator key": (("deposit", ALICE, "1"), "is not a registered operator key"),
    "reversal by a non-operator key": (
        ("reverse", str(FIRST_SEQ), "--reason", "x"),
        "is not a registered operator key",
    ),
    "no operator keystore": (("deposit", ALICE, "1"), "no operator keystore at"),
    "wrong password": (("transfer", ALICE, BOB, "1", "--keystore", "{alice}"), "cannot decrypt"),
    "wrong operator password": (("deposit", ALICE, "1"), "cannot decrypt"),
    "no password": (
        ("transfer", ALICE, BOB, "1", "--keystore", "{alice}"),
        "no keystore password: set LEDGER_KEYSTORE_PASSWORD",
    ),
    "wallet show wrong password": (("wallet", "show", "{alice}"), "cannot decrypt"),
}
ERROR_ENV: dict[str, dict[str, str]] = {
    "deposit by a non-operator key": {"LEDGER_OPERATOR_KEYSTORE": "{alice}"},
    "reversal by a non-operator key": {"LEDGER_OPERATOR_KEYSTORE": "{bob}"},
    "no operator keystore": {"LEDGER_OPERATOR_KEYSTORE": "{dir}/absent.json"},
    "wrong password": {"LEDGER_KEYSTORE_PASSWORD": "wrong"},
    "wrong operator password": {"LEDGER_OPERATOR_PASSWORD": "wrong"},  # it comes first
    "no password": {"LEDGER_KEYSTORE_PASSWORD": ""},  # and stdin is not a terminal
    "wallet show wrong password": {"LEDGER_KEYSTORE_PASSWORD": "wrong"},
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_one_line_exit_2_and_write_nothing(
    refusing_url: str,
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    cli = Cli(refusing_url, capsys, keys)
    before = _state(refusing_url)
    for name, value in ERROR_ENV.get(case, {}).items():
        monkeypatch.setenv(name, value.format(**keys))
    argv, fragment = ERROR_CASES[case]
    assert_refused(cli(*(arg.format(**keys) for arg in argv)), fragment)
    assert _state(refusing_url) == before


@pytest.mark.parametrize(
    "argv",
    [
        ("deposit", ALICE, "1"),
        ("transfer", ALICE, BOB, "1", "--keystore", "{alice}"),
        ("withdraw", ALICE, "1", "--keystore", "{alice}"),
        ("onboard", "--keystore", "{alice}"),
        ("submit", "{junk}"),
        ("reverse", "1", "--reason", "x"),
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
    empty_url: str,
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, str],
    argv: tuple[str, ...],
) -> None:
    runner = Cli(empty_url, capsys, keys)
    err = assert_refused(runner(*(arg.format(**keys) for arg in argv)), "`ledger init`")
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
        ("transfer", ALICE, BOB, "1"),  # no --keystore
        ("withdraw", ALICE, "1", "--keystore", "k.json", "--nonce", "soon"),
        ("wallet",),  # no wallet command
        ("wallet", "show"),  # no file
        ("verify",),  # no file
    ],
    ids=[
        "missing amount",
        "seq not an integer",
        "json and csv",
        "no keystore",
        "nonce not an integer",
        "no wallet command",
        "wallet show without a file",
        "verify without a file",
    ],
)
def test_usage_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    """cli.py: 'Every error is one line on stderr and a non-zero exit.'"""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err


# --------------------------------------------------------------------------- console script
def _run_script(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["LEDGER_KEYSTORE_PASSWORD"] = PASSWORD
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def test_console_script_success_and_error(tmp_path: Path, keys: dict[str, str]) -> None:
    """Also: without LEDGER_OPERATOR_KEYSTORE, the operator keystore is ./operator.json."""
    assert CONSOLE_SCRIPT.exists(), CONSOLE_SCRIPT
    shutil.copy(keys["operator"], tmp_path / "operator.json")
    url = f"sqlite:///{tmp_path}/l.db"
    done = _run_script("init", "--db", url, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        f"ledger ready at {url} (head seq 2); operator {OPERATOR.address} (operator.json)\n"
    )
    refused = _run_script("deposit", "0x12", "1", "--db", url, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (
        "error: invalid address '0x12': expected 0x followed by 40 hex digits\n"
    )
    with Ledger(url) as book:
        assert book.store.head().seq == 2


# --------------------------------------------------------------------------- demo
def _summary(out: str) -> dict[str, str]:
    lines = out.splitlines()
    assert lines[0] == "demo ledger: sqlite:///ledger-demo.db"
    return dict(line.strip().split(maxsplit=1) for line in lines[1:])


def test_demo_is_deterministic(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    runs = []
    for _ in range(2):
        code = main(["demo", "--accounts", "10", "--transactions", "200"])
        out, err = capsys.readouterr()
        assert code == 0, err
        summary = _summary(out)
        assert summary["audit_ok"] == "True" and summary["proof_valid"] == "True"
        assert summary["audit_message"] == "intact"
        # Genesis and the listing, one onboarding per account, the committed payments, then
        # the trading session (prices, fills, an expiry, a liquidation).
        trading = int(summary["trading_transactions"])
        assert int(summary["head_seq"]) == 2 + 10 + int(summary["transactions"]) + trading
        assert int(summary["fills"]) > 0 and int(summary["liquidations"]) >= 1
        assert int(summary["settlements"]) == 1
        assert int(summary["transactions"]) + int(summary["rejected_as_expected"]) == 200
        runs.append(summary)
    assert (tmp_path / "ledger-demo.db").exists()
    stable = ("head_seq", "head_hash", "state_root", "transactions", "proof_account")
    assert [runs[0][k] for k in stable] == [runs[1][k] for k in stable]
    assert HASH.match(runs[0]["head_hash"])
    with Ledger("sqlite:///ledger-demo.db") as book:
        assert "0x" + book.store.head().hash.hex() == runs[0]["head_hash"]
        assert book.audit().ok


def test_demo_refuses_a_ledger_with_transactions(cli: Cli) -> None:
    cli.ok("deposit", ALICE, "1")
    assert_refused(cli("demo", "--transactions", "10"), "the demo needs an empty ledger")
    assert cli.head().seq == FIRST_SEQ


# --------------------------------------------------------------------------- edge cases
def test_demo_refuses_a_ledger_initialised_by_another_operator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: dict[str, str]
) -> None:
    cli = Cli(f"sqlite:///{tmp_path}/l.db", capsys, keys)
    cli.ok("init")
    assert_refused(
        cli("demo", "--accounts", "10", "--transactions", "10"), "the demo needs an empty ledger"
    )
    assert cli.head().seq == 2


def test_seal_by_a_non_operator_key_is_refused(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = sqlite_cli
    seed(cli)
    monkeypatch.setenv("LEDGER_OPERATOR_KEYSTORE", cli.ks("alice"))
    assert_refused(cli("seal"), "is not a registered operator key")
    assert_refused(cli("block"), "no block")
    assert cli.json("audit")["ok"] is True


@pytest.mark.parametrize(
    ("option", "reason"),
    [
        (("--nonce", "-1"), "nonce must be a positive integer"),
        (("--expiry", "-5"), "expiry must be unix seconds"),
        (("--nonce", "0"), "nonce must be a positive integer"),
        (("--expiry", "0"), "the action expired at 0"),
    ],
    ids=["nonce -1", "expiry -5", "nonce 0", "expiry 0"],
)
def test_nonce_and_expiry_out_of_range_are_refused(
    sqlite_cli: Cli, option: tuple[str, str], reason: str
) -> None:
    cli = sqlite_cli
    cli.ok("deposit", ALICE, "10")
    head = cli.head()
    assert_refused(cli("transfer", ALICE, BOB, "1", "--keystore", cli.ks("alice"), *option), reason)
    assert cli.head() == head
