"""Storage adapter: SQLAlchemy 2.0 over SQLite (embedded default) or PostgreSQL."""
