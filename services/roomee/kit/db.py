"""Database access: SQLAlchemy 2 async, one database (SQLite file or PostgreSQL schema) per service."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy import DateTime, MetaData, event, text
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from roomee.kit.observability import instrument_engine, spans_exported
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
        # Hot reads (``roomee.kit.hot``): SELECTs compiled once, run on raw asyncpg connections of their own.
        self.hot_pool = HotReadPool(self) if self.schema else None
        self._hot_statements: dict[int, _HotStatement] = {}

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

    def hot_statement(self, statement: sa.Select) -> "_HotStatement":
        """``statement`` compiled once for this database (cached by identity: build it once, bind values)."""
        found = self._hot_statements.get(id(statement))
        if found is None or found.statement is not statement:
            found = _HotStatement(statement, self.engine.dialect)
            if len(self._hot_statements) >= HOT_STATEMENTS_CACHED:
                # Statements built per call (each one new) would fill the cache: they are compiled each time.
                log.warning("more than %d hot statements on %s: one is built per call", HOT_STATEMENTS_CACHED,
                            self.service)
                self._hot_statements.clear()
            self._hot_statements[id(statement)] = found
        return found

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self.hot_pool is not None:
            await self.hot_pool.close()
        await self.engine.dispose()


# Connection arguments SQLAlchemy's asyncpg dialect takes for itself, which asyncpg.connect refuses.
_DIALECT_ONLY_ARGS = ("prepared_statement_cache_size", "prepared_statement_name_func", "async_fallback",
                      "async_creator_fn")
HOT_CONNECT_TIMEOUT_SECONDS = 10.0
HOT_STATEMENTS_CACHED = 256
HOT_RECYCLE_SECONDS = 1800.0  # as the engine's pool_recycle
HOT_SLOT_WAIT_SECONDS = 30.0  # as the engine's pool (SQLAlchemy's pool_timeout)


class HotReadPool:
    """Raw asyncpg connections for hot reads, ``db_pool_size`` of them at most, last in first out.

    SQLAlchemy's pool checkout and its ``Connection`` cost 2-4 times the round trip of a one-row SELECT;
    a hot read takes a connection here instead (a list pop), runs a statement compiled once, and gives it
    back. The connections get the engine's connect arguments and JSON codecs, so rows read the same as
    through the engine. Statements run outside a transaction (autocommit, as :meth:`Database.reading`).
    A connection whose statement failed on the wire or was cancelled is closed, not reused."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._free = db.settings.db_pool_size  # connections that may still be handed out
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._idle: list[tuple[Any, float]] = []
        self._closed = False

    async def _slot(self) -> None:
        """One of ``db_pool_size`` slots (a counter: asyncio.Semaphore's bookkeeping cost more per read)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # The slot is handed over by release(); a stalled database fails the read (FastAPI then answers
            # it through the engine's pool) after as long as the engine's pool would wait.
            await asyncio.wait_for(waiter, HOT_SLOT_WAIT_SECONDS)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._give_back()  # handed over while being cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def _give_back(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def _connect_args(self) -> dict[str, Any]:
        engine = self.db.engine
        _args, params = engine.dialect.create_connect_args(engine.url)
        # The URL's prepared_statement_cache_size (0 behind PgBouncer in transaction mode) is asyncpg's own.
        cache_size = params.pop("prepared_statement_cache_size", None)
        for name in _DIALECT_ONLY_ARGS:
            params.pop(name, None)
        if cache_size is not None:
            params["statement_cache_size"] = int(cache_size)
        params["server_settings"] = {**params.get("server_settings", {}), "search_path": self.db.schema}
        params.setdefault("timeout", HOT_CONNECT_TIMEOUT_SECONDS)
        return params

    async def _connect(self):
        import asyncpg

        connection = await asyncpg.connect(**self._connect_args())
        try:
            # As SQLAlchemy's asyncpg dialect: JSON decoded with the engine's deserializer.
            loads = self.db.engine.dialect._json_deserializer or json.loads
            await connection.set_type_codec("json", encoder=str.encode, decoder=lambda b: loads(b.decode()),
                                            schema="pg_catalog", format="binary")
            await connection.set_type_codec("jsonb", encoder=lambda s: b"\x01" + s.encode(),
                                            decoder=lambda b: loads(b[1:].decode()), schema="pg_catalog",
                                            format="binary")
        except BaseException:
            connection.terminate()
            raise
        return connection

    async def acquire(self):
        await self._slot()
        try:
            now = time.monotonic()
            while self._idle:
                connection, born = self._idle.pop()
                if now - born < HOT_RECYCLE_SECONDS and not connection.is_closed():
                    return connection, born
                connection.terminate()
            return await self._connect(), now
        except BaseException:
            self._give_back()
            raise

    def release(self, connection, born: float, *, reusable: bool) -> None:
        if reusable and not self._closed and not connection.is_closed():
            self._idle.append((connection, born))
        else:
            connection.terminate()
        self._give_back()

    async def close(self) -> None:
        self._closed = True  # a read still running terminates its connection when it gives it back
        idle, self._idle = self._idle, []
        for connection, _born in idle:
            try:
                await asyncio.wait_for(connection.close(), 5)
            except Exception:
                connection.terminate()


class _HotStatement:
    """A SELECT compiled once: its SQL, the order of its parameters with their defaults and bind
    processors, and its columns with their result processors (the dialect's, as the engine applies)."""

    def __init__(self, statement: sa.Select, dialect) -> None:
        if not isinstance(statement, (sa.Select, sa.CompoundSelect)):
            raise TypeError(f"hot reads run SELECTs only, not {type(statement).__name__}")
        compiled = statement.compile(dialect=dialect)
        if any(bind.expanding for bind in compiled.binds.values()):
            raise TypeError("an expanding IN parameter is compiled per call: use Repository._one_of")
        self.statement = statement
        self.sql = compiled.string
        names = list(compiled.positiontup or ())
        processors = compiled._bind_processors
        self.parameters = [(name, compiled.binds[name], processors.get(name)) for name in names]
        self.keys = [column.keyname for column in compiled._result_columns]
        result = [column.type._cached_result_processor(dialect, None) for column in compiled._result_columns]
        self.result_processors = result if any(result) else None

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, bind, process in self.parameters:
            value = values[bind.key] if bind.key in values else bind.effective_value
            out.append(process(value) if process is not None and value is not None else value)
        return out

    def rows(self, records) -> list[dict[str, Any]]:
        keys, processors = self.keys, self.result_processors
        if processors is None:
            return [dict(zip(keys, record)) for record in records]
        return [{key: (value if process is None else process(value))
                 for key, process, value in zip(keys, processors, record)} for record in records]


class HotRows:
    """The rows of one hot read, answering what repositories ask of a SQLAlchemy result
    (``mappings().first()``, iteration, ``scalar()``, ``scalars()``, ``first()``, ``one()``, ``all()``)."""

    __slots__ = ("_rows", "_keys")

    def __init__(self, rows: list[dict[str, Any]], keys: list[str]) -> None:
        self._rows, self._keys = rows, keys

    def mappings(self) -> "HotMappings":
        return HotMappings(self._rows)

    def _tuples(self) -> list[tuple]:
        return [tuple(row.values()) for row in self._rows]

    def __iter__(self):
        return iter(self._tuples())

    def all(self) -> list[tuple]:
        return self._tuples()

    def first(self) -> tuple | None:
        return tuple(self._rows[0].values()) if self._rows else None

    def one(self) -> tuple:
        if len(self._rows) != 1:
            raise sa.exc.NoResultFound("expected one row") if not self._rows else sa.exc.MultipleResultsFound(
                "expected one row")
        return tuple(self._rows[0].values())

    def one_or_none(self) -> tuple | None:
        return None if not self._rows else self.one()

    def scalar(self) -> Any:
        return next(iter(self._rows[0].values())) if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> "HotMappings":
        return HotMappings([next(iter(row.values())) for row in self._rows])


class HotMappings(list):
    """Rows as dicts (``mappings()``) or first columns (``scalars()``)."""

    def first(self) -> Any:
        return self[0] if self else None

    def all(self) -> list:
        return list(self)

    def one(self) -> Any:
        if len(self) != 1:
            raise sa.exc.NoResultFound("expected one row") if not self else sa.exc.MultipleResultsFound(
                "expected one row")
        return self[0]

    def one_or_none(self) -> Any:
        return None if not self else self.one()


class HotReads:
    """What a hot read hands to a repository in place of an ``AsyncSession``: ``execute(select, values)``
    runs a statement built once (module level, bound parameters) compiled once. On PostgreSQL on a raw
    asyncpg connection of :class:`HotReadPool` (asyncpg prepares it once per connection); on SQLite on
    an engine connection (the engine's compiled cache). Only SELECTs; one connection for the block."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._connection = None
        self._born = 0.0
        self._reusable = True
        self._sqlite = None

    def get_bind(self):
        return self.db.engine

    async def execute(self, statement, values: Mapping[str, Any] | None = None) -> HotRows:
        values = values or {}
        pool = self.db.hot_pool
        if pool is None:
            if not isinstance(statement, (sa.Select, sa.CompoundSelect)):
                raise TypeError(f"hot reads run SELECTs only, not {type(statement).__name__}")
            if self._sqlite is None:
                self._sqlite = await self.db.engine.connect()
            result = await self._sqlite.execute(statement, dict(values))
            keys = list(result.keys())
            return HotRows([dict(row) for row in result.mappings()], keys)
        compiled = self.db.hot_statement(statement)
        arguments = compiled.arguments(values)
        if self._connection is None:
            self._connection, self._born = await pool.acquire()
        try:
            with _statement_span(compiled.sql, self.db):
                records = await self._connection.fetch(compiled.sql, *arguments)
        except BaseException as exc:
            # A statement the server refused leaves the connection as it was; anything else (lost, cancelled
            # mid-way) may not: it is closed.
            self._reusable = self._reusable and _server_error(exc)
            raise
        return HotRows(compiled.rows(records), compiled.keys)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self.db.hot_pool.release(connection, self._born, reusable=self._reusable)
        sqlite, self._sqlite = self._sqlite, None
        if sqlite is not None:
            await sqlite.close()


def _server_error(exc: BaseException) -> bool:
    """An error the server answered to the statement (the connection is still in step), not a connection
    exception (SQLSTATE class 08) or a shutdown (57P)."""
    from asyncpg.exceptions import PostgresError

    return isinstance(exc, PostgresError) and not (getattr(exc, "sqlstate", None) or "").startswith(("08", "57P"))


class _NoSpan:
    def __enter__(self):
        return None

    def __exit__(self, *_exc) -> None:
        return None


_NO_SPAN = _NoSpan()


_hot_tracer = None


def _statement_span(sql: str, db: Database):
    """A CLIENT span for the statement inside a traced request, as the engine's instrumentation writes, when
    spans are exported."""
    global _hot_tracer
    from opentelemetry import trace

    # Not when no processor takes spans (otel_exporter none): a span per statement would only cost.
    if not trace.get_current_span().is_recording() or not spans_exported():
        return _NO_SPAN
    if _hot_tracer is None:  # looked up once: get_tracer builds an instrumentation scope each call
        _hot_tracer = trace.get_tracer("roomee.hot")
    return _hot_tracer.start_as_current_span(
        sql.split(None, 1)[0], kind=trace.SpanKind.CLIENT,
        attributes={"db.system.name": "postgresql", "db.query.text": sql, "db.namespace": db.schema or ""})


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
