"""Database access: SQLAlchemy 2 async, one database (SQLite file or PostgreSQL schema) per service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from datetime import datetime, timezone

from sqlalchemy import DateTime, MetaData, event, text
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from roomee.kit.observability import instrument_engine
from roomee.kit.settings import Settings

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    """A service's metadata, with the kit's outbox and inbox tables already on it."""
    from roomee.kit.events.tables import add_event_tables

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    add_event_tables(metadata)
    return metadata


def sqlite_path(settings: Settings, service: str) -> Path:
    """Where a service's SQLite database lives when no ``database_url`` is set."""
    return settings.data_dir / f"{service}.db"


class Database:
    """The engine and session factory of one service."""

    def __init__(self, service: str, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        if settings.database_url:
            self.schema: str | None = f"{settings.schema_prefix}{service}"
            url = settings.database_url
            for prefix in ("postgresql://", "postgres://"):
                if url.startswith(prefix):
                    url = "postgresql+asyncpg://" + url[len(prefix):]
            self.url = url
            self.engine: AsyncEngine = create_async_engine(
                url,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_max_overflow,
                # No pre-ping: with asyncpg it costs three round trips (BEGIN, ";", ROLLBACK) per checkout,
                # more than the read it guards. A connection found dead raises a disconnect error instead,
                # which invalidates the pool (one failed request after a database restart); recycling keeps
                # connections from outliving server-side idle timeouts.
                pool_recycle=1800,
                # Last in, first out: a light load keeps reusing the same few connections, whose prepared
                # statements and type introspection are already done, instead of warming every one in turn.
                pool_use_lifo=True,
                connect_args={"server_settings": {"search_path": self.schema}},
            )
        else:
            self.schema = None
            settings.ensure_data_dir()
            path = sqlite_path(settings, service)
            self.url = f"sqlite+aiosqlite:///{path}"
            self.engine = create_async_engine(self.url, connect_args={"timeout": 30})
            # Every DateTime(timezone=True) of every model read back with its zone, as on PostgreSQL.
            self.engine.dialect.colspecs = {**self.engine.dialect.colspecs, DateTime: UtcSQLiteDateTime}
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        instrument_engine(self.engine)  # a span per statement of a traced request or event
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # Reads on PostgreSQL run in autocommit: under READ COMMITTED each statement takes its own snapshot
        # either way, so BEGIN and COMMIT would only add two round trips. SQLite's driver sends no BEGIN
        # before a SELECT, so it keeps the plain engine.
        reader = self.engine.execution_options(isolation_level="AUTOCOMMIT") if self.schema else self.engine
        self.read_sessionmaker = async_sessionmaker(reader, expire_on_commit=False)
        # Reads in flight on PostgreSQL are bounded by the pool's size: past it, QueuePool opens an overflow
        # connection per read and closes it when returned, so under load every read paid a connection set-up
        # (TCP, TLS attempt, authentication, a cold statement cache; a fifth of the CPU of a one-row read at
        # 16 in flight). A read waits for a pooled connection instead; the overflow stays for transactions,
        # which may hold theirs across a call to another service.
        self._read_slots = asyncio.Semaphore(settings.db_pool_size) if self.schema else None

    @property
    def is_postgres(self) -> bool:
        return self.schema is not None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error."""
        async with self.sessionmaker() as session:
            async with session.begin():
                yield session

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for a request that reads: no transaction on PostgreSQL (each statement commits on
        its own, so a write made here is kept even if a later statement fails)."""
        if self._read_slots is None:
            async with self.read_sessionmaker() as session:
                yield session
                await session.commit()
            return
        async with self._read_slots, self.read_sessionmaker() as session:
            yield session
            await session.commit()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


class UtcSQLiteDateTime(SQLITE_DATETIME):
    """SQLite keeps no zone: a ``DateTime(timezone=True)`` is stored in UTC and read back as UTC (aware),
    so a timestamp on the wire carries its zone on both backends. Naive ``DateTime`` stays naive."""

    def bind_processor(self, dialect):
        store = super().bind_processor(dialect)
        if not self.timezone:
            return store

        def process(value):
            if isinstance(value, datetime) and value.tzinfo is not None:
                value = value.astimezone(timezone.utc)
            return store(value)

        return process

    def result_processor(self, dialect, coltype):
        read = super().result_processor(dialect, coltype)
        if not self.timezone:
            return read

        def process(value):
            value = read(value)
            return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value

        return process


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the relay read while a request writes; busy_timeout waits instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
