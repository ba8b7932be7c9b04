"""Every target's migrations, applied from nothing, build exactly the tables its models declare."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from roomee import targets
from roomee.kit import migrations
from roomee.kit.db import Database

SERVED = [spec for spec in targets.TARGETS.values() if spec.runner is None]


@pytest.mark.parametrize("spec", SERVED, ids=[spec.name for spec in SERVED])
async def test_migrations_at_head_match_the_models(settings, spec):
    db = Database(spec.name, settings)
    try:
        await migrations.upgrade(spec.package, db)

        def diff(sync_connection):
            # Alembic's own version table is not in the models.
            opts = {"compare_type": True, "include_name": lambda name, kind, _parent: name != "alembic_version"}
            return compare_metadata(MigrationContext.configure(sync_connection, opts=opts), spec.metadata)

        async with db.engine.connect() as conn:
            differences = await conn.run_sync(diff)
        assert differences == [], f"{spec.name}: models and migrations differ: {differences}"
    finally:
        if db.schema:
            async with db.engine.begin() as conn:
                await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE')
        await db.dispose()
