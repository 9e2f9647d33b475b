"""Engines and migrations.

SQLite runs in WAL mode with ``synchronous=FULL`` (an acknowledged commit survives a
power cut) and takes the write lock at ``BEGIN IMMEDIATE``, so two writers never both
read the chain head. PostgreSQL uses psycopg 3.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

import migrations
from ledger.errors import StoreNotInitialised

DEFAULT_URL = "sqlite:///ledger.db"
BUSY_TIMEOUT_MS = 60_000


def database_url(url: str | None = None) -> str:
    """The URL to use: explicit, else ``LEDGER_DB_URL``, else ``sqlite:///ledger.db``."""
    chosen = url or os.environ.get("LEDGER_DB_URL") or DEFAULT_URL
    for prefix in ("postgresql://", "postgres://"):
        if chosen.startswith(prefix):
            return "postgresql+psycopg://" + chosen[len(prefix) :]
    return chosen


def make_engine(url: str | None = None) -> Engine:
    """An engine configured for the ledger's durability and locking rules."""
    resolved = database_url(url)
    if resolved.startswith("sqlite"):
        engine = create_engine(resolved, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(resolved, pool_pre_ping=True)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configuration pointing at the bundled ``migrations`` package."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (``ledger init``)."""
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")


def check_schema(engine: Engine) -> None:
    """Raise StoreNotInitialised unless the database is at the newest migration."""
    path = engine.url.database
    if engine.dialect.name == "sqlite" and path and not Path(path).exists():
        # Checked before connecting: SQLite would create an empty file.
        raise StoreNotInitialised(f"no ledger database at {path}: run `ledger init`")
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    try:
        with engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except DBAPIError as exc:
        raise StoreNotInitialised(f"cannot open the ledger database: {exc.orig}") from exc
    if current != head:
        raise StoreNotInitialised(
            f"the database schema is at {current or 'nothing'}, the code needs {head}: "
            "run `ledger init`"
        )
