"""The base of the services' repositories: the SQL that differs between PostgreSQL and SQLite
(upserts, set membership, bulk loading), written once."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


class TextArray(postgresql.ARRAY):
    """``text[]`` handed to asyncpg as is: SQLAlchemy's per-item bind processing (several Python
    ``isinstance`` calls per element) would dominate a large fan-out."""

    cache_ok = True

    def __init__(self) -> None:
        super().__init__(sa.String)

    def bind_processor(self, dialect):
        return None


class Repository:
    """A repository on one session; knows whether it speaks to PostgreSQL or SQLite."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.is_postgres = session.get_bind().dialect.name == "postgresql"

    def _insert(self, table: sa.Table):
        """An INSERT with the dialect's ``on_conflict_do_nothing``/``on_conflict_do_update``."""
        return (postgresql.insert if self.is_postgres else sqlite.insert)(table)

    async def _one(self, query, values: Mapping[str, Any] | None = None) -> dict | None:
        """The first row of ``query`` as a dict; ``values`` bind the parameters of a statement built once
        (what a hot read compiles once, see ``roomee.kit.hot``)."""
        found = (await self.session.execute(query, values)).mappings().first()
        return dict(found) if found else None

    def _one_of(self, column: sa.ColumnElement, ids: Iterable[str]) -> sa.ColumnElement[bool]:
        """``column IN ids`` with a single bind parameter, whatever the number of ids (an array on
        PostgreSQL, a JSON text on SQLite): one cached statement, never a parameter limit."""
        values = list(ids)
        if self.is_postgres:
            return column == sa.any_(sa.bindparam(None, values, type_=TextArray()))
        each = sa.func.json_each(sa.bindparam(None, json.dumps(values), type_=sa.Text)).table_valued("value")
        return column.in_(sa.select(each.c.value))

    def _text_columns(self, rows: Sequence[Sequence[str | None]], width: int) -> list[sa.ColumnElement]:
        """The columns of text tuples as a row source bound as ONE parameter per column (arrays on
        PostgreSQL) or one in all (JSON on SQLite): the statement is the same whatever the count
        of rows, so it is compiled and prepared once."""
        names = [f"c{i}" for i in range(width)]
        if self.is_postgres:
            source = sa.func.unnest(
                *(sa.bindparam(None, [r[i] for r in rows], type_=TextArray()) for i in range(width))
            ).table_valued(*names).render_derived()
            return [source.c[name] for name in names]
        source = sa.func.json_each(sa.bindparam(None, json.dumps(rows), type_=sa.Text)).table_valued("value")
        return [sa.func.json_extract(source.c.value, f"$[{i}]").label(names[i]) for i in range(width)]

    def _unnest(self, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], sa.Select]:
        """PostgreSQL only: ``rows`` (dicts with the same keys) as ``SELECT ... FROM unnest(arrays)``,
        one array parameter per column, for ``insert(table).from_select``. Unlike executemany
        parameters (which SQLAlchemy sends as a VALUES list as long as the batch), the SQL does not
        depend on the number of rows: one prepared statement serves every batch."""
        columns = list(rows[0])
        names = [f"c{i}" for i in range(len(columns))]
        arrays, casts = [], []
        for name in columns:
            column_type = table.c[name].type
            values = [row[name] for row in rows]
            if isinstance(column_type, sa.JSON):  # sent as text, cast by the server
                # None is JSON null unless the column says SQL NULL (SQLAlchemy's own rule).
                null = column_type.none_as_null
                arrays.append(sa.bindparam(None, [None if null and v is None else json.dumps(v) for v in values],
                                           type_=TextArray()))
                casts.append(column_type)
            elif isinstance(column_type, sa.String):
                arrays.append(sa.bindparam(None, values, type_=TextArray()))
                casts.append(None)
            else:
                arrays.append(sa.bindparam(None, values, type_=postgresql.ARRAY(column_type)))
                casts.append(None)
        source = sa.func.unnest(*arrays).table_valued(*names).render_derived()
        selected = [source.c[n] if cast is None else sa.cast(source.c[n], cast) for n, cast in zip(names, casts)]
        return columns, sa.select(*selected)

    async def _copy(self, table: sa.Table, columns: Sequence[str], records: Sequence[tuple[Any, ...]]) -> None:
        """PostgreSQL only: ``COPY table (columns) FROM STDIN`` in the session's transaction (the
        binary protocol: no SQL to parse, no per-row parameters). The records hold values asyncpg
        encodes natively (str, datetime, ...), in ``columns`` order."""
        connection = await self.session.connection()
        raw = await connection.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(table.name, records=records, columns=list(columns))
