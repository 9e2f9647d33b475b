"""Alembic environment: runs on the connection the ledger hands over, or on a URL."""

from __future__ import annotations

from alembic import context

from ledger.store.database import database_url, make_engine
from ledger.store.schema import Base

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    engine = make_engine(database_url(config.get_main_option("sqlalchemy.url") or None))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
