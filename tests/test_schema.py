"""The schema: created only by the Alembic migrations, identical to the SQLAlchemy models on
both stores, idempotent to migrate, and refused with a clear message when missing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from eth_account import Account
from sqlalchemy import Engine, inspect, text

import ledger
import migrations
from ledger import Ledger
from ledger.cli import main
from ledger.core.encoding import sha256
from ledger.errors import StoreNotInitialised
from ledger.store.database import check_schema, make_engine, migrate
from ledger.store.schema import JOURNAL_TABLES, Base
from tests.conftest import (
    ALICE,
    ALICE_WALLET,
    BOB,
    FIRST_SEQ,
    OPERATOR,
    STORES,
    empty_database,
    open_book,
)

MODEL_TABLES = {
    "assets",
    "accounts",
    "balances",
    "transactions",
    "postings",
    "blocks",
    "chain_head",
    "operators",
    "wallets",
    "nonces",
    "settings",
    "trading_state",
    "chain_cursors",
}
# Tables whose rows a migration could seed or change (0002 adds a column to blocks).
ROW_TABLES = (
    "alembic_version",
    "assets",
    "chain_head",
    "accounts",
    "balances",
    "blocks",
    "operators",
    "wallets",
    "nonces",
    "settings",
    "trading_state",
    "chain_cursors",
)
HEAD_REVISION = "0005"


@pytest.fixture(params=STORES)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it, on each store."""
    yield from empty_database(request.param, tmp_path)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the migrated database of each store."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _tables(eng: Engine) -> set[str]:
    return set(inspect(eng).get_table_names())


def _triggers(eng: Engine) -> set[str]:
    with eng.connect().execution_options(sqlite_begin="DEFERRED") as connection:
        if eng.dialect.name == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        else:
            query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
        return {row[0] for row in connection.execute(text(query))}


def _snapshot(eng: Engine) -> dict[str, Any]:
    """Everything a migration could change: tables, columns, keys, indexes, triggers, the
    revision and the seeded rows."""
    insp = inspect(eng)
    tables: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        tables[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                for c in insp.get_columns(table)
            ],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
            "indexes": sorted(
                (i["name"] or "", tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(table)
            ),
        }
    with eng.connect().execution_options(sqlite_begin="DEFERRED") as connection:
        rows = {
            name: sorted(tuple(r) for r in connection.execute(text(f"SELECT * FROM {name}")))
            for name in ROW_TABLES
        }
    return {"tables": tables, "triggers": _triggers(eng), "rows": rows}


# --------------------------------------------------------------------------- models == migrations
def test_migrated_database_matches_the_models(engine: Engine) -> None:
    with engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_columns_keys_and_indexes_match_the_models_exactly(engine: Engine) -> None:
    """A hand-written comparison alongside autogenerate's: column order, compiled column
    types, nullability, primary keys, unique constraints and index names, table by table,
    in the store's own dialect."""
    insp = inspect(engine)
    assert set(insp.get_table_names()) == MODEL_TABLES | {"alembic_version"}
    for name, table in Base.metadata.tables.items():
        reflected = {c["name"]: c for c in insp.get_columns(name)}
        assert list(reflected) == [c.name for c in table.columns], name
        for column in table.columns:
            got = reflected[column.name]
            assert str(got["type"]) == column.type.compile(engine.dialect), (name, column.name)
            assert got["nullable"] == column.nullable, (name, column.name)
        model_pk = [c.name for c in table.primary_key.columns]
        assert insp.get_pk_constraint(name)["constrained_columns"] == model_pk, name
        model_unique = sorted((c.name,) for c in table.columns if c.unique)
        got_unique = sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(name))
        assert got_unique == model_unique, name
        model_indexes = sorted((i.name, tuple(c.name for c in i.columns)) for i in table.indexes)
        got_indexes = sorted(
            (i["name"], tuple(i["column_names"]))
            for i in insp.get_indexes(name)
            if not i.get("duplicates_constraint")  # PostgreSQL's indexes behind UNIQUE
        )
        assert got_indexes == model_indexes, name


def test_dialect_specific_layout(engine: Engine) -> None:
    """What the models only hint at: SQLite's rowid-aliased sequence columns and
    WITHOUT ROWID postings; BIGINT sequences on PostgreSQL."""
    with engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
        if engine.dialect.name == "sqlite":
            query = text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
            ddl = {row[0]: row[1] for row in connection.execute(query)}
            assert "WITHOUT ROWID" in ddl["postings"]
            assert "seq INTEGER NOT NULL" in ddl["transactions"]
            assert "number INTEGER NOT NULL" in ddl["blocks"]
        else:
            query = text(
                "SELECT table_name || '.' || column_name, data_type "
                "FROM information_schema.columns WHERE table_schema = 'public'"
            )
            types = {row[0]: row[1] for row in connection.execute(query)}
            assert types["transactions.seq"] == types["blocks.number"] == "bigint"


def test_migration_installs_the_append_only_guards(engine: Engine) -> None:
    triggers = _triggers(engine)
    if engine.dialect.name == "sqlite":
        expected = {f"{t}_no_{a}" for t in JOURNAL_TABLES for a in ("update", "delete")}
    else:
        expected = {f"{t}_{g}" for t in JOURNAL_TABLES for g in ("append_only", "no_truncate")}
        expected.add("postings_zero_sum")
    assert triggers == expected


