"""Fixtures for the events tests: databases with the kit's event tables and started brokers,
on the backend ``ROOMEE_TEST_BACKEND`` selects (see tests/fixtures/platform.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import MetaData

from roomee.kit import migrations
from roomee.kit.db import Database
from roomee.kit.events import Broker, Delivery, add_event_tables, broker_from_settings
from roomee.kit.settings import Settings
from tests.fixtures.platform import AMQP_URL, BACKEND, PG_URL, make_settings


@pytest.fixture(scope="session")
async def events_backend_available() -> str:
    """On 'real', PostgreSQL and RabbitMQ must answer: the run fails (never skips) otherwise."""
    if BACKEND == "real":
        import aio_pika
        import asyncpg

        try:
            conn = await asyncpg.connect(PG_URL, timeout=5)
            await conn.close()
        except Exception as exc:
            pytest.fail(f"ROOMEE_TEST_BACKEND=real but PostgreSQL at {PG_URL} is unreachable: {exc}")
        try:
            connection = await aio_pika.connect(AMQP_URL, timeout=5)
            await connection.close()
        except Exception as exc:
            pytest.fail(f"ROOMEE_TEST_BACKEND=real but RabbitMQ at {AMQP_URL} is unreachable: {exc}")
    return BACKEND


@pytest.fixture
def make_events_settings(tmp_path, events_backend_available) -> Callable[..., Settings]:
    """Isolated settings (own data dir; own schemas and exchange on 'real') with overrides."""

    def factory(**overrides) -> Settings:
        return make_settings(tmp_path / "data", **overrides)

    return factory


@pytest.fixture
def events_settings(make_events_settings) -> Settings:
    return make_events_settings()


@pytest.fixture
def queue_name(events_settings) -> Callable[[str], str]:
    """Unique queue names, under the run's prefix so the session cleanup finds leftovers."""

    def factory(label: str = "q") -> str:
        return f"{events_settings.queue_prefix}events-{label}-{uuid.uuid4().hex[:8]}"

    return factory


@pytest.fixture
async def make_db(events_settings):
    """``await make_db("service")``: a Database with the outbox and inbox tables created."""
    databases: list[Database] = []

    async def factory(service: str = "svc", settings: Settings | None = None) -> Database:
        db = Database(service, settings or events_settings)
        await migrations.ensure_schema(db)
        metadata = MetaData()
        add_event_tables(metadata)
        async with db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        databases.append(db)
        return db

    yield factory
    for db in databases:
        await db.dispose()


@pytest.fixture
async def make_broker(events_settings):
    """``await make_broker()``: a started broker; its queues (and exchange) are deleted afterwards."""
    brokers: list[Broker] = []

    async def factory(settings: Settings | None = None) -> Broker:
        broker = broker_from_settings(settings or events_settings)
        await broker.start()
        brokers.append(broker)
        return broker

    yield factory
    for broker in brokers:
        await broker.close()
    if BACKEND == "real":
        from roomee.kit.events.amqp import AmqpBroker

        for broker in brokers:
            # Delete with a fresh connection: the test may have closed (or broken) its own.
            cleaner = AmqpBroker(broker.url, broker.exchange, retry_delays_ms=[int(d * 1000) for d in broker.retry_delays])
            await cleaner.start()
            try:
                for name in broker.declared_queues:
                    await cleaner.delete_queue(name)
                await cleaner.delete_exchange()
            finally:
                await cleaner.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


class Recorder:
    """An EventConsumer handler that records what it handled (and can be told to fail)."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, Delivery, float]] = []
        self.handled: list[dict] = []
        self.fail = False

    async def __call__(self, session, envelope: dict, delivery: Delivery) -> None:
        self.calls.append((envelope, delivery, time.monotonic()))
        if self.fail:
            raise RuntimeError("handler told to fail")
        self.handled.append(envelope)

    @property
    def handled_ids(self) -> list[str]:
        return [e["id"] for e in self.handled]
