"""Fixtures: every store test runs on SQLite and, when LEDGER_TEST_DATABASE_URL points at a
PostgreSQL server, on PostgreSQL too (a fresh database per test, cloned from a migrated
template)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ledger import Ledger
from ledger.chain.vault import Vault, connect, give_eth, send
from ledger.core.encoding import sha256
from ledger.store.database import database_url, make_engine, migrate
from ledger.wallet import Wallet
from tests.anvil import running_anvil

PG_ENV = "LEDGER_TEST_DATABASE_URL"
# One template per test process: parallel pytest runs on one server must not share it.
TEMPLATE = f"ledger_test_template_{os.getpid()}"


def test_wallet(name: str) -> Wallet:
    """A deterministic wallet for tests (its key is derived from ``name``)."""
    return Wallet(sha256(f"ledger-test-wallet-{name}".encode()).digest())


test_wallet.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


OPERATOR = test_wallet("operator")
ALICE_WALLET = test_wallet("alice")
BOB_WALLET = test_wallet("bob")
CAROL_WALLET = test_wallet("carol")
ALICE = ALICE_WALLET.address
BOB = BOB_WALLET.address
CAROL = CAROL_WALLET.address
WALLETS = {ALICE: ALICE_WALLET, BOB: BOB_WALLET, CAROL: CAROL_WALLET}
# Genesis (the operator key), the instrument listing and the three onboardings come first
# in every `book`.
FIRST_SEQ = 6


def pg_admin_url() -> str | None:
    url = os.environ.get(PG_ENV)
    return database_url(url) if url else None


_template_ready = False


def _admin_execute(statement: str) -> None:
    admin = pg_admin_url()
    assert admin is not None
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(statement))
    engine.dispose()


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def new_postgres_database() -> str:
    """A fresh, migrated PostgreSQL database; returns its URL."""
    global _template_ready
    admin = pg_admin_url()
    assert admin is not None
    if not _template_ready:
        _admin_execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        _admin_execute(f"CREATE DATABASE {TEMPLATE}")
        engine = make_engine(_with_database(admin, TEMPLATE))
        migrate(engine)
        engine.dispose()
        _template_ready = True
    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    _admin_execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    return _with_database(admin, name)


@pytest.fixture(scope="session", autouse=True)
def _drop_template() -> Iterator[None]:
    yield
    if _template_ready:
        _admin_execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def empty_database(store: str, directory: Path) -> Iterator[str]:
    """A database with nothing in it (not even migrated) on ``store``; dropped afterwards."""
    if store == "sqlite":
        yield f"sqlite:///{directory}/empty.db"
        return
    admin = pg_admin_url()
    assert admin is not None
    name = f"ledger_empty_{uuid.uuid4().hex[:12]}"
    _admin_execute(f"CREATE DATABASE {name} TEMPLATE template0")
    url = _with_database(admin, name)
    yield url
    drop_postgres_database(url)


STORES = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(pg_admin_url() is None, reason=f"{PG_ENV} is not set"),
        ],
    ),
]


@pytest.fixture(params=STORES)
def db_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """An empty, migrated ledger database on each store."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/ledger.db"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
    else:
        url = new_postgres_database()
        yield url
        drop_postgres_database(url)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL ledger database (skips without a server)."""
    if pg_admin_url() is None:
        pytest.skip(f"{PG_ENV} is not set")
    url = new_postgres_database()
    yield url
    drop_postgres_database(url)


def open_book(url: str) -> Ledger:
    """Genesis with the test operator, and ALICE, BOB and CAROL onboarded."""
    ledger = Ledger.init(url, operator=OPERATOR)
    for wallet in WALLETS.values():
        ledger.onboard(wallet)
    return ledger


@pytest.fixture
def book(db_url: str) -> Iterator[Ledger]:
    """An open ledger on each store, with ALICE, BOB and CAROL onboarded."""
    with open_book(db_url) as ledger:
        yield ledger


def deployed_vault(rpc_url: str | None) -> Vault:
    """A vault (operated by OPERATOR's L1 key) with ALICE and BOB holding 1,000 USDC on L1."""
    w3 = connect(rpc_url)
    funder = w3.eth.accounts[0]
    for wallet in (ALICE_WALLET, BOB_WALLET, OPERATOR):
        give_eth(w3, funder, wallet.l1_account.address)
    deployed = Vault.deploy(w3, ALICE_WALLET.l1_account, OPERATOR.l1_account.address)
    for wallet in (ALICE_WALLET, BOB_WALLET):
        account = wallet.l1_account
        send(w3, account, deployed.usdc.functions.mint(account.address, 1_000 * 10**6))
    return deployed


@pytest.fixture(params=["py-evm", "anvil"])
def vault(request: pytest.FixtureRequest) -> Iterator[Vault]:
    """The vault on the in-process chain, and on a real node (anvil)."""
    if request.param == "py-evm":
        yield deployed_vault(None)
        return
    with running_anvil() as url:
        yield deployed_vault(url)


@pytest.fixture
def pyevm_vault() -> Vault:
    return deployed_vault(None)
