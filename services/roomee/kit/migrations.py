"""Alembic migrations, one history per service, run programmatically (``roomee migrate``)."""

from __future__ import annotations

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import create_async_engine

from roomee.kit.db import Database


def alembic_config(package: str, db: Database | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", f"{package}:migrations")
    config.set_main_option("version_table", "alembic_version")
    if db is not None:
        config.attributes["schema"] = db.schema
    return config


async def ensure_schema(db: Database) -> None:
    """Create the service's PostgreSQL schema with a connection that does not depend on it."""
    if not db.schema:
        return
    engine = create_async_engine(db.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"'))
    finally:
        await engine.dispose()


async def upgrade(package: str, db: Database, revision: str = "head") -> None:
    await ensure_schema(db)
    config = alembic_config(package, db)

    def run(sync_connection) -> None:
        config.attributes["connection"] = sync_connection
        command.upgrade(config, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def current(package: str, db: Database) -> str | None:
    def read(sync_connection) -> str | None:
        from alembic.runtime.migration import MigrationContext

        opts = {"version_table_schema": db.schema} if db.schema else {}
        return MigrationContext.configure(sync_connection, opts=opts).get_current_revision()

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


async def pending(package: str, db: Database) -> str | None:
    """What is left to apply (``"at X, head Y"``), or None when the database is at head."""
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config(package)).get_heads())
    at = await current(package, db)
    if at in heads:
        return None
    return f"at {at or 'nothing'}, head {', '.join(sorted(heads))}"


def revision(package: str, db: Database, message: str) -> None:
    """Autogenerate a revision by comparing the models with a database migrated to head."""
    import asyncio

    async def run() -> None:
        await upgrade(package, db)
        config = alembic_config(package, db)

        def generate(sync_connection) -> None:
            config.attributes["connection"] = sync_connection
            command.revision(config, message=message, autogenerate=True)

        async with db.engine.begin() as conn:
            await conn.run_sync(generate)

    asyncio.run(run())


def run_env(metadata: MetaData) -> None:
    """Body of every service's ``migrations/env.py``."""
    connection = context.config.attributes["connection"]
    schema = context.config.attributes.get("schema")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def rename_column(table: str, old: str, new: str, *, indexes: tuple[tuple[str, str, list[str], dict], ...] = ()) -> None:
    """Rename a column in a migration on both backends, renaming the indexes that name it.

    ``indexes``: ``(old index, new index, new columns, create_index keywords)``. SQLite has no index
    rename, so each index is dropped before and created again after.
    """
    from alembic import op

    for old_index, _new_index, _columns, _options in indexes:
        op.drop_index(old_index, table_name=table)
    with op.batch_alter_table(table) as batch:
        batch.alter_column(old, new_column_name=new)
    for _old_index, new_index, columns, options in indexes:
        op.create_index(new_index, table, columns, **options)
