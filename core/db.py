"""The label database: one SQLAlchemy engine per URL, shared tables, additive schema upgrades.

The label store (``core.labels.store``) and the access store (``core.auth``: roles and the audit
log) keep their tables in one database, so a label save and its audit row commit together.

Any SQLAlchemy URL works (``core.settings.database_url()`` by default: a SQLite file under the
cache, or PostgreSQL through ``SCANATLAS_DB_URL``). SQLite runs in WAL mode with a busy timeout
so the app and the CLI can write at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool

__all__ = ["Base", "SQLITE_BUSY_TIMEOUT_S", "open_database"]

SQLITE_BUSY_TIMEOUT_S = 30
_SCHEMA_ATTEMPTS = 5


class Base(DeclarativeBase):
    pass


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database
    if not database or database == ":memory:":
        # One shared connection, or each session would see its own empty in-memory database.
        return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _add_missing_columns(engine: Engine) -> None:
    """Add columns that a newer release defines to tables an older one created.

    Only nullable columns are ever added, so rows written before keep reading (as NULL there).
    """
    inspector = inspect(engine)
    with engine.begin() as connection:
        for table in Base.metadata.sorted_tables:
            if not inspector.has_table(table.name):
                continue
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present or not column.nullable:
                    continue
                kind = column.type.compile(dialect=engine.dialect)
                connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def open_database(url: str) -> tuple[Engine, sessionmaker[Session]]:
    """An engine and session factory for ``url``, with every table created or upgraded."""
    engine = make_engine(url)
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            Base.metadata.create_all(engine)
            _add_missing_columns(engine)
            break
        except DBAPIError:
            # Two processes creating the tables at once: one wins, the other finds "already
            # exists"; looking again then sees the tables and has nothing left to do.
            if attempt == _SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    return engine, sessionmaker(engine, expire_on_commit=False)


class DatabaseClient:
    """Lazy access to the label database: the engine opens on first use, ``close()`` releases
    pooled connections (the data stays), and a client is a context manager. ``url`` ``None``
    means ``core.settings.database_url()``."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    def _session(self) -> Session:
        if self._sessions is None:
            from core.settings import database_url

            self._engine, self._sessions = open_database(self.url or database_url())
        return self._sessions()

    def close(self) -> None:
        """Release pooled connections (the data stays on disk)."""
        if self._engine is not None:
            self._engine.dispose()
        self._engine = None
        self._sessions = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