def test_migration_seeds_usdc_and_the_empty_head(engine: Engine) -> None:
    """The migrations seed the asset and an empty chain head; genesis (the operator key and
    the chain ids) is a signed transaction that ``ledger init`` writes, not migration data."""
    with engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
        assert [tuple(r) for r in connection.execute(text("SELECT code, scale FROM assets"))] == [
            ("USDC", 6)
        ]
        head = connection.execute(
            text("SELECT id, seq, hash, recorded_at, block_number FROM chain_head")
        ).all()
        assert [(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in head] == [(1, 0, b"\x00" * 32, 0, 0)]
        version = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [r[0] for r in version] == [HEAD_REVISION]
        for table in ("transactions", "operators", "wallets", "nonces", "settings"):
            assert connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() == 0, table


# --------------------------------------------------------------------------- migrations only
def _operator_keystore(path: Path, password: str) -> Path:
    """A keystore holding conftest's OPERATOR key (cheap scrypt: tests only)."""
    key = sha256(b"ledger-test-wallet-operator").digest()
    encrypted = Account.encrypt(key, password, kdf="scrypt", iterations=2)
    assert encrypted["address"].lower() == OPERATOR.address[2:]
    path.write_text(json.dumps(encrypted))
    return path


def test_fresh_database_has_no_tables_until_init(
    empty_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keystore = _operator_keystore(tmp_path / "operator.json", "pw")
    monkeypatch.setenv("LEDGER_OPERATOR_KEYSTORE", str(keystore))
    monkeypatch.setenv("LEDGER_KEYSTORE_PASSWORD", "pw")
    monkeypatch.delenv("LEDGER_OPERATOR_PASSWORD", raising=False)
    eng = make_engine(empty_url)
    try:
        assert _tables(eng) == set()
        with pytest.raises(StoreNotInitialised):
            Ledger(empty_url)
        assert _tables(eng) == set(), "opening a ledger must not create the schema"
        assert main(["init", "--db", empty_url]) == 0
        out = capsys.readouterr().out
        assert f"(head seq 2); operator {OPERATOR.address} ({keystore})" in out
        assert _tables(eng) == MODEL_TABLES | {"alembic_version"}
        with Ledger(empty_url) as book:
            assert book.store.head().seq == 2
            assert book.transaction(1).kind == "operator_keys"
            assert book.transaction(2).kind == "listing"
        with eng.connect().execution_options(sqlite_begin="DEFERRED") as connection:
            operators = connection.execute(text("SELECT address, added_seq FROM operators"))
            assert [tuple(r) for r in operators] == [(OPERATOR.address, 1)]
    finally:
        eng.dispose()


def test_no_code_path_creates_tables_from_the_models() -> None:
    """The models must never be used to create the schema (``metadata.create_all``,
    ``Table.create``). ``Account.create()`` (eth-account: a new wallet key) is the one
    ``.create(`` call allowed."""
    roots = [Path(ledger.__file__).parent, Path(migrations.__file__).parent]
    forbidden = re.compile(r"create_all|(?<!\bAccount)\.create\(")
    offenders = [
        str(path)
        for root in roots
        for path in root.rglob("*.py")
        if forbidden.search(path.read_text())
    ]
    assert offenders == []
    assert forbidden.search("Base.metadata.create_all(engine)")
    assert forbidden.search("TransactionRow.__table__.create(bind)")
    assert not forbidden.search("account = Account.create()")


def test_migrate_twice_is_a_no_op(engine: Engine, db_url: str) -> None:
    with open_book(db_url) as book:
        book.deposit(ALICE, "10")
        book.transfer(ALICE, BOB, "4", wallet=ALICE_WALLET, nonce=1)
        book.seal()
    before = _snapshot(engine)
    assert before["rows"]["operators"] and before["rows"]["wallets"] and before["rows"]["nonces"]
    migrate(engine)
    migrate(engine)
    assert _snapshot(engine) == before
    Ledger.init(db_url, operator=OPERATOR).close()  # genesis exists: writes nothing
    assert _snapshot(engine) == before
    with Ledger(db_url) as book:
        assert book.store.head().seq == FIRST_SEQ + 1
        assert book.audit().ok


# --------------------------------------------------------------------------- check_schema
def test_check_schema_refuses_an_empty_database(empty_url: str) -> None:
    eng = make_engine(empty_url)
    try:
        with pytest.raises(StoreNotInitialised, match="`ledger init`") as info:
            check_schema(eng)
        expected = (
            "no ledger database at" if empty_url.startswith("sqlite") else "schema is at nothing"
        )
        assert expected in str(info.value)
        assert info.value.exit_code == 2
        assert _tables(eng) == set()
    finally:
        eng.dispose()


def test_check_schema_refuses_an_unknown_revision(empty_url: str) -> None:
    eng = make_engine(empty_url)
    try:
        with eng.begin() as connection:
            connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            connection.execute(text("INSERT INTO alembic_version VALUES ('9999')"))
        expected = rf"at 9999, the code needs {HEAD_REVISION}.*ledger init"
        with pytest.raises(StoreNotInitialised, match=expected):
            check_schema(eng)
    finally:
        eng.dispose()


def test_check_schema_accepts_a_migrated_database(engine: Engine) -> None:
    check_schema(engine)


def test_check_schema_on_an_unopenable_sqlite_path(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path}/missing-dir/l.db")
    try:
        with pytest.raises(StoreNotInitialised, match="no ledger database at"):
            check_schema(eng)
        assert not (tmp_path / "missing-dir").exists()
    finally:
        eng.dispose()


def test_check_schema_on_an_unreadable_sqlite_file(tmp_path: Path) -> None:
    (tmp_path / "l.db").write_bytes(b"this is not a database" * 100)
    eng = make_engine(f"sqlite:///{tmp_path}/l.db")
    try:
        with pytest.raises(StoreNotInitialised, match="cannot open the ledger database"):
            check_schema(eng)
    finally:
        eng.dispose()
